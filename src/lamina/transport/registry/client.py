"""One registry host over HTTP: base URL, TLS, auth, retries, redirects, errors.

:class:`RegistryClient` knows the distribution API's transport rules and
nothing of images: ``pull`` and ``push`` say which endpoint to call.

- ``https://`` always, except plain ``http://`` for loopback hosts and hosts
  marked insecure (docker's rule for ``localhost:5000``); ``docker.io`` is
  served by ``registry-1.docker.io``.
- Idempotent requests (GET, HEAD, PUT) are retried with exponential backoff
  on connection errors, 429 and 5xx, a bounded number of times.
- A 401 with a challenge is answered (see :mod:`.auth`) and the request sent
  once more.
- Redirects are followed only where asked (blob downloads), and the
  ``Authorization`` header is never sent to another origin.
- Errors are one line: what we were doing, then the registry's own
  ``errors[].code``/``message``.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from lamina.errors import AuthError, RegistryError
from lamina.oci import mediatype as mt
from lamina.transport.credentials import CredentialStore
from lamina.transport.http import (
    HttpTransport,
    Request,
    Response,
    Transport,
    TransportError,
    UnsupportedProtocol,
    with_params,
)
from lamina.transport.registry.scope import Scope

if TYPE_CHECKING:
    from lamina.transport.registry.auth import Authenticator

DOCKER_HUB_API = "registry-1.docker.io"
MANIFEST_ACCEPT = ", ".join((mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST))
USER_AGENT = "lamina/0.1"
DEFAULT_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
_MAX_DELAY = 10.0

# A request body: bytes, or a function giving a fresh iterable per attempt (so streamed
# uploads can be retried without holding the blob in memory).
Body = bytes | Callable[[], Iterable[bytes]] | None


def is_loopback(domain: str) -> bool:
    """Whether ``domain`` (maybe with a port) is this machine: 127.0.0.0/8, ::1, localhost."""
    host = domain
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(domain: str, insecure: bool | None = None) -> str:
    """The API root for ``domain``; ``insecure=None`` means plain HTTP for loopback only."""
    host = DOCKER_HUB_API if domain in ("docker.io", "index.docker.io") else domain
    plain = is_loopback(domain) if insecure is None else insecure
    return f"{'http' if plain else 'https'}://{host}"


class RegistryClient:
    """An HTTP session with one registry; thread-safe, so transfers can run in parallel.

    ``credentials`` are consulted only when the registry challenges. Use as a
    context manager, or call :meth:`close`, to release pooled connections.
    ``on_request`` is called with every request sent, token requests included
    (tests count round trips with it).
    """

    def __init__(self, domain: str, *, credentials: CredentialStore | None = None,
                 insecure: bool | None = None, ca_file: str | Path | None = None,
                 transport: Transport | None = None, tries: int = 4, backoff: float = 0.5,
                 timeout: float = 60.0, on_request: Callable[[Request], None] | None = None) -> None:
        self.domain = domain
        self.base_url = base_url(domain, insecure)
        self._tries = max(1, tries)
        self._backoff = backoff
        # its TLS context is made at the first https request: a loopback registry never needs one
        self.http: Transport = transport if transport is not None else HttpTransport(ca_file=ca_file, timeout=timeout)
        self._on_request = on_request
        self._credentials = credentials
        self._auth_lock = threading.Lock()
        self._auth: Authenticator | None = None  # made at the first challenge: most local registries never send one

    @property
    def auth(self) -> Authenticator:
        """The session's :class:`~.auth.Authenticator` (its tokens and Basic credentials)."""
        with self._auth_lock:  # transfers run in threads: two first 401s must share one
            if self._auth is None:
                from lamina.transport.registry.auth import Authenticator

                credentials, domain = self._credentials, self.domain
                lookup = (lambda: credentials.get(domain)) if credentials is not None else None
                self._auth = Authenticator(lookup, self._send_token_request, registry=domain)
            return self._auth

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        """Resolve an API path or a ``Location`` header (relative or absolute) against the base."""
        return urljoin(self.base_url, path)

    def request(self, method: str, path: str, *, scope: Scope, what: str,
                headers: Mapping[str, str] | None = None, body: Body = None,
                params: Mapping[str, str] | None = None, stream: bool = False,
                retry: bool | None = None, follow_redirects: bool = False) -> Response:
        """Send with auth and retries; returns the final response whatever its status.

        A ``stream=True`` response with status < 400 is open and the caller
        must close it; error responses always come back read and closed.
        """
        tries = self._tries if (method in IDEMPOTENT if retry is None else retry) else 1
        for attempt in range(tries):
            last = attempt == tries - 1
            try:
                response = self._send_authed(method, self.url(path), scope, headers or {}, body,
                                             params, stream, follow_redirects)
            except TransportError as exc:
                if last or not _retryable(exc):
                    raise RegistryError(f"{what}: {self.domain}: {_describe(exc)}") from exc
                self._pause(attempt, None)
                continue
            if response.status_code in RETRY_STATUSES and not last:
                response.close()
                self._pause(attempt, response.headers.get("Retry-After"))
                continue
            if stream and response.status_code >= 400:
                response.read()
                response.close()
            return response
        raise AssertionError("unreachable")

    def _send_authed(self, method: str, url: str, scope: Scope, headers: Mapping[str, str],
                     body: Body, params: Mapping[str, str] | None, stream: bool,
                     follow: bool) -> Response:
        sent = self._auth.header(scope) if self._auth is not None else None
        response = self._send(method, url, sent, headers, body, params, stream, follow)
        challenge = response.headers.get("WWW-Authenticate")
        if response.status_code != 401 or not challenge or not self.auth.challenge(challenge, scope, sent):
            return response
        response.close()
        return self._send(method, url, self.auth.header(scope), headers, body, params, stream, follow)

    def _send(self, method: str, url: str, auth: str | None, headers: Mapping[str, str],
              body: Body, params: Mapping[str, str] | None, stream: bool, follow: bool) -> Response:
        content = body() if callable(body) else body
        sent = _headers(headers, auth)
        if params:  # merged into the URL's own query: a Location's ``_state`` must survive
            url = with_params(url, params)
        request = Request(method, url, sent, content)
        for _ in range(MAX_REDIRECTS):
            response = self._handle(request, stream)
            location = response.headers.get("Location")
            if not follow or response.status_code not in REDIRECTS or not location:
                return response
            response.close()
            target = urljoin(request.url, location)
            if _origin(target) != _origin(self.base_url):
                sent.pop("Authorization", None)  # a CDN or object store must not see our token
            request = Request(method if method == "HEAD" else "GET", target, sent)
        raise RegistryError(f"{method} {urlsplit(url).path}: more than {MAX_REDIRECTS} redirects")

    def _handle(self, request: Request, stream: bool = False) -> Response:
        if self._on_request is not None:
            self._on_request(request)
        return self.http.handle(request, stream=stream)

    def _send_token_request(self, request: Request) -> Response:
        """Token requests share the session's TLS settings and retries."""
        request = Request(request.method, request.url, _headers(request.headers, None), request.body)
        for attempt in range(self._tries):
            try:
                response = self._handle(request)
            except TransportError as exc:
                if attempt == self._tries - 1 or not _retryable(exc):
                    host = urlsplit(request.url).hostname
                    raise AuthError(f"{self.domain}: token server {host}: {_describe(exc)}") from exc
            else:
                if response.status_code not in RETRY_STATUSES or attempt == self._tries - 1:
                    return response
            self._pause(attempt, None)
        raise AssertionError("unreachable")

    def _pause(self, attempt: int, retry_after: str | None) -> None:
        delay = self._backoff * (2 ** attempt)
        if retry_after and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(min(delay, _MAX_DELAY))


def _headers(given: Mapping[str, str], auth: str | None) -> dict[str, str]:
    """The session's default headers, overridden by ``given`` whatever their case, and ``auth``."""
    names = {name.lower() for name in given}
    sent = {name: value for name, value in DEFAULT_HEADERS.items() if name.lower() not in names}
    sent.update(given)
    if auth:
        sent["Authorization"] = auth
    return sent


def response_error(response: Response, what: str, *, unknown: str | None = None) -> RegistryError:
    """A one-line error for a failed response: ``what`` we did, ``unknown`` for a 404's subject.

    ``unknown`` reads like ``manifest unknown: app:v1`` or ``blob unknown: sha256:…``.
    """
    status = response.status_code
    codes, detail = registry_errors(response)
    code = codes[0] if codes else None
    suffix = f" ({detail})" if detail else ""
    if status == 401 and (refused := _insufficient_scope(response)) is not None:
        # an accepted token that lacks the access: distribution's body says "authentication required"
        return AuthError(f"{what}: denied: requested access to the resource is denied ({refused} not granted)",
                         status=status, code=code)
    if status in (401, 403):
        word = "unauthorized" if status == 401 else "denied"
        return AuthError(f"{what}: {word}{suffix}", status=status, code=code)
    if status == 404 and unknown:
        return RegistryError(f"{what}: {unknown}{suffix}", status=status, code=code)
    reason = response.reason_phrase or ""
    return RegistryError(f"{what}: HTTP {status} {reason}".rstrip() + suffix, status=status, code=code)


def _insufficient_scope(response: Response) -> str | None:
    """The scope a Bearer ``insufficient_scope`` challenge names (``"access"`` without one), else None."""
    from lamina.transport.registry.auth import insufficient_scope, parse_challenges

    for challenge in parse_challenges(response.headers.get("WWW-Authenticate", "")):
        if insufficient_scope(challenge):
            return _sorted_actions(challenge.params.get("scope") or "access")
    return None


def _sorted_actions(scope: str) -> str:
    """``repository:x:push,pull`` → ``repository:x:pull,push``: registries list actions in any order."""
    parts = []
    for one in scope.split():
        head, sep, actions = one.rpartition(":")
        parts.append(f"{head}{sep}{','.join(sorted(actions.split(',')))}" if sep else one)
    return " ".join(parts)


def registry_errors(response: Response) -> tuple[tuple[str, ...], str]:
    """The ``errors[].code`` list and a short ``CODE: message; …`` text from an error body."""
    try:
        doc = response.json()
        errors = doc.get("errors") or []
        pairs = [(str(e.get("code") or "UNKNOWN"), str(e.get("message") or "")) for e in errors]
    except (ValueError, AttributeError, TypeError, TransportError):
        return (), ""
    text = "; ".join(f"{c}: {m}" if m else c for c, m in pairs)
    text = " ".join(text.split())  # one line, whatever the registry put in
    return tuple(c for c, _ in pairs), (text[:300] + "…" if len(text) > 300 else text)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, parts.hostname, parts.port or default


def _retryable(exc: TransportError) -> bool:
    """Connection trouble is worth a retry; a certificate the client rejects is not."""
    return "CERTIFICATE_VERIFY_FAILED" not in str(exc) and not isinstance(exc, UnsupportedProtocol)


def _describe(exc: TransportError) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


__all__ = ["MANIFEST_ACCEPT", "Body", "RegistryClient", "base_url", "is_loopback", "registry_errors",
           "response_error"]
