"""Registry commands: pull, push, login, logout."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

from lamina.cli.args import (
    Context,
    UsageError,
    argument,
    boolean,
    command,
    echo,
    option,
    pass_context,
    prompt,
)
from lamina.cli.main import store_of
from lamina.errors import LaminaError

TLS_VERIFY_HELP = ("Require HTTPS and verify certificates (default true); false: HTTPS without checks, "
                   "else plain HTTP, like docker's insecure-registries.")


def _tls_verify(function: Callable[..., Any]) -> Callable[..., Any]:
    return option("--tls-verify", type=boolean, default=True, metavar="BOOL", help=TLS_VERIFY_HELP)(function)


def _transfer_progress(action: str, quiet: bool) -> contextlib.AbstractContextManager[Any]:
    """A bar per layer on a terminal, else status lines; with ``-q`` nothing, and no renderer imported."""
    if quiet:
        return contextlib.nullcontext()
    from lamina.cli.progress import transfer_progress

    return transfer_progress(action)


class _Downloads:
    """Passes progress events on, noting whether any blob was transferred and what the name resolved to."""

    def __init__(self, progress: Callable[[Any], None] | None) -> None:
        self._progress = progress
        self.any = False
        self.resolved: Any = None  # the digest the registry gave for the name (an index's, for several platforms)

    def __call__(self, event: Any) -> None:
        if getattr(event, "status", None) in ("transferring", "complete"):
            self.any = True
        if self.resolved is None and hasattr(event, "media_type"):
            self.resolved = event.digest
        if self._progress is not None:
            self._progress(event)


@command("pull")
@argument("name")
@option("-a", "--all-tags", is_flag=True, help="Download all tagged images in the repository.")
@option("--platform", help="os/arch[/variant] to pull from a multi-platform image.")
@option("-q", "--quiet", is_flag=True, help="Suppress verbose output (print the reference only).")
@_tls_verify
@pass_context
def pull(ctx: Context, name: str, all_tags: bool, platform: str | None, quiet: bool, tls_verify: bool) -> None:
    """Download an image from a registry.

    Ends with docker's status: "Image is up to date for NAME" when nothing was
    downloaded and the tag already named that image, else "Downloaded newer image".
    """
    from lamina.oci.reference import Reference

    ref = Reference.parse(name)
    store = store_of(ctx)
    if not all_tags:
        fresh = _pull_one(store, ref, platform, quiet, tls_verify)
        if quiet:
            echo(str(ref))
        else:
            echo(f"Status: {'Downloaded newer image' if fresh else 'Image is up to date'} for {ref.familiar}")
            echo(str(ref))
        return
    if ref.digest is not None or name.rpartition("/")[2].count(":"):
        raise UsageError("tag can't be used with --all-tags/-a")
    from lamina import api

    tags = api.list_tags(ref.repository, tls_verify=tls_verify)
    if not tags:
        raise LaminaError(f"no tags in {ref.familiar_repository}")
    fresh = False
    for tag in tags:
        fresh |= _pull_one(store, ref.with_tag(tag), platform, quiet, tls_verify)
    if not quiet:
        echo(f"Status: {'Downloaded newer image' if fresh else 'Image is up to date'} "
             f"for {ref.familiar_repository}")
    echo(ref.repository)


def _pull_one(store: Any, ref: Any, platform: str | None, quiet: bool, tls_verify: bool) -> bool:
    """Pull one reference; whether anything changed (a blob downloaded, or the tag moved)."""
    from lamina import api

    before = store.db.tag(str(ref)) if ref.digest is None else None
    if not quiet:
        echo(f"{ref.tag or ref.digest}: Pulling from {ref.familiar_repository}")
    with _transfer_progress("pull", quiet) as progress:
        watch = _Downloads(progress)
        stored = api.pull(store, str(ref), platform=platform, progress=watch, tls_verify=tls_verify)
    if not quiet:
        echo(f"Digest: {watch.resolved or stored.manifest_digest}")
    return watch.any or (ref.digest is None and before != str(stored.manifest_digest))


@command("push")
@argument("name")
@argument("destination", required=False)
@option("-a", "--all-tags", is_flag=True, help="Push all local tags of the repository NAME.")
@option("-q", "--quiet", is_flag=True, help="Suppress verbose output (print the reference only).")
@_tls_verify
@pass_context
def push(ctx: Context, name: str, destination: str | None, all_tags: bool, quiet: bool,
         tls_verify: bool) -> None:
    """Upload an image to a registry (to DESTINATION when given, else to NAME)."""
    from lamina.oci.reference import Reference

    store = store_of(ctx)
    ref = Reference.parse(destination or name)
    if all_tags:
        if destination is not None or ref.digest is not None or name.rpartition("/")[2].count(":"):
            raise UsageError("tag can't be used with --all-tags/-a")
        names = [r for r in (Reference.parse(n) for n, _ in store.db.tags()) if r.repository == ref.repository]
        if not names:
            raise LaminaError(f"An image does not exist locally with the tag: {ref.familiar_repository}")
    else:
        names = [ref]
    if not quiet:
        echo(f"The push refers to repository [{ref.repository}]")
    from lamina import api

    for target in names:
        with _transfer_progress("push", quiet) as progress:
            source = name if not all_tags else str(target)
            result = api.push(store, source, None if all_tags else destination, progress=progress,
                              tls_verify=tls_verify)
        if quiet:
            echo(str(target))
        else:
            echo(f"{target.tag or 'latest'}: digest: {result.digest} size: {result.size}")


@command("login")
@argument("server", required=False, default="docker.io")
@option("-u", "--username")
@option("-p", "--password", help="Password (prefer --password-stdin).")
@option("--password-stdin", is_flag=True, help="Take the password from stdin.")
@_tls_verify
def login(server: str, username: str | None, password: str | None, password_stdin: bool, tls_verify: bool) -> None:
    """Log in to a registry: the registry checks the credentials, which then go to ~/.docker/config.json."""
    from lamina import api

    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    if username is None:
        username = prompt("Username")
    if password is None:
        password = prompt("Password", hide_input=True)
    api.login(server, username, password, tls_verify=tls_verify)
    echo("Login Succeeded")


@command("logout")
@argument("server", required=False, default="docker.io")
def logout(server: str) -> None:
    """Log out from a registry."""
    from lamina.transport.credentials import CredentialStore

    CredentialStore().logout(server)
    echo(f"Removing login credentials for {server}")


COMMANDS = [pull, push, login, logout]
