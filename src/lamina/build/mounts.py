"""``RUN --mount=…`` and ``build --secret …``: parsed into values, with BuildKit's defaults.

Pure values and functions only: what a mount *is*, what of it enters the RUN's
cache key, and :class:`Redactor`, which hides secret values in a RUN's output.
Preparing mounts on the host is :mod:`lamina.build.mountsetup`.

A mount is a CSV list of ``key=value`` fields (``type`` defaults to
``bind``). Values are expanded with the stage's ARG/ENV scope, as BuildKit
does. A relative target is taken from the working directory. Defaults per
type follow the Dockerfile reference: ``bind`` reads the build context and
is read-only; ``cache`` is writable, ``id`` defaults to the target, ``sharing``
to ``shared`` and mode to 0755; ``secret`` defaults its target to
``/run/secrets/<id>`` (or its id to the target's base name) and its mode to
0400; ``tmpfs`` is writable and unbounded unless ``size`` is given.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from lamina.build.rootpath import clean
from lamina.errors import BuildError, DockerfileError
from lamina.model import model

MountType = Literal["bind", "cache", "tmpfs", "secret", "ssh"]
Sharing = Literal["shared", "private", "locked"]
MOUNT_TYPES: tuple[MountType, ...] = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING_MODES: tuple[Sharing, ...] = ("shared", "private", "locked")
SECRETS_DIR = "/run/secrets"

_KEYS = frozenset({"type", "from", "source", "src", "target", "dst", "destination", "readonly", "ro",
                   "readwrite", "rw", "id", "sharing", "required", "mode", "uid", "gid", "size", "env"})
_FLAGS = frozenset({"readonly", "ro", "readwrite", "rw", "required"})
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


@model
class RunMount:
    """One ``--mount`` of a RUN, defaults filled in and the target made absolute."""

    type: MountType
    target: str
    source: str = ""
    from_: str = ""
    readonly: bool = False
    id: str = ""
    sharing: Sharing = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    required: bool = False
    size: int | None = None
    env: str = ""

    def key_inputs(self) -> dict[str, Any]:
        """The spec as it enters the cache key: never a secret's value nor a cache's content."""
        out: dict[str, Any] = {"type": self.type, "target": self.target, "readonly": self.readonly}
        for name, value in (("source", self.source), ("from", self.from_), ("id", self.id),
                            ("mode", self.mode), ("uid", self.uid), ("gid", self.gid), ("size", self.size),
                            ("env", self.env)):
            if value not in ("", None):
                out[name] = value
        if self.type == "cache":
            out["sharing"] = self.sharing
        if self.type == "secret":
            out["required"] = self.required
        return out


def parse_mounts(texts: tuple[str, ...], *, workdir: str = "/",
                 expand: Callable[[str], str] | None = None) -> tuple[RunMount, ...]:
    """Every ``--mount`` of one RUN; two mounts on one target are an error, as in BuildKit."""
    mounts = tuple(parse_mount(text, workdir=workdir, expand=expand) for text in texts)
    seen: set[str] = set()
    for mount in mounts:
        if mount.target and mount.target in seen:
            raise DockerfileError(f"duplicate mount target {mount.target}")
        if mount.target:
            seen.add(mount.target)
    return mounts


def parse_mount(text: str, *, workdir: str = "/", expand: Callable[[str], str] | None = None) -> RunMount:
    """One ``--mount`` value; raises :class:`DockerfileError` (unlocated) when it is malformed."""
    fields = _csv_fields(text)
    values: dict[str, str] = {}
    flags: dict[str, bool] = {}
    kind: MountType = "bind"
    for field in fields:
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        if key not in _KEYS:
            raise DockerfileError(f"unexpected key '{key}' in '{field}'")
        if not sep:
            if key not in _FLAGS:
                raise DockerfileError(f"invalid field '{field}' must be a key=value pair")
            flags[key] = True
            continue
        value = expand(value) if expand is not None else value
        if key == "type":
            kind = _choice(value.lower(), MOUNT_TYPES, "mount type")
        elif key in _FLAGS:
            flags[key] = _bool(key, value)
        else:
            values[_ALIASES.get(key, key)] = value
    return _build(kind, values, flags, workdir)


_ALIASES = {"src": "source", "dst": "target", "destination": "target"}


def _build(kind: MountType, values: dict[str, str], flags: dict[str, bool], workdir: str) -> RunMount:
    if kind == "ssh":
        raise DockerfileError("--mount=type=ssh is not supported")
    _check_allowed(kind, values, flags)
    readonly = _readonly(kind, flags)
    target = values.get("target", "")
    ident = values.get("id", "")
    if kind == "secret":
        if "source" in values and ident:
            raise DockerfileError("both source and id can't be set")
        ident = ident or values.get("source", "") or os.path.basename(target.rstrip("/"))
        if not ident:
            raise DockerfileError("invalid secret mount. one of source, target required")
        if not target and not values.get("env"):
            target = f"{SECRETS_DIR}/{ident}"
    elif not target:
        raise DockerfileError(f"mount type {kind} requires a target (target=…)")
    target = _absolute(target, workdir) if target else ""
    if kind == "cache":
        ident = ident or target
    return RunMount(
        type=kind, target=target, source=values.get("source", "") if kind != "secret" else "",
        from_=values.get("from", ""), readonly=readonly, id=ident,
        sharing=_choice(values.get("sharing", "shared").lower(), SHARING_MODES, "sharing value"),
        mode=_number(values, "mode", 8), uid=_number(values, "uid", 10), gid=_number(values, "gid", 10),
        required=flags.get("required", False), size=_size(values["size"]) if "size" in values else None,
        env=values.get("env", ""),
    )


def _check_allowed(kind: MountType, values: Mapping[str, str], flags: Mapping[str, bool]) -> None:
    if kind not in ("secret", "cache"):
        for name in ("mode", "uid", "gid"):
            if name in values:
                raise DockerfileError(f'{name} not allowed for "{kind}" type mounts')
    if "required" in flags and kind != "secret":
        raise DockerfileError(f"unexpected key 'required' for mount type '{kind}'")
    if "size" in values and kind != "tmpfs":
        raise DockerfileError(f"unexpected key 'size' for mount type '{kind}'")
    if "sharing" in values and kind != "cache":
        raise DockerfileError(f"invalid cache sharing set for {kind} mount")
    if "env" in values and kind != "secret":
        raise DockerfileError(f"unexpected key 'env' for mount type '{kind}'")
    if "from" in values and kind in ("secret", "tmpfs"):
        raise DockerfileError(f"{kind} mount should not have a from")


def _readonly(kind: MountType, flags: Mapping[str, bool]) -> bool:
    if "readonly" in flags or "ro" in flags:
        return flags.get("readonly", flags.get("ro", False))
    if "readwrite" in flags or "rw" in flags:
        return not flags.get("readwrite", flags.get("rw", False))
    return kind not in ("cache", "tmpfs")


def _csv_fields(text: str) -> list[str]:
    if text.count('"') % 2:  # Python's csv accepts an unterminated quote; Go's (BuildKit's) does not
        raise DockerfileError(f"failed to parse csv mounts: unterminated quote in {text!r}")
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise DockerfileError(f"failed to parse csv mounts: {exc}") from None
    return [f for f in (rows[0] if rows else []) if f != ""]


def _choice(value: str, allowed: tuple[Any, ...], what: str) -> Any:
    if value not in allowed:
        raise DockerfileError(f'unsupported {what} "{value}" (expected one of {", ".join(allowed)})')
    return value


def _bool(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise DockerfileError(f"invalid value for {key}: {value}")


def _number(values: Mapping[str, str], key: str, base: int) -> int | None:
    if key not in values:
        return None
    try:
        number = int(values[key], base)
    except ValueError:
        raise DockerfileError(f"invalid value {values[key]} for {key}") from None
    if not 0 <= number < 1 << 32:
        raise DockerfileError(f"invalid value {values[key]} for {key}")
    return number


def _size(text: str) -> int:
    """docker's RAMInBytes: ``64m``, ``1g``, ``512kb``, ``1MiB`` — binary units."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise DockerfileError(f"invalid value for size: {text}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _absolute(target: str, workdir: str) -> str:
    return clean(target if target.startswith("/") else f"{workdir or '/'}/{target}")


# build --secret ---------------------------------------------------------------------


@model
class SecretSource:
    """Where a build secret's value comes from: a file or an environment variable.

    The value itself is never held in a long-lived object: it is read when
    a RUN that mounts it starts.
    """

    path: Path | None = None
    env: str | None = None

    def read(self) -> bytes:
        if self.env is not None:
            if self.env not in os.environ:
                raise BuildError(f"secret environment variable {self.env} is not set")
            return os.fsencode(os.environ[self.env])
        assert self.path is not None
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise BuildError(f"reading secret file {self.path}: {exc.strerror or exc}") from None


def parse_secret_flag(text: str, environ: Mapping[str, str] | None = None) -> tuple[str, SecretSource]:
    """``id=ID[,type=file|env][,src|source=PATH][,env=VAR]`` as ``docker build --secret`` takes it.

    With neither a file nor a variable named, the variable called ID is used
    when set, else a file called ID (docker's rule).
    """
    environ = os.environ if environ is None else environ
    ident = kind = src = env = None
    for field in _csv_fields(text):
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        if not sep:
            raise BuildError(f"invalid secret {text!r}: expected key=value fields")
        if key == "id":
            ident = value
        elif key == "type":
            if value not in ("file", "env"):
                raise BuildError(f"unsupported secret type {value!r}")
            kind = value
        elif key in ("src", "source"):
            src = value
        elif key == "env":
            env = value
        else:
            raise BuildError(f"unexpected key {key!r} in secret {text!r}")
    if not ident:
        raise BuildError(f"invalid secret {text!r}: id=… is required")
    if kind == "env" and env is None:
        env, src = src or ident, None
    if src is None and env is None:
        if ident in environ and kind != "file":
            env = ident
        else:
            src = ident
    return ident, SecretSource(path=None, env=env) if env is not None else SecretSource(path=Path(src or ""))


# output of a RUN that sees secrets ---------------------------------------------------------

_MIN_REDACTED = 4  # shorter values would blot out ordinary output


class Redactor:
    """Replaces secret values in a stream of output chunks with ``****``.

    A secret may be cut across two chunks, so a tail that could start one
    is held back until the next chunk or :meth:`flush`; other output passes at once.
    """

    def __init__(self, emit: Callable[[bytes], None], secrets: tuple[bytes, ...]) -> None:
        words = {value.strip() for value in secrets if len(value.strip()) >= _MIN_REDACTED}  # keep newlines
        self._emit = emit
        self._words = sorted(words, key=len, reverse=True)
        self._keep = max((len(w) for w in self._words), default=1) - 1
        self._held = b""

    def feed(self, chunk: bytes) -> None:
        data = self._redact(self._held + chunk)
        cut = len(data) - self._partial(data)
        self._held = data[cut:]
        if cut:
            self._emit(data[:cut])

    def flush(self) -> None:
        held, self._held = self._redact(self._held), b""
        if held:
            self._emit(held)

    def _partial(self, data: bytes) -> int:
        """Length of the longest tail of ``data`` that a secret starts with."""
        for size in range(min(len(data), self._keep), 0, -1):
            tail = data[-size:]
            if any(word.startswith(tail) for word in self._words):
                return size
        return 0

    def _redact(self, data: bytes) -> bytes:
        for word in self._words:
            data = data.replace(word, b"****")
        return data


__all__ = ["MOUNT_TYPES", "SECRETS_DIR", "SHARING_MODES", "Redactor", "RunMount", "SecretSource", "parse_mount",
           "parse_mounts", "parse_secret_flag"]
