"""Image commands: images, tag, rmi, inspect, history, save, load, import."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from lamina.cli.format import ago, human_size, table
from lamina.cli.main import store_of
from lamina.errors import StoreError


def _image_size(store: Any, stored: Any) -> int:
    total = 0
    for layer in stored.image.layers:
        size = store.db.diff_size(str(layer.digest))
        total += size if size is not None else layer.size
    return total


@click.command("images")
@click.argument("repository", required=False)
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("--digests", is_flag=True, help="Show digests.")
@click.pass_context
def images(ctx: click.Context, repository: str | None, quiet: bool, no_trunc: bool, digests: bool) -> None:
    """List images."""
    from lamina.oci.digest import Digest
    from lamina.oci.reference import Reference

    store = store_of(ctx)
    tagged: dict[str, list[Reference]] = {}
    for name, manifest in store.db.tags():
        tagged.setdefault(manifest, []).append(Reference.parse(name))
    header = ["REPOSITORY", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "CREATED", "SIZE"]
    rows, seen = [header], set()
    for manifest, _config, _mt, _created in sorted(store.db.images(), key=lambda r: -r[3]):
        stored = store.get(Digest.parse(manifest))
        refs: list[Reference | None] = list(tagged.get(manifest, [])) or [None]
        for ref in refs:
            if repository and (ref is None or repository not in (ref.familiar_repository, ref.repository)):
                continue
            image_id = str(stored.id) if no_trunc else stored.id.short
            if quiet:
                if image_id not in seen:
                    click.echo(image_id)
                    seen.add(image_id)
                continue
            repo, tag = (ref.familiar_repository, ref.tag or "<none>") if ref else ("<none>", "<none>")
            row = [repo, tag, *([str(stored.manifest_digest)] if digests else []), image_id,
                   ago(stored.image.config.created), human_size(_image_size(store, stored))]
            rows.append(row)
    if not quiet:
        click.echo(table(rows))


@click.command("tag")
@click.argument("source")
@click.argument("target")
@click.pass_context
def tag(ctx: click.Context, source: str, target: str) -> None:
    """Create a tag TARGET that refers to SOURCE."""
    from lamina import api

    api.tag(store_of(ctx), source, target)


@click.command("rmi")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--force", is_flag=True, help="Remove the image even if it has several tags.")
@click.pass_context
def rmi(ctx: click.Context, names: tuple[str, ...], force: bool) -> None:
    """Remove one or more images."""
    store = store_of(ctx)
    for name in names:
        stored = store.resolve(name)
        tags = store.tags_of(stored.manifest_digest)
        named = [ref for ref in tags if name in (str(ref), ref.familiar, ref.familiar_repository)]
        if not named:  # removing by ID drops every tag, which docker makes you force
            if len(tags) > 1 and not force:
                raise StoreError(f"conflict: unable to delete {name} (must be forced) - "
                                 "image is referenced in multiple repositories")
            named = tags
        for ref in named:
            store.untag(ref)
            click.echo(f"Untagged: {ref.familiar}")
        if not store.tags_of(stored.manifest_digest):
            store.db.remove_image(str(stored.manifest_digest))
            click.echo(f"Deleted: {stored.id}")


def inspect_json(store: Any, stored: Any) -> dict[str, Any]:
    cfg = stored.image.config
    return {
        "Id": str(stored.id),
        "RepoTags": [r.familiar for r in store.tags_of(stored.manifest_digest)],
        "RepoDigests": [],
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


@click.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", help="Print only this top-level field (e.g. {{.Id}} or Id).")
@click.pass_context
def inspect(ctx: click.Context, names: tuple[str, ...], fmt: str | None) -> None:
    """Show low-level information on images (docker-compatible JSON)."""
    store = store_of(ctx)
    docs = [inspect_json(store, store.resolve(n)) for n in names]
    if fmt:
        field = fmt.strip("{} ").lstrip(".")
        for doc in docs:
            value: Any = doc
            for part in field.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            click.echo(value if isinstance(value, str) else json.dumps(value))
        return
    click.echo(json.dumps(docs, indent=4))


@click.command("history")
@click.argument("name")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-q", "--quiet", is_flag=True, help="Only show image IDs.")
@click.option("-H", "--human/--no-human", default=True, help="Print sizes and dates in human readable format.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def history(ctx: click.Context, name: str, no_trunc: bool, quiet: bool, human: bool, fmt: str) -> None:
    """Show the history of an image: one row per instruction, newest first."""
    from lamina.history import image_history

    store = store_of(ctx)
    stored = store.resolve(name)
    rows = image_history(store, stored)
    if fmt == "json":
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
        return
    if quiet:
        for r in rows:
            click.echo(r.image if no_trunc else r.short_image)
        return
    out = [["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]]
    for r in rows:
        created_by = r.created_by.replace("\n", " ")
        if not no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        size = human_size(r.size) if human else str(r.size)
        out.append([r.image if no_trunc else r.short_image, ago(r.created) if human else (r.created or ""),
                    created_by, size, r.comment])
    click.echo(table(out))


@click.command("save")
@click.argument("names", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write to a file, instead of STDOUT.")
@click.option("--format", "fmt", type=click.Choice(["docker-archive", "oci-archive"]), default="docker-archive")
@click.pass_context
def save(ctx: click.Context, names: tuple[str, ...], output: Path | None, fmt: str) -> None:
    """Save one or more images to a tar archive."""
    from lamina import api

    if output is None:
        if sys.stdout.isatty():
            raise click.UsageError("cowardly refusing to write an archive to a terminal; use -o FILE")
        api.save(store_of(ctx), names, sys.stdout.buffer, format=fmt)
        return
    tmp = output.with_name(f".{output.name}.partial")
    try:
        with open(tmp, "wb") as f:
            api.save(store_of(ctx), names, f, format=fmt)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)


@click.command("load")
@click.option("-i", "--input", "source", type=click.Path(exists=True, path_type=Path),
              help="Read from a tar archive file, instead of STDIN.")
@click.option("-q", "--quiet", is_flag=True)
@click.pass_context
def load(ctx: click.Context, source: Path | None, quiet: bool) -> None:
    """Load images from a docker-archive or oci-archive tarball."""
    from lamina import api

    results = api.load(store_of(ctx), source if source is not None else sys.stdin.buffer)
    for stored, refs in results:
        if quiet:
            continue
        if refs:
            for ref in refs:
                click.echo(f"Loaded image: {ref.familiar}")
        else:
            click.echo(f"Loaded image ID: {stored.id}")


@click.command("import")
@click.argument("tarball", type=click.Path(path_type=Path))
@click.argument("name", required=False)
@click.option("-c", "--change", "changes", multiple=True, help="Apply a Dockerfile instruction (ENV, CMD).")
@click.option("-m", "--message", default="", help="Commit message for the imported image.")
@click.pass_context
def import_(ctx: click.Context, tarball: Path, name: str | None, changes: tuple[str, ...], message: str) -> None:
    """Import a root filesystem tarball as a one-layer image."""
    from lamina.oci.reference import Reference
    from lamina.transport.importer import import_rootfs

    store = store_of(ctx)
    ref = Reference.parse(name) if name else None
    if str(tarball) == "-":
        stored = import_rootfs(store, sys.stdin.buffer, ref, changes=changes, message=message)
    else:
        stored = import_rootfs(store, tarball, ref, changes=changes, message=message)
    click.echo(str(stored.id))


COMMANDS = [images, tag, rmi, inspect, history, save, load, import_]
