"""Registry commands: pull, push, login, logout."""

from __future__ import annotations

import sys

import click

from lamina.cli.main import store_of


@click.command("pull")
@click.argument("name")
@click.option("--platform", help="os/arch[/variant] to pull from a multi-platform image.")
@click.option("-q", "--quiet", is_flag=True)
@click.pass_context
def pull(ctx: click.Context, name: str, platform: str | None, quiet: bool) -> None:
    """Download an image from a registry."""
    from lamina import api
    from lamina.oci.reference import Reference

    ref = Reference.parse(name)
    if not quiet:
        click.echo(f"{ref.tag or ref.digest}: Pulling from {ref.familiar_repository}")
    stored = api.pull(store_of(ctx), name, platform=platform)
    if quiet:
        click.echo(str(ref))
        return
    click.echo(f"Digest: {stored.manifest_digest}")
    click.echo(f"Status: Downloaded newer image for {ref.familiar}")
    click.echo(str(ref))


@click.command("push")
@click.argument("name")
@click.argument("destination", required=False)
@click.option("-q", "--quiet", is_flag=True)
@click.pass_context
def push(ctx: click.Context, name: str, destination: str | None, quiet: bool) -> None:
    """Upload an image to a registry."""
    from lamina import api
    from lamina.oci.reference import Reference

    ref = Reference.parse(destination or name)
    if not quiet:
        click.echo(f"The push refers to repository [{ref.repository}]")
    result = api.push(store_of(ctx), name, destination)
    click.echo(f"{ref.tag or 'latest'}: digest: {result.digest} size: {result.size}")


@click.command("login")
@click.argument("server", required=False, default="docker.io")
@click.option("-u", "--username")
@click.option("-p", "--password", help="Password (prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Take the password from stdin.")
def login(server: str, username: str | None, password: str | None, password_stdin: bool) -> None:
    """Log in to a registry (credentials go to ~/.docker/config.json, like docker)."""
    from lamina.transport.credentials import CredentialStore

    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    if username is None:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    CredentialStore().login(server, username, password)
    click.echo("Login Succeeded")


@click.command("logout")
@click.argument("server", required=False, default="docker.io")
def logout(server: str) -> None:
    """Log out from a registry."""
    from lamina.transport.credentials import CredentialStore

    CredentialStore().logout(server)
    click.echo(f"Removing login credentials for {server}")


COMMANDS = [pull, push, login, logout]
