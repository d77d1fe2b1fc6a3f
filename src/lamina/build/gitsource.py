"""ADD's Git sources: recognising a repository, resolving its ref to a commit, checking it out.

BuildKit's rules (its ``gitutil`` and Git source), followed with the ``git`` binary:

* a source is a repository when it is ``git://…`` or ``ssh://…``, an
  ``http(s)://`` URL whose path ends in ``.git``, or SCP-like
  ``user@host:path``; ``./x``, ``github.com/x/y`` and unknown schemes
  (``file://``, ``ftp://``) are not (ADD takes them as local paths);
* the fragment picks what to add: ``#ref:subdir`` (a branch, tag or commit;
  default ``HEAD``), or the CSV form ``##ref=…,commit=…,subdir=…``;
* the ref is resolved to a commit first (``git ls-remote``, no clone), and
  that commit, not the URL, keys the cache: a branch that moved rebuilds,
  one that did not is a cache hit without fetching anything;
* ``--checksum=<hex>`` must be a prefix of that commit;
* the checkout (or its subdir) is added as a directory's contents; ``.git``
  only with ``--keep-git-dir``; files are 0644, or 0755 when executable,
  directories 0755. Their mtime is the commit's time (BuildKit leaves the
  checkout's), so the same commit always makes the same layer.

Every ``git`` call runs without a terminal prompt and with a timeout; a
failure is a :class:`~lamina.errors.BuildError` quoting git's last line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from lamina.build.rootpath import clean
from lamina.errors import BuildError
from lamina.model import model

__all__ = ["GitSource", "checkout", "parse", "resolve"]

_SCHEME = re.compile(r"^[a-zA-Z0-9]+://")
_SCHEMES = frozenset({"http", "https", "ssh", "git"})
_SCP = re.compile(r"^[a-zA-Z0-9\-_]+@[a-zA-Z0-9\-.]+:.+$")
_FULL_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_HEX = re.compile(r"^[0-9a-f]+$")
_TIMEOUT = 600.0


@model
class GitSource:
    """A repository to add: its remote (no fragment), the ref and subdir asked for, a commit to verify."""

    remote: str
    ref: str = ""
    subdir: str = ""
    commit: str = ""  # the CSV form's ``commit=``: the ref must resolve to it


def parse(source: str) -> GitSource | None:
    """The repository ``source`` names, or None when it is not a Git source (see the module doc)."""
    if source.startswith(("./", "../")):
        return None
    found = _SCHEME.match(source)
    if found:
        scheme = found.group(0)[:-3].lower()
        if scheme not in _SCHEMES:
            return None
        parts = urlsplit(source)
        if scheme in ("http", "https") and not parts.path.endswith(".git"):
            return None
        remote, _, fragment = source.partition("#")
    elif _SCP.match(source.partition("#")[0]):
        remote, _, fragment = source.partition("#")
    else:
        return None
    return _with_fragment(remote, fragment)


def _with_fragment(remote: str, fragment: str) -> GitSource:
    if not fragment.startswith("#"):
        ref, _, subdir = fragment.partition(":")
        return GitSource(remote, ref, subdir)
    fields: dict[str, str] = {}
    for field in (f for f in fragment[1:].split(",") if f):
        key, sep, value = field.partition("=")
        if not sep:
            raise BuildError(f"invalid Git URL fragment field {field!r}: must be a key=value pair")
        key = key.strip().lower()
        if key not in ("ref", "commit", "subdir"):
            raise BuildError(f"unexpected key {key!r} in Git URL fragment (supported keys: ref, commit, subdir)")
        fields[key] = value
    commit = fields.get("commit", "")
    return GitSource(remote, fields.get("ref") or commit, fields.get("subdir", ""), commit)


def _git(*args: str, cwd: Path | None = None, timeout: float = _TIMEOUT) -> str:
    """Run ``git args`` and return its stdout; a one-line BuildError when it fails."""
    import subprocess  # only when a Git source is really used: parse() stays cheap for every ADD

    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1"}
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise BuildError("ADD from a Git repository needs the git program, which is not installed") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"git {args[0]} timed out after {timeout:.0f}s") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
        raise BuildError(f"git {args[0]} failed: {lines[-1] if lines else f'exit status {done.returncode}'}")
    return done.stdout.decode(errors="replace")


def _pick(listing: str, ref: str) -> str | None:
    """The commit ``ref`` names in ``git ls-remote`` output, in git's own order of precedence."""
    refs: dict[str, str] = {}
    for line in listing.splitlines():
        sha, _, name = line.partition("\t")
        refs[name.strip()] = sha.strip()
    if not ref:
        return refs.get("HEAD")
    for name in (f"{ref}^{{}}", ref, f"refs/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}",
                 f"refs/heads/{ref}"):
        if name in refs:
            return refs[name]
    return None


def resolve(source: GitSource, *, checksum: str | None = None, scratch: Path | None = None) -> str:
    """The full commit ``source`` names now; checks it against ``checksum`` and ``commit=``.

    A full commit ID is taken as it is; a branch or tag costs one
    ``git ls-remote``; an abbreviated commit needs a fetch (into
    ``scratch``, a directory the caller removes).
    """
    ref = source.ref
    if _FULL_COMMIT.match(ref):
        commit = ref
    else:
        commit = _pick(_git("ls-remote", "--", source.remote, *([ref, f"{ref}^{{}}"] if ref else ["HEAD"])), ref) or ""
        if not commit and _HEX.match(ref) and scratch is not None:
            repo = _fetched(source.remote, None, scratch / "resolve")
            commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=repo).strip()
        if not commit:
            raise BuildError(f"{source.remote}: no branch, tag or commit named {ref or 'HEAD'!r}")
    if source.commit and not commit.startswith(source.commit):
        raise BuildError(f"{source.remote}: {ref} is commit {commit}, not the expected {source.commit}")
    if checksum is not None and not commit.startswith(checksum):
        raise BuildError(f"checksum mismatch for {source.remote}: expected commit {checksum}, got {commit}")
    return commit


def _fetched(remote: str, commit: str | None, into: Path) -> Path:
    """A repository at ``into`` holding ``commit`` (just it when the server allows, else every branch and tag)."""
    into.mkdir(parents=True)
    _git("init", "-q", str(into))
    _git("remote", "add", "origin", remote, cwd=into)
    if commit is not None:
        try:
            _git("fetch", "-q", "--depth=1", "--no-tags", "origin", commit, cwd=into)
            return into
        except BuildError:
            pass  # a dumb-HTTP server, or one that refuses unadvertised commits: fetch everything
    _git("fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*", cwd=into)
    return into


def checkout(source: GitSource, commit: str, into: Path, *, keep_git_dir: bool = False) -> Path:
    """Check ``commit`` out at ``into`` (which must not exist); the directory whose contents ADD copies.

    Submodules are checked out too. Modes and mtimes are normalized as the
    module doc says; ``.git`` is removed unless ``keep_git_dir``.
    """
    repo = _fetched(source.remote, commit, into)
    _git("-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit, cwd=repo)
    if (repo / ".gitmodules").is_file():
        _git("submodule", "update", "-q", "--init", "--recursive", cwd=repo)
    when = int(_git("show", "-s", "--format=%ct", commit, cwd=repo).strip() or 0)
    if not keep_git_dir:
        import shutil

        shutil.rmtree(repo / ".git")
    _normalize(repo, when, skip=repo / ".git")
    if not source.subdir:
        return repo
    sub = clean("/" + source.subdir).lstrip("/")
    target = repo / sub
    if not sub or os.path.islink(target) or not target.is_dir():
        raise BuildError(f"{source.remote}: no directory {source.subdir!r} at commit {commit[:12]}")
    return target


def _normalize(root: Path, mtime: int, *, skip: Path) -> None:
    """Modes as BuildKit gives a Git checkout, and one reproducible mtime for everything."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            continue
        for name in filenames + [d for d in dirnames if os.path.islink(here / d)]:
            path = here / name
            info = path.lstat()
            if not os.path.islink(path):
                os.chmod(path, 0o755 if info.st_mode & 0o111 else 0o644)
            os.utime(path, (mtime, mtime), follow_symlinks=False)
        if here != skip:
            os.chmod(here, 0o755)
            os.utime(here, (mtime, mtime))
