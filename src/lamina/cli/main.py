"""The ``lamina`` command: docker's verbs and flags over :mod:`lamina.api`.

Every command is short: parse flags, call the API, print. A
:class:`~lamina.errors.LaminaError` becomes one line on stderr and exit 1;
Ctrl-C exits 130. Heavy modules are imported inside the commands, and a
command's module is imported only when that command runs (or help lists
them), so ``lamina build`` does not pay for ``push`` or ``save``.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from lamina.errors import LaminaError

# command name → the lamina.cli module that defines it (in its COMMANDS list)
COMMAND_MODULES = {
    "build": "build_cmd",
    "images": "image_cmds", "tag": "image_cmds", "rmi": "image_cmds", "inspect": "image_cmds",
    "history": "image_cmds", "save": "image_cmds", "load": "image_cmds", "import": "image_cmds",
    "pull": "registry_cmds", "push": "registry_cmds", "login": "registry_cmds", "logout": "registry_cmds",
    "run": "run_cmd",
    "logs": "debug_cmds", "debug": "debug_cmds",
    "layers": "layers_cmd",
    "prune": "system_cmds", "builder": "system_cmds", "system": "system_cmds",
}


class _Group(click.Group):
    """Resolves subcommands on demand from :data:`COMMAND_MODULES`."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            self._load(COMMAND_MODULES[cmd_name])
        if cmd_name not in self.commands:  # a command missing from the table: look everywhere
            for module in dict.fromkeys(COMMAND_MODULES.values()):
                self._load(module)
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in dict.fromkeys(COMMAND_MODULES.values()):
            self._load(module)
        return super().list_commands(ctx)

    def _load(self, module: str) -> None:
        for command in importlib.import_module(f"lamina.cli.{module}").COMMANDS:
            if command.name not in self.commands:
                self.add_command(command)

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
        _hold_lease(ctx, obj["store"])
    return obj["store"]


def _hold_lease(ctx: click.Context, store: Any) -> None:
    """The command holds a lease until it ends, so a prune never sweeps what it uses."""
    from lamina.store.lease import Lease

    lease = Lease(store.root, ctx.info_name or "lamina")
    lease.__enter__()
    ctx.find_root().call_on_close(lambda: lease.__exit__(None, None, None))


def main() -> None:
    """Run the CLI, then leave without tearing the interpreter down.

    Every command has finished its work when click returns (stores closed, leases released,
    logs written; SQLite's committed WAL frames are on disk), so unwinding a hundred modules
    would only cost time: ~30 ms here, a tenth of a cached build.
    """
    try:
        cli.main(prog_name="lamina", standalone_mode=True)
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or 141
    os._exit(code or 0)
