"""The ``lamina`` command: docker's verbs and flags over :mod:`lamina.api`.

Every command is short: parse flags, call the API, print. A
:class:`~lamina.errors.LaminaError` becomes one line on stderr and exit 1;
Ctrl-C exits 130. Heavy modules are imported inside the commands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from lamina.errors import LaminaError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LaminaError as exc:
            if os.environ.get("LAMINA_TRACEBACK"):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            ctx.exit(141)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="LAMINA_ROOT", type=click.Path(path_type=Path),
              help="Store directory (default /var/lib/lamina as root, else $XDG_DATA_HOME/lamina).")
@click.version_option(package_name="lamina")
@click.pass_context
def cli(ctx: click.Context, root: Path | None) -> None:
    """lamina: build, run and ship OCI/Docker images, no daemon needed."""
    ctx.obj = {"root": root}


def store_of(ctx: click.Context) -> Any:
    from lamina.api import open_store

    obj = ctx.find_root().obj
    if "store" not in obj:
        obj["store"] = open_store(obj["root"])
    return obj["store"]


def _register() -> None:
    from lamina.cli import build_cmd, image_cmds, registry_cmds, run_cmd

    for module in (build_cmd, image_cmds, registry_cmds, run_cmd):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    try:
        cli.main(prog_name="lamina", standalone_mode=True)
    except SystemExit as exc:
        sys.exit(exc.code)
