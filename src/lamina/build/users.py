"""User and group specs (``USER``, ``COPY --chown``) resolved against an image's own files.

Names mean what the *image* says they mean: they are looked up in the
image's ``/etc/passwd`` and ``/etc/group`` (read through
:func:`~lamina.build.rootpath.resolve_in_root`, so a symlinked ``/etc`` cannot
point at the host's), never in the host's databases.

The two instructions resolve specs differently, as Docker does:

* ``USER`` (:func:`resolve_user`, for RUN and the config) follows runc's
  ``GetExecUser``: a numeric uid missing from passwd is fine and gets gid 0; a
  user name that is missing is an error; supplementary groups come from
  ``/etc/group`` membership unless a group was given explicitly.  A fully
  numeric ``uid:gid`` is taken as is, without reading any file.
* ``--chown`` (:func:`parse_chown`) follows BuildKit's file operations: a
  numeric uid alone means ``uid:uid`` (the Dockerfile reference says so); a
  name alone takes the passwd entry's primary group.  BuildKit silently maps an
  unknown name to 0; lamina refuses it with the same message as ``USER``,
  because silently producing root-owned files is never what was meant.
"""

from __future__ import annotations

from pathlib import Path

from lamina.build.rootpath import resolve_in_root
from lamina.errors import BuildError
from lamina.model import model


@model
class PasswdEntry:
    name: str
    uid: int
    gid: int


@model
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _read_db(root: Path, path: str) -> list[list[str]]:
    """Split the colon-separated database at ``path`` in the image; no file means no entries."""
    try:
        data = resolve_in_root(root, path, follow_final=True).read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    except OSError as exc:
        raise BuildError(f"reading {path}: {exc.strerror}") from exc
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _number(text: str) -> int | None:
    """Parse a decimal id the way Go's ``strconv.ParseUint(s, 10, 32)`` would accept it."""
    if text.isascii() and text.isdigit() and int(text) < 2**32:
        return int(text)
    return None


def read_passwd(root: Path) -> tuple[PasswdEntry, ...]:
    """Entries of the image's ``/etc/passwd`` (malformed lines skipped, like runc)."""
    entries = []
    for row in _read_db(root, "/etc/passwd"):
        uid = _number(row[2]) if len(row) > 2 else None
        gid = _number(row[3]) if len(row) > 3 else None
        if uid is not None and gid is not None:
            entries.append(PasswdEntry(row[0], uid, gid))
    return tuple(entries)


def read_group(root: Path) -> tuple[GroupEntry, ...]:
    """Entries of the image's ``/etc/group`` (malformed lines skipped)."""
    entries = []
    for row in _read_db(root, "/etc/group"):
        gid = _number(row[2]) if len(row) > 2 else None
        if gid is None:
            continue
        members = tuple(m for m in row[3].split(",") if m) if len(row) > 3 else ()
        entries.append(GroupEntry(row[0], gid, members))
    return tuple(entries)


def _split(spec: str) -> tuple[str, str | None]:
    user, sep, group = spec.partition(":")
    if not user or (sep and not group):
        raise BuildError(f"invalid user spec {spec!r}")
    return user, (group if sep else None)


def _group_id(root: Path, group: str) -> int:
    number = _number(group)
    if number is not None:
        return number
    for entry in read_group(root):
        if entry.name == group:
            return entry.gid
    raise BuildError(f"unable to find group {group}: no matching entries in group file")


def resolve_user(root: Path, spec: str) -> tuple[int, int, tuple[int, ...]]:
    """Resolve a ``USER`` spec to ``(uid, gid, supplementary gids)`` inside ``root``.

    Accepts ``name``, ``uid``, ``name:group``, ``uid:gid``, ``uid:group`` and
    ``name:gid``; an empty spec means root.  Raises :class:`BuildError` when a
    name is not in the image's files.
    """
    if not spec:
        return 0, 0, ()
    user, group = _split(spec)
    uid, group_number = _number(user), _number(group) if group is not None else None
    if uid is not None and group_number is not None:
        return uid, group_number, ()  # BuildKit's fast path: no file is read
    matches = [e for e in read_passwd(root) if (e.uid == uid if uid is not None else e.name == user)]
    if not matches and uid is None:
        raise BuildError(f"unable to find user {user}: no matching entries in passwd file")
    entry = matches[0] if matches else None
    uid = entry.uid if entry else uid
    assert uid is not None
    if group is not None:
        return uid, _group_id(root, group), ()
    if entry is None:
        return uid, 0, ()
    extra = tuple(dict.fromkeys(g.gid for g in read_group(root) if entry.name in g.members))
    return uid, entry.gid, extra


def parse_chown(root: Path, spec: str) -> tuple[int, int]:
    """Resolve a ``COPY/ADD --chown`` spec against the destination image at ``root``.

    ``uid`` alone means ``uid:uid``; ``name`` alone takes the passwd entry's
    group; names missing from the image are a :class:`BuildError`. An empty
    side of the colon is id 0, as in BuildKit (``:77`` is 0:77, ``88:`` is 88:0).
    """
    user, sep, group_text = spec.partition(":")
    group = group_text if sep else None
    uid = _number(user) if user else 0
    gid = uid
    if group == "":
        group = "0"
    if uid is None:
        entry = next((e for e in read_passwd(root) if e.name == user), None)
        if entry is None:
            raise BuildError(f"unable to find user {user}: no matching entries in passwd file")
        uid, gid = entry.uid, entry.gid
    if group is not None:
        gid = _group_id(root, group)
    assert gid is not None
    return uid, gid


__all__ = ["GroupEntry", "PasswdEntry", "parse_chown", "read_group", "read_passwd", "resolve_user"]
