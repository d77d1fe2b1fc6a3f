"""``lamina build``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from lamina.cli.main import store_of


def _pairs(values: tuple[str, ...], *, from_env: bool = False) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            if not from_env:
                raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
            if key not in os.environ:
                continue  # docker: --build-arg NAME without a value takes it from the env, if set
            value = os.environ[key]
        out[key] = value
    return out


@click.command("build")
@click.argument("context", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-t", "--tag", "tags", multiple=True, help="Name and optionally a tag (name:tag).")
@click.option("-f", "--file", "dockerfile", help="Name of the Dockerfile (default: CONTEXT/Dockerfile); - for stdin.")
@click.option("--build-arg", "build_args", multiple=True, help="Set a build-time variable.")
@click.option("--target", help="Set the target build stage.")
@click.option("--no-cache", is_flag=True, help="Do not use cache when building the image.")
@click.option("--pull", is_flag=True, help="Always attempt to pull a newer version of the base image.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@click.option("--iidfile", type=click.Path(path_type=Path), help="Write the image ID to the file.")
@click.option("--label", "labels", multiple=True, help="Set metadata for an image.")
@click.option("--network", default="host", type=click.Choice(["host", "none", "default"]),
              help="Networking mode for RUN.")
@click.option("--platform", help="Target platform (os/arch[/variant]).")
@click.option("--timestamp", type=int, help="Clamp times to this epoch (also SOURCE_DATE_EPOCH).")
@click.option("--snapshotter", default="auto", type=click.Choice(["auto", "overlayfs", "native"]))
@click.option("--runtime", default="runc", help="OCI runtime binary (runc, crun).")
@click.option("--oci", is_flag=True, help="Write OCI media types instead of Docker's.")
@click.pass_context
def build(ctx: click.Context, context: Path, tags: tuple[str, ...], dockerfile: str | None,
          build_args: tuple[str, ...], target: str | None, no_cache: bool, pull: bool, quiet: bool,
          iidfile: Path | None, labels: tuple[str, ...], network: str, platform: str | None,
          timestamp: int | None, snapshotter: str, runtime: str, oci: bool) -> None:
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
        build_args=_pairs(build_args, from_env=True), target=target, no_cache=no_cache, pull=pull,
        labels=_pairs(labels), network="host" if network == "default" else network, platform=platform,
        timestamp=timestamp, oci=oci,
    )
    store = store_of(ctx)
    stored = api.build(store, options, listener=ClassicRenderer(quiet=quiet), snapshotter=snapshotter,
                       runtime=runtime)
    if quiet:
        click.echo(str(stored.id))
    if iidfile:
        iidfile.write_text(str(stored.id))


COMMANDS = [build]
