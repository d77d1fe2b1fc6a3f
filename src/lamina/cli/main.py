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

from lamina import __version__
from lamina.cli import args
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


class _Group(args.Group):
    """Resolves subcommands on demand from :data:`COMMAND_MODULES`; turns errors into exit codes."""

    def get_command(self, name: str) -> args.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            self._load(COMMAND_MODULES[name])
        if name not in self.commands:  # a command missing from the table: look everywhere
            for module in dict.fromkeys(COMMAND_MODULES.values()):
                self._load(module)
        return super().get_command(name)

    def list_commands(self) -> list[str]:
        for module in dict.fromkeys(COMMAND_MODULES.values()):
            self._load(module)
        return super().list_commands()

    def _load(self, module: str) -> None:
        for command in importlib.import_module(f"lamina.cli.{module}").COMMANDS:
            if command.name not in self.commands:
                self.add_command(command)

    def invoke(self, ctx: args.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LaminaError as exc:
            if os.environ.get("LAMINA_TRACEBACK"):
                raise
            args.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            args.echo("Interrupted", err=True)
            ctx.exit(130)
        except BrokenPipeError:
            ctx.exit(141)


@args.group("lamina", cls=_Group)
@args.option("--root", envvar="LAMINA_ROOT", type=Path,
             help="Store directory (default /var/lib/lamina as root, else $XDG_DATA_HOME/lamina).")
@args.version_option(f"lamina, version {__version__}")
@args.pass_context
def cli(ctx: args.Context, root: Path | None) -> None:
    """lamina: build, run and ship OCI/Docker images, no daemon needed."""
    ctx.obj = {"root": root}


def store_of(ctx: args.Context) -> Any:
    from lamina.api import open_store

    obj = ctx.find_root().obj
    if "store" not in obj:
        obj["store"] = open_store(obj["root"])
        _hold_lease(ctx, obj["store"])
    return obj["store"]


def _hold_lease(ctx: args.Context, store: Any) -> None:
    """The command holds a lease until it ends, so a prune never sweeps what it uses."""
    from lamina.store.lease import Lease

    lease = Lease(store.root, ctx.info_name or "lamina")
    lease.__enter__()
    ctx.find_root().call_on_close(lambda: lease.__exit__(None, None, None))


def main() -> None:
    """Run the CLI, then leave without tearing the interpreter down.

    Every command has finished its work when the parser returns (stores closed, leases released,
    logs written; SQLite's committed WAL frames are on disk), so unwinding a hundred modules
    would only cost time: ~30 ms here, a tenth of a cached build.
    """
    try:
        code = cli.main(prog_name="lamina")
    except KeyboardInterrupt:  # while parsing or importing, before a command's own handling
        print("Interrupted", file=sys.stderr)
        code = 130
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or 141
    os._exit(code or 0)
