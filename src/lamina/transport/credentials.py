"""Registry credentials, read and written the way the docker CLI keeps them.

The source of truth is ``$DOCKER_CONFIG/config.json`` (``~/.docker`` by
default), so ``docker login`` and ``lamina login`` share one set of
credentials. A registry's secrets live either inline under ``auths`` (base64
``user:password``, or an ``identitytoken``) or in a credential helper
(``credHelpers`` per registry, ``credsStore`` for all), a program
``docker-credential-NAME`` spoken to with JSON on stdin/stdout.

Secrets never appear in a repr, a log line or an exception message.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any

from lamina.errors import AuthError
from lamina.model import model

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
_TOKEN_USER = "<token>"  # what helpers return as Username for an identity token

# (program, action, stdin) -> stdout; raises HelperError. A seam for tests.
HelperRunner = Callable[[str, str, bytes], bytes]


@model
class Credential:
    """A username and password, or an OAuth2 identity (refresh) token."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


class HelperError(AuthError):
    """A credential helper failed (its own message, never the secret)."""


class HelperNotFound(HelperError):
    """The helper said it has nothing for this registry."""


def registry_key(registry: str) -> str:
    """The ``auths`` key docker uses: the hostname, or docker.io's historic URL."""
    host = hostname(registry)
    return DOCKER_HUB_KEY if host in _HUB_ALIASES else host


def hostname(key: str) -> str:
    """``https://host:5000/v2/`` → ``host:5000`` (docker's ConvertToHostname)."""
    rest = key.split("://", 1)[1] if "://" in key else key
    return rest.split("/", 1)[0]


def default_config_dir() -> Path:
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env) if env else Path.home() / ".docker"


def run_helper(program: str, action: str, stdin: bytes) -> bytes:
    """Run ``program action`` feeding ``stdin``; the helper's stdout on success."""
    import subprocess  # only here: most registries are used without a helper (start-up cost)

    try:
        proc = subprocess.run([program, action], input=stdin, capture_output=True, timeout=60, check=False)
    except FileNotFoundError as exc:
        raise HelperError(f"credential helper {program} not found in PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise HelperError(f"credential helper {program} {action}: timed out") from exc
    if proc.returncode != 0:
        message = (proc.stdout or proc.stderr).decode(errors="replace").strip().splitlines()
        text = message[0] if message else f"exit status {proc.returncode}"
        if "credentials not found" in text.lower():
            raise HelperNotFound(text)
        raise HelperError(f"credential helper {program} {action}: {text}")
    return proc.stdout


class CredentialStore:
    """The credentials in one docker config directory.

    Reads the file on every call (it is small, and ``docker login`` may have
    changed it meanwhile); writes are atomic and keep keys lamina does not
    know about.
    """

    def __init__(self, config_dir: Path | str | None = None, *, helper_runner: HelperRunner = run_helper) -> None:
        self.config_dir = Path(config_dir) if config_dir is not None else default_config_dir()
        self._run = helper_runner

    @property
    def path(self) -> Path:
        return self.config_dir / "config.json"

    def get(self, registry: str) -> Credential | None:
        """The credential for ``registry`` (a domain like ``docker.io`` or ``host:5000``), if any."""
        config = self._load()
        key = registry_key(registry)
        helper = self._helper_for(config, key)
        if helper:
            return self._helper_get(helper, key)
        entry = _find_auth(config.get("auths") or {}, key)
        return _decode_entry(entry, key) if entry is not None else None

    def login(self, registry: str, username: str, password: str) -> None:
        """Store ``username``/``password`` for ``registry`` (in its helper when one is set)."""
        config = self._load()
        key = registry_key(registry)
        auths = config.setdefault("auths", {})
        helper = self._helper_for(config, key)
        if helper:
            payload = {"ServerURL": key, "Username": username, "Secret": password}
            self._run(helper, "store", json.dumps(payload).encode())
            auths[key] = {}  # docker keeps an empty entry so the registry is listed as logged in
        else:
            import base64  # here and in _decode_entry: a registry that never challenges needs neither

            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            auths[key] = {"auth": token}
        self._save(config)

    def logout(self, registry: str) -> bool:
        """Forget ``registry``'s credential; whether there was one."""
        config = self._load()
        key = registry_key(registry)
        auths = config.get("auths") or {}
        found = False
        for name in [k for k in auths if registry_key(k) == key]:
            del auths[name]
            found = True
        helper = self._helper_for(config, key)
        if helper:
            try:
                self._run(helper, "erase", key.encode())
                found = True
            except HelperNotFound:
                pass
        if found:
            self._save(config)
        return found

    # the file -------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes() or b"{}")
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuthError(f"{self.path}: malformed JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise AuthError(f"{self.path}: not a JSON object")
        return data

    def _save(self, config: dict[str, Any]) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path.resolve() if self.path.is_symlink() else self.path
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(config, f, indent="\t")
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # helpers ---------------------------------------------------------------
    def _helper_for(self, config: dict[str, Any], key: str) -> str | None:
        helpers = config.get("credHelpers") or {}
        name = helpers.get(key) or helpers.get(hostname(key)) or config.get("credsStore")
        return f"docker-credential-{name}" if name else None

    def _helper_get(self, helper: str, key: str) -> Credential | None:
        try:
            out = self._run(helper, "get", key.encode())
        except HelperNotFound:
            return None
        try:
            doc = json.loads(out)
            username, secret = str(doc.get("Username") or ""), str(doc.get("Secret") or "")
        except (ValueError, AttributeError) as exc:
            raise HelperError(f"credential helper {helper}: unreadable answer for {key}") from exc
        if username == _TOKEN_USER:
            return Credential(identity_token=secret)
        return Credential(username, secret)


def _find_auth(auths: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The entry for ``key``: exact first, else any key naming the same host (``https://host/v2/``)."""
    if isinstance(auths.get(key), dict):
        return auths[key]  # type: ignore[no-any-return]
    for name, entry in auths.items():
        if registry_key(name) == key and isinstance(entry, dict):
            return entry
    return None


def _decode_entry(entry: dict[str, Any], key: str) -> Credential | None:
    username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
    if entry.get("auth"):
        import base64
        import binascii

        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=False).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise AuthError(f"credentials for {key}: malformed auth value") from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise AuthError(f"credentials for {key}: auth value is not user:password")
    cred = Credential(username, password, str(entry.get("identitytoken") or ""))
    return None if cred.empty else cred


__all__ = [
    "DOCKER_HUB_KEY",
    "Credential",
    "CredentialStore",
    "HelperError",
    "HelperNotFound",
    "HelperRunner",
    "default_config_dir",
    "registry_key",
    "run_helper",
]
