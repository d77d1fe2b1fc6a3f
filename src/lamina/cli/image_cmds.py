"""Image commands: images, tag, rmi, inspect, history, save, load, import."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from lamina.cli.args import (
    BadParameter,
    Context,
    UsageError,
    argument,
    command,
    echo,
    option,
    pass_context,
    path,
)
from lamina.cli.format import ago, go_json, header, human_size, render, split_table, table
from lamina.cli.main import store_of
from lamina.errors import ImageNotFound, LaminaError, StoreError


def _image_size(store: Any, stored: Any) -> int:
    """docker's image size: its layers' uncompressed sizes (see Store.layer_size)."""
    return sum(store.layer_size(layer) for layer in stored.image.layers)


IMAGE_TITLES = {"Containers": "CONTAINERS", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED",
                "Digest": "DIGEST", "ID": "IMAGE ID", "Repository": "REPOSITORY", "SharedSize": "SHARED SIZE",
                "Size": "SIZE", "Tag": "TAG", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE"}


@command("images")
@argument("repository", required=False)
@option("-a", "--all", "all_", is_flag=True,
        help="Show all images (lamina keeps no intermediate images, so the same list).")
@option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@option("--no-trunc", is_flag=True, help="Don't truncate output.")
@option("--digests", is_flag=True, help="Show digests.")
@option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
        help="dangling=true|false, reference=PATTERN, label=KEY[=VALUE], before=IMAGE, since=IMAGE.")
@option("--format", "fmt", help="table, json, or a Go template: 'table {{.Repository}}:{{.Tag}}\\t{{.ID}}'.")
@pass_context
def images(ctx: Context, repository: str | None, all_: bool, quiet: bool, no_trunc: bool, digests: bool,
           filters: tuple[str, ...], fmt: str | None) -> None:
    """List images (REPOSITORY[:TAG] filters like --filter reference=)."""
    from lamina.cli.imagelist import image_rows, parse_filters

    store = store_of(ctx)
    chosen = parse_filters(filters + ((f"reference={repository}",) if repository else ()))
    rows = image_rows(store, chosen, no_trunc=no_trunc)
    if quiet:
        for image_id in dict.fromkeys(row["ID"] for row in rows):
            echo(image_id)
        return
    if fmt and fmt not in ("table", "json"):
        _print_template(fmt, rows, IMAGE_TITLES)
        return
    if fmt == "json":
        for row in rows:
            echo(go_json(row))
        return
    columns = ["REPOSITORY", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "CREATED", "SIZE"]
    table_rows = [columns] + [[row["Repository"], row["Tag"], *([row["Digest"]] if digests else []), row["ID"],
                              row["CreatedSince"], row["Size"]] for row in rows]
    echo(table(table_rows))


def _print_template(fmt: str, rows: list[dict[str, Any]], titles: dict[str, str]) -> None:
    """Rows through a --format template; ``table …`` aligns the cells under a header, as docker does."""
    is_table, template = split_table(fmt)
    lines = [render(template, row) for row in rows]
    if not is_table:
        for line in lines:
            echo(line)
        return
    cells = [line.split("\t") for line in [header(template, titles), *lines]]
    width = max(len(c) for c in cells)
    echo(table([c + [""] * (width - len(c)) for c in cells]))


@command("tag")
@argument("source")
@argument("target")
@pass_context
def tag(ctx: Context, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    from lamina import api

    api.tag(store_of(ctx), source, target)


@command("rmi")
@argument("names", nargs=-1, required=True)
@option("-f", "--force", is_flag=True, help="Remove the image even if it has several tags.")
@pass_context
def rmi(ctx: Context, names: tuple[str, ...], force: bool) -> None:
    """Remove one or more images.

    A tag is removed; the image goes with its last tag. By ID, an image with
    several tags loses them all only with -f (docker's rule). A name that
    fails is reported and the others are still removed; the exit code is 1.
    """
    store = store_of(ctx)
    failed = False
    for name in names:
        try:
            _remove(store, name, force)
        except LaminaError as exc:
            echo(f"Error: {exc}", err=True)
            failed = True
    if failed:
        ctx.exit(1)


def _remove(store: Any, name: str, force: bool) -> None:
    stored = store.resolve(name)
    tags = store.tags_of(stored.manifest_digest)
    named = [ref for ref in tags if name in (str(ref), ref.familiar, ref.familiar_repository)]
    if not named:  # removing by ID drops every tag, which docker makes you force
        if len(tags) > 1 and not force:
            raise StoreError(f"conflict: unable to delete {stored.id.short} (must be forced) - "
                             "image is referenced in multiple repositories")
        named = tags
    for ref in named:
        store.untag(ref)
        echo(f"Untagged: {ref.familiar}")
    if not store.tags_of(stored.manifest_digest):
        store.db.remove_image(str(stored.manifest_digest))
        echo(f"Deleted: {stored.id}")


def inspect_json(store: Any, stored: Any) -> dict[str, Any]:
    from lamina.oci.reference import Reference

    cfg = stored.image.config
    return {
        "Id": str(stored.id),
        "RepoTags": [r.familiar for r in store.tags_of(stored.manifest_digest)],
        "RepoDigests": [f"{Reference.parse(repo).familiar_repository}@{digest}"
                        for repo, digest in store.db.repo_digests(str(stored.id))],
        "Parent": "",
        "Comment": cfg.history[-1].comment if cfg.history else "",
        "Created": cfg.created or "",
        "DockerVersion": "",
        "Author": cfg.author,
        "Config": cfg.config.to_json(),
        "Architecture": cfg.architecture,
        **({"Variant": cfg.variant} if cfg.variant else {}),
        "Os": cfg.os,
        "Size": _image_size(store, stored),
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in cfg.diff_ids]},
        "Metadata": {"LastTagTime": ""},
        "Descriptor": {"mediaType": stored.manifest.media_type, "digest": str(stored.manifest_digest)},
    }


@command("inspect")
@argument("names", nargs=-1, required=True)
@option("-f", "--format", "fmt",
        help="A Go template per image, e.g. '{{.Id}}', '{{.Config.Env}}', '{{json .RootFS}}' (or a bare field: Id).")
@pass_context
def inspect(ctx: Context, names: tuple[str, ...], fmt: str | None) -> None:
    """Show low-level information on images (docker-compatible JSON).

    As docker does, the images found are shown even when some name is not;
    the first missing one is then the error.
    """
    store = store_of(ctx)
    docs, missing = [], []
    for name in names:
        found = store.lookup(name)
        if found is None:
            missing.append(name)
        else:
            docs.append(inspect_json(store, found))
    if fmt:
        if "{{" not in fmt and re.fullmatch(r"\.?[A-Za-z]\w*(\.\w+)*", fmt):
            fmt = "{{." + fmt.lstrip(".") + "}}"  # lamina's older shorthand
        for doc in docs:
            echo(render(split_table(fmt)[1], doc))
    else:
        echo(json.dumps(docs, indent=4))
    if missing:
        raise ImageNotFound(f"no such image: {missing[0]}")


@command("history")
@argument("name")
@option("--no-trunc", is_flag=True, help="Don't truncate output.")
@option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@option("-H", "--human/--no-human", default=True, help="Print sizes and dates in human readable format.")
@option("--format", "fmt", default="table",
        help="table, json, or a template: '{{.ID}} {{.CreatedBy}} {{.Duration}} {{.Cached}}' "
             "('table {{...}}' adds a header).")
@pass_context
def history(ctx: Context, name: str, no_trunc: bool, quiet: bool, human: bool, fmt: str) -> None:
    """Show the history of an image: one row per instruction, newest first.

    DURATION is how long the step ran when it last really ran; CACHED says
    whether the last build of this image took it from the cache.
    """
    from lamina.history import HEADERS, image_history, template_fields

    store = store_of(ctx)
    stored = store.resolve(name)
    rows = image_history(store, stored)
    if fmt == "json":
        echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    if quiet:
        for r in rows:
            echo(r.image if no_trunc else r.short_image)
        return
    fields = [template_fields(r, human=human, no_trunc=no_trunc, since=ago, size=human_size) for r in rows]
    if fmt not in ("table", "") and "{{" in fmt:
        _print_template(fmt, fields, HEADERS)
        return
    if fmt not in ("table", ""):
        raise BadParameter(f"expected table, json or a template, got {fmt!r}", param_hint="--format")
    out = [["IMAGE", "CREATED" if human else "CREATED AT", "CREATED BY", "SIZE", "DURATION", "CACHED", "COMMENT"]]
    for f in fields:
        out.append([f["ID"], f["CreatedSince"], f["CreatedBy"], f["Size"], f["Duration"], f["Cached"], f["Comment"]])
    echo(table(out))


@command("save")
@argument("names", nargs=-1, required=True)
@option("-o", "--output", type=Path, help="Write to a file, instead of STDOUT.")
@option("--format", "fmt", choices=["docker-archive", "oci-archive"], default="docker-archive")
@pass_context
def save(ctx: Context, names: tuple[str, ...], output: Path | None, fmt: str) -> None:
    """Save one or more images to a tar archive."""
    from lamina import api

    if output is None:
        if sys.stdout.isatty():
            raise UsageError("cowardly refusing to write an archive to a terminal; use -o FILE")
        api.save(store_of(ctx), names, sys.stdout.buffer, format=fmt)
        return
    tmp = output.with_name(f".{output.name}.partial")
    try:
        with open(tmp, "wb") as f:
            api.save(store_of(ctx), names, f, format=fmt)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)


@command("load")
@option("-i", "--input", "source", type=path(exists=True),
        help="Read from a tar archive file, instead of STDIN.")
@option("-q", "--quiet", is_flag=True)
@pass_context
def load(ctx: Context, source: Path | None, quiet: bool) -> None:
    """Load images from a docker-archive or oci-archive tarball."""
    from lamina import api

    results = api.load(store_of(ctx), source if source is not None else sys.stdin.buffer)
    for stored, refs in results:
        if quiet:
            continue
        if refs:
            for ref in refs:
                echo(f"Loaded image: {ref.familiar}")
        else:
            echo(f"Loaded image ID: {stored.id}")


@command("import")
@argument("tarball", type=Path)
@argument("name", required=False)
@option("-c", "--change", "changes", multiple=True, help="Apply a Dockerfile instruction (ENV, CMD).")
@option("-m", "--message", default="", help="Commit message for the imported image.")
@pass_context
def import_(ctx: Context, tarball: Path, name: str | None, changes: tuple[str, ...], message: str) -> None:
    """Import a root filesystem tarball as a one-layer image."""
    from lamina.oci.reference import Reference
    from lamina.transport.importer import import_rootfs

    store = store_of(ctx)
    ref = Reference.parse(name) if name else None
    if str(tarball) == "-":
        stored = import_rootfs(store, sys.stdin.buffer, ref, changes=changes, message=message)
    else:
        stored = import_rootfs(store, tarball, ref, changes=changes, message=message)
    echo(str(stored.id))


COMMANDS = [images, tag, rmi, inspect, history, save, load, import_]
