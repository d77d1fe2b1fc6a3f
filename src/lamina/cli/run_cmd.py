"""``lamina run``: try an image in a throw-away container."""

from __future__ import annotations

import sys

from lamina.cli.args import Context, argument, command, option, pass_context
from lamina.cli.main import store_of


@command("run", interspersed=False)
@argument("image")
@argument("args", nargs=-1, required=False)
@option("--rm", is_flag=True, help="Accepted for docker compatibility: lamina never keeps the container.")
@option("-e", "--env", "env", multiple=True, help="Set environment variables.")
@option("--network", default="host", choices=["host", "none"])
@option("-w", "--workdir", help="Working directory inside the container.")
@option("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>]).")
@option("--entrypoint", help="Overwrite the default ENTRYPOINT of the image.")
@option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@pass_context
def run(ctx: Context, image: str, args: tuple[str, ...], rm: bool, env: tuple[str, ...], network: str,
        workdir: str | None, user: str | None, entrypoint: str | None, interactive: bool, tty: bool) -> None:
    """Run a command in a new container from IMAGE."""
    from lamina import api

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    def write_err(data: bytes) -> None:
        sys.stderr.buffer.write(data)
        sys.stderr.buffer.flush()

    code = api.run(store_of(ctx), image, args, env=env, network=network, workdir=workdir, user=user,
                   entrypoint=entrypoint, stdin=sys.stdin.buffer if interactive else None,
                   output=None if tty else write, errors=None if tty else write_err, tty=tty)
    ctx.exit(code)


COMMANDS = [run]
