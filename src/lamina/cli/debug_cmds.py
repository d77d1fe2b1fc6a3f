"""``lamina logs`` (a kept build's full step output) and ``lamina debug`` (a shell in a failed RUN)."""

from __future__ import annotations

import sys
from typing import Any

from lamina.cli.args import Context, argument, command, echo, option, pass_context
from lamina.cli.main import store_of


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@command("logs")
@argument("build", required=False)
@argument("step", required=False, type=int)
@option("--list", "list_", is_flag=True, help="List the kept builds, newest first.")
@pass_context
def logs(ctx: Context, build: str | None, step: int | None, list_: bool) -> None:
    """Show the output of a build's steps (default: the last build; STEP: only that step).

    A single number of at most four digits is a STEP of the last build.
    """
    from lamina.build.buildlog import builds, find_build
    from lamina.errors import BuildError

    root = store_of(ctx).root
    if list_:
        from lamina.cli.format import table

        rows = [["BUILD", "STATUS", "STEPS", "FAILED STEP", "DEBUG"]]
        for info in builds(root):
            rows.append([info.build_id, info.status, str(len(info.steps)), str(info.failed_step or ""),
                         "yes" if info.debug else ""])
        echo(table(rows))
        return
    if build is not None and step is None and build.isdigit() and len(build) <= 4:
        step = int(build)
        build = None
    info = find_build(root, build)
    numbers = info.step_numbers()
    if step is not None:
        if step not in numbers:
            raise BuildError(f"build {info.build_id} has no log for step {step} (steps: "
                             f"{', '.join(map(str, numbers)) or 'none'})")
        numbers = [step]
    for number in numbers:
        _write(info.step_output(number))
    if not numbers and info.error:  # it failed before any step (a Dockerfile error)
        echo(f"Error: {info.error}")


@command("debug")
@argument("build", required=False)
@option("--cmd", "command", help="Run this shell command instead of an interactive /bin/sh.")
@option("--snapshotter", default="auto", choices=["auto", "overlayfs", "native"])
@option("--runtime", default="auto", show_default=True,
        help="OCI runtime: auto (crun when installed, else runc), runc, crun, or a binary's path.")
@pass_context
def debug(ctx: Context, build: str | None, command: str | None, snapshotter: str, runtime: str) -> None:
    """Open a shell in the container of a failed RUN step (default: the newest one kept).

    The shell sees the step's filesystem as the RUN left it, with its env,
    workdir, user, network and --mount caches, tmpfs and context binds
    (read-only); what you change there is discarded (except in caches).
    """
    ctx.exit(run_debug(store_of(ctx), build, command, snapshotter=snapshotter, runtime=runtime))


def run_debug(store: Any, build: str | None, command: str | None = None, *, snapshotter: str = "auto",
              runtime: str = "auto") -> int:
    """Run the debug container: on a terminal when there is one and no ``command``."""
    from lamina import api

    tty = command is None and sys.stdin.isatty() and sys.stdout.isatty()
    stdin = sys.stdin.buffer if command is None else None
    return api.debug(store, build, command, stdin=None if tty else stdin, output=None if tty else _write,
                     tty=tty, snapshotter=snapshotter, runtime=runtime,
                     warn=lambda text: echo(f"Note: RUN --mount {text}", err=True))


def debug_after_failure(store: Any, error: Exception, snapshotter: str, runtime: str) -> bool:
    """``lamina build --debug``: when the failed build kept its RUN, print the error and open a shell there."""
    from lamina.build.buildlog import builds

    last = builds(store.root)
    if not last or not last[0].debug or last[0].status != "failed":
        return False
    echo(f"Error: {error}", err=True)
    echo("Opening a shell in the failed step's container; exit it to end the build.", err=True)
    run_debug(store, last[0].build_id, snapshotter=snapshotter, runtime=runtime)
    return True


COMMANDS = [logs, debug]
