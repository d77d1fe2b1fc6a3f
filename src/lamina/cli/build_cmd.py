"""``lamina build``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lamina.cli.args import BadParameter, Context, argument, command, echo, option, pass_context, path
from lamina.cli.main import store_of
from lamina.errors import LaminaError

if TYPE_CHECKING:
    from lamina.transport.cacheio import CacheSpec


def _pairs(values: tuple[str, ...], *, from_env: bool = False) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            if not from_env:
                raise BadParameter(f"expected KEY=VALUE, got {item!r}")
            if key not in os.environ:
                continue  # docker: --build-arg NAME without a value takes it from the env, if set
            value = os.environ[key]
        out[key] = value
    return out


def _cache_specs(values: tuple[str, ...], *, export: bool) -> tuple[CacheSpec, ...]:
    if not values:
        return ()  # the cache module is not imported for a plain build
    from lamina.transport.cacheio import parse_cache_spec

    return tuple(parse_cache_spec(v, export=export) for v in values)


def _secrets(values: tuple[str, ...]) -> dict[str, Any]:
    if not values:
        return {}
    from lamina.build.mounts import parse_secret_flag

    return dict(parse_secret_flag(v) for v in values)


@command("build")
@argument("context", type=path(exists=True, file_okay=False))
@option("-t", "--tag", "tags", multiple=True, help="Name and optionally a tag (name:tag).")
@option("-f", "--file", "dockerfile", help="Name of the Dockerfile (default: CONTEXT/Dockerfile); - for stdin.")
@option("--build-arg", "build_args", multiple=True, help="Set a build-time variable.")
@option("--target", help="Set the target build stage.")
@option("--no-cache", is_flag=True, help="Do not use cache when building the image.")
@option("--no-cache-filter", "no_cache_filter", multiple=True,
        help="Do not use cache for the named stage (repeatable; also STAGE1,STAGE2).")
@option("--pull", is_flag=True, help="Always attempt to pull a newer version of the base image.")
@option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@option("--progress", default="auto", envvar="LAMINA_PROGRESS", show_default=True,
        choices=["auto", "tty", "plain", "json", "quiet"],
        help="Output: live view on a terminal (tty), lines (plain), one JSON object per event (json).")
@option("--iidfile", type=Path, help="Write the image ID to the file.")
@option("--label", "labels", multiple=True, help="Set metadata for an image.")
@option("--network", default="host", choices=["host", "none", "default"],
        help="Networking mode for RUN.")
@option("--platform", help="Target platform (os/arch[/variant]).")
@option("--timestamp", type=int, help="Clamp times to this epoch (also SOURCE_DATE_EPOCH).")
@option("--snapshotter", default="auto", choices=["auto", "overlayfs", "native"])
@option("--runtime", default="auto", show_default=True,
        help="OCI runtime: auto (crun when installed, else runc), runc, crun, or a binary's path.")
@option("--oci", is_flag=True, help="Write OCI media types instead of Docker's.")
@option("--secret", "secrets", multiple=True,
        help="Secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR (repeatable).")
@option("--cache-from", "cache_from", multiple=True,
        help="Import build cache: type=registry,ref=NAME or type=local,src=DIR (repeatable).")
@option("--cache-to", "cache_to", multiple=True,
        help="Export build cache: type=registry,ref=NAME or type=local,dest=DIR [,mode=min|max].")
@option("--explain", is_flag=True, help="Say why each step missed the cache (one line per miss).")
@option("--debug", "debug_shell", is_flag=True,
        help="When a RUN fails and stdin is a terminal, open a shell in its container.")
@pass_context
def build(ctx: Context, context: Path, tags: tuple[str, ...], dockerfile: str | None,
          build_args: tuple[str, ...], target: str | None, no_cache: bool, no_cache_filter: tuple[str, ...],
          pull: bool, quiet: bool,
          iidfile: Path | None, labels: tuple[str, ...], network: str, platform: str | None,
          timestamp: int | None, snapshotter: str, runtime: str, oci: bool, cache_from: tuple[str, ...],
          cache_to: tuple[str, ...], secrets: tuple[str, ...], explain: bool = False,
          debug_shell: bool = False, progress: str = "auto") -> None:
    """Build an image from a Dockerfile."""
    from lamina import api
    from lamina.build.options import BuildOptions
    from lamina.cli.render import ClassicRenderer

    if timestamp is None and os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        timestamp = int(os.environ["SOURCE_DATE_EPOCH"])
    text = sys.stdin.read() if dockerfile == "-" else None
    path = None if dockerfile in (None, "-") else Path(dockerfile)
    if path is not None and not path.is_absolute() and not path.exists() and (context / path).exists():
        path = context / path
    options = BuildOptions(
        context=context, dockerfile=path, dockerfile_text=text, tags=tags,
        build_args=_pairs(build_args, from_env=True), target=target, no_cache=no_cache,
        no_cache_filter=tuple(n.strip().lower() for item in no_cache_filter for n in item.split(",") if n.strip()),
        pull=pull,
        labels=_pairs(labels), network="host" if network == "default" else network, platform=platform,
        timestamp=timestamp, oci=oci, cache_from=_cache_specs(cache_from, export=False),
        cache_to=_cache_specs(cache_to, export=True), secrets=_secrets(secrets),
    )
    quiet = quiet or progress == "quiet"
    store = None
    try:
        from lamina.cli.progress import build_progress  # --progress: a live view, lines or JSON

        with build_progress(progress, ClassicRenderer(quiet=quiet, explain=explain)) as listener:
            # unchanged inputs: the memo answers without opening the store (build/memo.py)
            image_id = api.build_memoized(ctx.find_root().obj["root"], options, listener=listener)
            if image_id is None:
                store = store_of(ctx)
                image_id = str(api.build(store, options, listener=listener, snapshotter=snapshotter,
                                         runtime=runtime).id)
    except LaminaError as exc:
        from lamina.cli.debug_cmds import debug_after_failure

        if store is None or not (debug_shell and sys.stdin.isatty()) or not debug_after_failure(
                store, exc, snapshotter, runtime):
            raise
        ctx.exit(1)
    if quiet:
        echo(image_id)
    if iidfile:
        iidfile.write_text(image_id)


COMMANDS = [build]
