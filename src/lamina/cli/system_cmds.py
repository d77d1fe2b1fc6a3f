"""Housekeeping: ``prune``, ``builder prune``, ``system df|check|prune`` (docker's verbs and output).

These commands open the store without a lease of their own: pruning sweeps
only when it can hold the store exclusively (:mod:`lamina.store.lease`).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from lamina.cli.args import Context, command, echo, group, option, pass_context
from lamina.cli.format import human_duration, human_size, table
from lamina.errors import StoreError


def _store(ctx: Context) -> Any:
    from lamina.api import open_store

    obj = ctx.find_root().obj
    if "store" not in obj:
        obj["store"] = open_store(obj["root"])
    return obj["store"]


_ASK = "Are you sure you want to continue? [y/N] "


def _confirm(prompt: str, force: bool) -> bool:
    """docker's prompt: without -f, ask on stdin (TTY or not); only y/yes goes ahead."""
    if force:
        return True
    echo(prompt, nl=False)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _prune_options(fn: Any) -> Any:
    fn = option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")(fn)
    fn = option("--filter", "filters", multiple=True, metavar="until=DURATION",
                help="Only what is older than this (e.g. until=24h).")(fn)
    return fn


def _print_result(result: Any) -> None:
    if result.images:
        echo("Deleted Images:")
        for image_id in result.images:
            echo(f"deleted: {image_id}")
        echo()
    if result.records or result.sweep.cache_mounts or result.logs or result.sweep.debug:
        echo("Deleted build cache objects:")
        for key in result.records:
            echo(key.removeprefix("sha256:")[:25])
        for name in result.sweep.cache_mounts:
            echo(name)
        for name in result.logs:
            echo(f"logs/{name}")
        for name in result.sweep.debug:
            echo(f"debug/{name}")
        echo()
    echo(f"Total reclaimed space: {human_size(result.reclaimed)}")
    if not result.sweep.ran:
        who = ", ".join(lease.describe() for lease in result.sweep.busy) or "another housekeeping command"
        echo(f"Note: unreferenced blobs and snapshots were kept: the store is in use by {who}; "
             "prune again when it is done.", err=True)


def _run_prune(ctx: Context, *, images: bool, cache: str, filters: tuple[str, ...]) -> None:
    from lamina.store.gc import parse_filters, prune

    now = time.time()
    until = parse_filters(filters, now)
    _print_result(prune(_store(ctx), images=images, cache=cache, until=until, now=now))  # type: ignore[arg-type]


@command("prune")
@option("-a", "--all", "all_", is_flag=True, help="Also remove all build cache.")
@_prune_options
@pass_context
def prune(ctx: Context, all_: bool, filters: tuple[str, ...], force: bool) -> None:
    """Remove untagged images (and with -a the build cache), then unreferenced blobs and snapshots.

    Tagged images are never removed (remove them with rmi); a running build,
    pull or push keeps everything it uses.
    """
    warning = ("WARNING! This will remove all dangling images and all build cache." if all_
               else "WARNING! This will remove all dangling images.")
    if _confirm(f"{warning}\n{_ASK}", force):
        _run_prune(ctx, images=True, cache="all" if all_ else "none", filters=filters)


@group("builder")
def builder() -> None:
    """Manage the build cache."""


@builder.command("prune")
@option("-a", "--all", "all_", is_flag=True, help="Remove all build cache, not just dangling records.")
@_prune_options
@pass_context
def builder_prune(ctx: Context, all_: bool, filters: tuple[str, ...], force: bool) -> None:
    """Remove build cache: records whose layer no image has (with -a, every record)."""
    warning = "WARNING! This will remove all build cache." if all_ else "WARNING! This will remove all dangling build cache."
    if _confirm(f"{warning} {_ASK}", force):
        _run_prune(ctx, images=False, cache="all" if all_ else "dangling", filters=filters)


@group("system")
def system() -> None:
    """Manage the store: disk usage, integrity, pruning."""


@system.command("prune")
@option("-a", "--all", "all_", is_flag=True, help="Also remove all build cache.")
@_prune_options
@pass_context
def system_prune(ctx: Context, all_: bool, filters: tuple[str, ...], force: bool) -> None:
    """Remove untagged images and dangling build cache (with -a: all build cache), then garbage."""
    warning = ("WARNING! This will remove:\n  - all dangling images\n  - "
               + ("all build cache" if all_ else "unused build cache"))
    if _confirm(f"{warning}\n\n{_ASK}", force):
        _run_prune(ctx, images=True, cache="all" if all_ else "dangling", filters=filters)


@system.command("df")
@option("-v", "--verbose", is_flag=True, help="Show detailed information on space usage.")
@pass_context
def df(ctx: Context, verbose: bool) -> None:
    """Show the store's disk usage."""
    from lamina.store.gc import usage
    from lamina.store.lease import Lease

    store = _store(ctx)
    with Lease(store.root, "system df", clean=False):
        found = usage(store)
        rows = [["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]]
        for r in found.rows:
            share = f" ({r.reclaimable * 100 // r.size}%)" if r.size else ""
            rows.append([r.kind, str(r.total), str(r.active), human_size(r.size), human_size(r.reclaimable) + share])
        echo(table(rows))
        if verbose:
            _df_verbose(store, found)


def _df_verbose(store: Any, found: Any) -> None:
    from lamina.store.gc import closure, record_layer

    now = time.time()
    tags: dict[str, list[str]] = {}
    for name, manifest in store.db.tags():
        tags.setdefault(manifest, []).append(name)
    blobs_of = {m: closure(store, m)[0] for m, _c, _t, _created in store.db.images()}
    users: dict[str, int] = {}
    for blobs in blobs_of.values():
        for digest in blobs:
            users[digest] = users.get(digest, 0) + 1
    rows = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE"]]
    for manifest, config, _mt, created in sorted(store.db.images(), key=lambda r: -r[3]):
        blobs = blobs_of[manifest]
        size = sum(found.blob_sizes.get(d, 0) for d in blobs)
        shared = sum(found.blob_sizes.get(d, 0) for d in blobs if users[d] > 1)
        for name in tags.get(manifest) or ["<none>:<none>"]:
            repo, _, tag = _split_tag(name)
            rows.append([repo, tag, config.removeprefix("sha256:")[:12], _ago(now, created), human_size(size),
                         human_size(shared), human_size(size - shared)])
    echo("\nImages space usage:\n")
    echo(table(rows))
    entries = store.db.cache_entries()
    cache_rows = [["CACHE ID", "CACHE TYPE", "SIZE", "CREATED", "LAST USED", "SHARED"]]
    total = 0
    for key, record, created, used in sorted(entries, key=lambda e: -e[3]):
        layer = record_layer(record)
        size = found.blob_sizes.get(layer, 0) if layer else 0
        total += size
        cache_rows.append([key.removeprefix("sha256:")[:12], "regular" if layer else "internal", human_size(size),
                           _ago(now, created), _ago(now, used), str(bool(layer and layer in found.reach.images)).lower()])
    echo(f"\nBuild cache usage: {human_size(total)}\n")
    echo(table(cache_rows))
    snap_rows = [["DIFF ID", "SIZE", "ACTIVE"]]
    for diff_id, size in sorted(found.snapshot_sizes.items(), key=lambda kv: -kv[1]):
        snap_rows.append([diff_id.removeprefix("sha256:")[:12], human_size(size),
                          str(diff_id in found.reach.diff_ids).lower()])
    echo("\nSnapshots space usage:\n")
    echo(table(snap_rows))


def _split_tag(name: str) -> tuple[str, str, str]:
    if name == "<none>:<none>":
        return "<none>", "", "<none>"
    from lamina.oci.reference import Reference

    ref = Reference.parse(name)
    return ref.familiar_repository, "", ref.tag or "<none>"


def _ago(now: float, then: float) -> str:
    return human_duration(max(0.0, now - then)) + " ago"


@system.command("check")
@option("--repair", is_flag=True, help="Remove what is broken: corrupt blobs, broken images, "
        "dangling tags and records, incomplete snapshots, leftovers.")
@pass_context
def check(ctx: Context, repair: bool) -> None:
    """Verify every blob, image, tag, cache record and snapshot; one line per problem, exit 1 if any."""
    from lamina.store import check as checking
    from lamina.store.lease import Lease, exclusive, live_leases

    store = _store(ctx)
    if repair:
        with exclusive(store.root) as alone:
            if not alone:
                who = ", ".join(lease.describe() for lease in live_leases(store.root)) or "another housekeeping command"
                raise StoreError(f"cannot repair while the store is in use by {who}; try again when it is done")
            report = checking.check(store)
            _print_report(report)
            done = checking.repair(store, report.problems)
    else:
        with Lease(store.root, "system check", clean=False) as lease:
            others = live_leases(store.root, exclude=lease.name)
            report = checking.check(store, with_leftovers=not others)
            if others:
                echo(f"Note: temp files were not checked: the store is in use by "
                     f"{', '.join(o.describe() for o in others)}.", err=True)
            _print_report(report)
            done = []
    for line in done:
        echo(f"repaired: {line}")
    unrepaired = sum(1 for p in report.problems if p.kind == "database") if repair else len(report.problems)
    if report.problems and repair:
        echo(f"{len(report.problems) - unrepaired} of {len(report.problems)} problems repaired")
    if unrepaired:
        ctx.exit(1)


def _print_report(report: Any) -> None:
    for problem in report.problems:
        echo(str(problem))
    found = f"{len(report.problems)} problem{'s' if len(report.problems) != 1 else ''}" if report.problems else "no problems"
    echo(f"Checked {report.blobs} blobs ({human_size(report.blob_bytes)}), {report.images} images, "
         f"{report.tags} tags, {report.records} cache records, {report.snapshots} snapshots: {found}")


COMMANDS = [prune, builder, system]
