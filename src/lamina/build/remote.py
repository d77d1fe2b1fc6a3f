"""ADD's remote sources: recognising URLs, naming and fetching the file, checking ``--checksum``.

Docker's rules (BuildKit's Dockerfile frontend and its HTTP source):

* a source starting with ``http://`` or ``https://`` is a URL, unless it names
  a Git repository (``git@…``, ``git://…``, or a URL whose path ends in
  ``.git``: see :mod:`lamina.build.gitsource`); COPY refuses both;
* the file is named after the last element of the URL's path (Go's
  ``path.Base``, percent-decoded), ``__unnamed__`` when the path has none;
  the name of the *original* URL, whatever redirects follow;
* it is written with mode 0600 and, when the response has a
  ``Last-Modified`` header, that mtime; a tar archive is never extracted;
* ``--checksum=sha256:<hex>`` must match the downloaded bytes (for a Git
  source: a prefix of the commit); it is only allowed with one source,
  which must be remote;
* ``--unpack=true`` extracts a downloaded tar archive into the destination
  (plain, gzip, bzip2, xz or zstd); by default it lands as a file.

For the cache key, a download's content digest stands for the file (the
URL is fetched again on every build, so a changed remote file changes the
key); with ``--checksum`` the checksum does, and nothing is fetched unless
the step has to run.  HTTP (:mod:`lamina.transport.http`) is imported only
when something is fetched.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lamina.errors import BuildError
from lamina.model import model

UNNAMED = "__unnamed__"
_HEADERS = {"User-Agent": "lamina/0.1", "Accept-Encoding": "gzip, deflate"}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")
_CHUNK = 1 << 20
MAX_REDIRECTS = 20  # as lamina allowed when it used httpx


@model
class Remote:
    """A fetched URL: the file on the host, its content digest and the mtime to give it."""

    url: str
    name: str
    path: Path
    digest: str
    mtime: float | None = None


def is_git(source: str) -> bool:
    """Whether ``source`` names a Git repository (BuildKit's ``ParseGitRef``, see :mod:`lamina.build.gitsource`)."""
    if ":" not in source:  # both of its forms have one (scheme://…, user@host:path): a path needs no parser
        return False
    from lamina.build.gitsource import parse

    try:
        return parse(source) is not None
    except BuildError:
        return True  # a Git URL with a malformed fragment: the Git source reports it


def is_url(source: str) -> bool:
    """Whether ``source`` is an HTTP(S) URL to download (not a Git repository)."""
    return source.startswith(("http://", "https://")) and not is_git(source)


def file_name(url: str) -> str:
    """The name ADD gives a downloaded file: the URL path's last element (Go ``path.Base``)."""
    path = unquote(urlsplit(url).path).rstrip("/")
    base = path.rsplit("/", 1)[-1] if path else ""
    return base if base not in ("", ".") else UNNAMED


def check_flags(sources: tuple[str, ...], checksum: str | None) -> None:
    """Refuse what BuildKit refuses about ADD's remote sources (before anything is fetched)."""
    git = next((s for s in sources if is_git(s)), None)
    if git is not None and len(sources) > 1:
        raise BuildError(f"ADD from a Git repository takes it as its only source: {git}")
    if checksum is None:
        return
    if len(sources) != 1:
        raise BuildError("checksum can't be specified for multiple sources")
    if git is not None:
        if not re.fullmatch(r"[0-9a-f]{1,64}", checksum):
            raise BuildError(f"invalid checksum {checksum!r} for a Git source: expected a commit ID or its prefix")
        return
    if not is_url(sources[0]):
        raise BuildError("checksum requires HTTP(S) or Git sources")
    if not checksum.startswith("sha256:"):
        raise BuildError(f"unsupported checksum algorithm in {checksum!r}: only sha256 is supported")
    if not _SHA256.fullmatch(checksum):
        raise BuildError(f"invalid checksum digest format: {checksum!r}")


def _mtime(header: str | None) -> float | None:
    if not header:
        return None
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return None  # an unparseable date is ignored, as Go's http.ParseTime failing is


def fetch(url: str, into: Path, *, checksum: str | None = None, timeout: float = 60.0) -> Remote:
    """Download ``url`` into the directory ``into``, following redirects.

    The file is written under a name of its own in ``into`` (the caller
    removes the directory).  A non-2xx answer, a network error or a
    ``checksum`` mismatch raises :class:`BuildError` with a one-line message.
    """
    from urllib.parse import urljoin

    from lamina.transport.http import HttpTransport, Request, TransportError

    target = into / f"download-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    sink = hashlib.sha256()
    try:
        with HttpTransport(connect_timeout=30.0, timeout=timeout) as transport:
            location = url
            for _ in range(MAX_REDIRECTS + 1):
                response = transport.handle(Request("GET", location, _HEADERS), stream=True)
                if response.status_code not in _REDIRECTS or "Location" not in response.headers:
                    break
                response.close()
                location = urljoin(location, response.headers["Location"])
            else:
                raise BuildError(f"fetching {url}: more than {MAX_REDIRECTS} redirects")
            with response:
                if not response.is_success:
                    raise BuildError(f"fetching {url}: HTTP {response.status_code} {response.reason_phrase}".rstrip())
                with open(target, "wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        sink.update(chunk)
                        out.write(chunk)
                mtime = _mtime(response.headers.get("Last-Modified"))
    except TransportError as exc:
        raise BuildError(f"fetching {url}: {exc}") from exc
    except OSError as exc:
        raise BuildError(f"fetching {url}: {exc.strerror or exc}") from exc
    digest = "sha256:" + sink.hexdigest()
    if checksum is not None and digest != checksum:
        raise BuildError(f"checksum mismatch for {url}: expected {checksum}, got {digest}")
    return Remote(url, file_name(url), target, digest, mtime)


__all__ = ["UNNAMED", "Remote", "check_flags", "fetch", "file_name", "is_git", "is_url"]
