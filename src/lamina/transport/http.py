"""HTTP/1.1 for the registry client and ADD's downloads, over a plain socket (:mod:`.wire`).

A :class:`Transport` turns a :class:`Request` into a :class:`Response`;
:class:`HttpTransport` is the real one. It is what lamina needs and no more:
keep-alive connections pooled per (scheme, host, port) and shared by threads,
streamed request bodies (sent as they are, or chunked when no
``Content-Length`` is given) and streamed responses, TLS through :mod:`ssl`,
and proxies from the environment. httpx did this before at a cost of
75-110 ms of imports per command, ``http.client`` at 22-30 ms (its
:mod:`email` header parsing and :mod:`ssl`); :mod:`.wire` frames the
messages itself, and this module imports :mod:`ssl` only for ``https``,
:mod:`urllib.parse` at the first request.

- A connection goes back to the pool only when its response was read to the
  end; one the server closed while it sat idle is noticed before reuse, and a
  request it fails on is sent once more on a fresh connection (when its body
  can be sent again).
- Timeouts: 15 s to connect, 60 s per read or write.
- TLS: a context is made at the first ``https`` request only (loading CAs
  costs 30-200 ms): ``ssl.create_default_context()`` with the system's CAs
  (``SSL_CERT_FILE`` works by itself), ``ca_file``'s, or none at all with
  ``verify=False``.
- Proxies: ``http_proxy``/``https_proxy``/``all_proxy`` and ``no_proxy`` as
  :mod:`urllib.request` reads them; plain HTTP goes through the proxy in
  absolute form, HTTPS through a ``CONNECT`` tunnel.
- Connection-level failures raise :class:`TransportError` subclasses, named
  like httpx's (``ConnectError``, ``ReadTimeout``…) with a one-line message;
  HTTP statuses are never errors here.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import field
from typing import TYPE_CHECKING, Any, Protocol

from lamina.model import model
from lamina.transport import wire

if TYPE_CHECKING:
    import ssl
    from pathlib import Path
    from urllib.parse import SplitResult

CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
MAX_IDLE = 8  # idle connections kept per (scheme, host, port)
_CHUNK = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/%:@!$&'()*+,;=~-._"
_PHRASES = {  # http.HTTPStatus's phrases, without building that enum (1-2 ms)
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints", 200: "OK", 201: "Created",
    202: "Accepted", 203: "Non-Authoritative Information", 204: "No Content", 205: "Reset Content",
    206: "Partial Content", 207: "Multi-Status", 208: "Already Reported", 226: "IM Used", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified", 305: "Use Proxy",
    307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict", 410: "Gone",
    411: "Length Required", 412: "Precondition Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Requested Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a Teapot", 421: "Misdirected Request", 422: "Unprocessable Entity",
    423: "Locked", 424: "Failed Dependency", 425: "Too Early", 426: "Upgrade Required",
    428: "Precondition Required", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    451: "Unavailable For Legal Reasons", 500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected", 510: "Not Extended",
    511: "Network Authentication Required",
}


class TransportError(Exception):
    """A request failed below HTTP: no connection, a dropped one, a timeout, a refused certificate."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()) or type(self).__name__)


class UnsupportedProtocol(TransportError):
    """A URL whose scheme is not ``http`` or ``https`` (or a proxy's that is not ``http``)."""


class ConnectError(TransportError):
    """The connection (TCP, the proxy's tunnel, or the TLS handshake) could not be made."""


class ConnectTimeout(ConnectError):
    pass


class ReadError(TransportError):
    """The connection broke while the response was being read."""


class ReadTimeout(ReadError):
    pass


class WriteError(TransportError):
    """The connection broke while the request was being sent (and no answer came)."""


class WriteTimeout(WriteError):
    pass


class RemoteProtocolError(TransportError):
    """The server closed the connection early or answered with something that is not HTTP/1.x."""


class Headers(Mapping[str, str]):
    """Header names are case-insensitive; a repeated header reads as one comma-joined value."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            key = name.lower()
            if key in self._items:
                name, value = self._items[key][0], f"{self._items[key][1]}, {value}"
            self._items[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@model
class Request:
    """One request. ``body`` bytes are sent with their length; an iterable is streamed (give
    ``Content-Length`` to send it as is, else it goes chunked). ``timeout`` overrides the
    transport's timeouts (connect and read) for this request."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=Headers)  # made a Headers
    body: bytes | Iterable[bytes] | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(self.headers))

    @property
    def parts(self) -> SplitResult:
        """The URL split (``urllib.parse.SplitResult``: ``hostname``, ``path``, ``query``…)."""
        from urllib.parse import urlsplit

        return urlsplit(self.url)


class _Source(Protocol):
    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


class Response:
    """A response: status and headers at once, the body read once, whole or in chunks.

    ``read``/``json``/``content`` give the body decoded (``gzip`` and ``deflate``
    content encodings undone), ``iter_raw`` the bytes as sent. Reading to the
    end, or :meth:`close`, releases the connection.
    """

    def __init__(self, status_code: int, *, headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
                 content: bytes = b"", url: str = "", reason_phrase: str | None = None,
                 source: _Source | None = None) -> None:
        self.status_code = status_code
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.url = url
        self.reason_phrase = _PHRASES.get(status_code, "") if reason_phrase is None else reason_phrase
        self._raw: bytes | None = None if source is not None else content
        self._source = source
        self._decoded: bytes | None = None
        self._consumed = False

    def __repr__(self) -> str:
        return f"<Response [{self.status_code} {self.reason_phrase}]>"

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def iter_raw(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The body as it came over the wire, in pieces of ``chunk_size`` (the last one shorter)."""
        if self._raw is not None:
            for start in range(0, len(self._raw), chunk_size):
                yield self._raw[start:start + chunk_size]
            return
        if self._consumed:
            raise RuntimeError("the response body was already read")
        self._consumed = True
        assert self._source is not None
        try:
            while data := self._source.read(chunk_size):
                yield data
        finally:
            self._source.close()

    def iter_bytes(self, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The body with its ``Content-Encoding`` (gzip, deflate) undone."""
        decoder = _decoder(self.headers.get("Content-Encoding", ""))
        if decoder is None:
            yield from self.iter_raw(chunk_size)
            return
        for data in self.iter_raw(chunk_size):
            if out := decoder.decompress(data):
                yield out
        if out := decoder.flush():
            yield out

    def read(self) -> bytes:
        """The whole (decoded) body; kept, so it can be asked for again."""
        if self._decoded is None:
            self._decoded = b"".join(self.iter_bytes())
        return self._decoded

    @property
    def content(self) -> bytes:
        return self.read()

    def json(self) -> Any:
        import json

        return json.loads(self.read())

    @property
    def links(self) -> dict[str, dict[str, str]]:
        """The ``Link`` header by ``rel`` (else by URL): ``{"next": {"url": "/v2/…", "rel": "next"}}``."""
        return {link.get("rel") or link["url"]: link for link in parse_links(self.headers.get("Link", ""))}

    def close(self) -> None:
        if self._source is not None:
            self._source.close()


class Transport(Protocol):
    """What sends requests: :class:`HttpTransport`, or a function in tests.

    With ``stream=False`` the body is read before ``handle`` returns; with
    ``stream=True`` the caller reads it or closes the response.
    """

    def handle(self, request: Request, *, stream: bool = False) -> Response: ...

    def close(self) -> None: ...


def parse_links(value: str) -> list[dict[str, str]]:
    """RFC 8288 ``Link`` values: ``<url>; rel="next", <url2>; rel=last`` → ``[{"url": …, "rel": …}]``."""
    import re

    links = []
    for entry in re.finditer(r"<([^>]*)>([^,<]*)", value):
        link = {"url": entry.group(1).strip()}
        for param in entry.group(2).split(";"):
            name, sep, val = param.partition("=")
            if sep:
                link[name.strip().lower()] = val.strip().strip("'\"")
        links.append(link)
    return links


def with_params(url: str, params: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
    """``url`` with ``params`` added to its query; a name it already has is replaced, the rest of
    its query (a registry's ``_state``, say) is kept byte for byte."""
    from urllib.parse import unquote_plus, urlencode

    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    if not pairs:
        return url
    names = {name for name, _ in pairs}
    head, _, fragment = url.partition("#")
    path, _, query = head.partition("?")
    kept = [p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) not in names]
    return f"{path}?{'&'.join([*kept, urlencode(pairs)])}" + (f"#{fragment}" if fragment else "")


def _decoder(encoding: str) -> Any:
    """A zlib decompressor for ``gzip``/``deflate``, None for identity or anything unknown."""
    name = encoding.strip().lower()
    if name in ("gzip", "x-gzip", "deflate"):
        import zlib

        return zlib.decompressobj(32 + zlib.MAX_WBITS if name != "deflate" else zlib.MAX_WBITS)
    return None


@model
class _Proxy:
    host: str
    port: int
    authorization: str | None


class HttpTransport:
    """:class:`Transport` over :mod:`.wire`; thread-safe (connections are pooled, each used by
    one request at a time)."""

    def __init__(self, *, verify: bool = True, ca_file: str | Path | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, timeout: float = READ_TIMEOUT) -> None:
        self.verify = verify
        self.ca_file = ca_file
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._idle: dict[tuple[str, str, int], list[wire.Connection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    def handle(self, request: Request, *, stream: bool = False) -> Response:
        from urllib.parse import quote, urlsplit

        parts = urlsplit(request.url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise UnsupportedProtocol(f"unsupported URL scheme {scheme + '://' if scheme else ''!r} in {request.url}")
        try:
            host, port = parts.hostname, parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise UnsupportedProtocol(f"invalid URL {request.url}: {exc}") from exc
        if not host:
            raise UnsupportedProtocol(f"no host in URL {request.url}")
        proxy = _proxy_for(scheme, host)
        target = request.url.partition("#")[0] if proxy is not None and scheme == "http" else \
            (quote(parts.path, safe=_PATH_SAFE) or "/") + (f"?{parts.query}" if parts.query else "")
        if not wire.valid_target(target):
            raise UnsupportedProtocol(f"URL can't contain control characters or non-ASCII ones: {target!r}")
        headers = dict(request.headers.items())
        if proxy is not None and scheme == "http" and proxy.authorization:
            headers["Proxy-Authorization"] = proxy.authorization
        replayable = request.body is None or isinstance(request.body, bytes | bytearray | list | tuple)
        key = (scheme, host, port)
        fresh = False
        while True:
            conn, reused = self._checkout(key, proxy, request.timeout, fresh=fresh)
            try:
                head, reader = self._exchange(conn, request, target, headers,
                                              wire.host_header(host, port, _DEFAULT_PORTS[scheme]),
                                              reused=reused and replayable)
            except _Stale:
                fresh = True  # the server had closed that idle connection: once more on a new one
                continue
            except BaseException:
                conn.close()
                raise
            break
        body = _Body(self, key, conn, reader)
        response = Response(head.status, headers=head.headers, url=request.url, reason_phrase=head.reason,
                            source=body)
        if not stream:
            try:
                response.read()
            finally:
                response.close()
        return response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exchange(self, conn: wire.Connection, request: Request, target: str, headers: dict[str, str],
                  host: str, *, reused: bool) -> tuple[wire.Head, wire.Body]:
        """Send; read the status line and headers, and see how the body is framed."""
        assert conn.sock is not None
        conn.sock.settimeout(request.timeout or self.timeout)
        failed: TransportError | None = None
        try:
            conn.send_request(request.method, target, headers, request.body, host=host)
        except TimeoutError as exc:
            raise WriteTimeout(f"sending the request timed out: {exc}") from exc
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
            if reused:
                conn.close()
                raise _Stale from exc
            failed = WriteError(str(exc))  # the server may have answered first (a 401, a 413): see below
        except OSError as exc:
            raise WriteError(str(exc)) from exc
        try:
            head = conn.read_head()
            return head, conn.body(head, request.method)
        except TimeoutError as exc:
            raise ReadTimeout(f"no answer within {request.timeout or self.timeout:g} s") from exc
        except (wire.NoResponse, ConnectionResetError, ConnectionAbortedError) as exc:
            if reused and failed is None:
                conn.close()
                raise _Stale from exc
            if failed is not None:
                raise failed from exc
            raise RemoteProtocolError(f"server disconnected without sending a response ({exc})") from exc
        except (wire.ProtocolError, OSError) as exc:
            if failed is not None:
                raise failed from exc
            raise (ReadError if isinstance(exc, OSError) else RemoteProtocolError)(_reason(exc)) from exc

    def _checkout(self, key: tuple[str, str, int], proxy: _Proxy | None, timeout: float | None, *,
                  fresh: bool = False) -> tuple[wire.Connection, bool]:
        """An idle connection still open (unless ``fresh``), or a new one; and whether it was reused."""
        while True:
            with self._lock:
                idle = None if fresh else self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._connect(*key, proxy, timeout or self.connect_timeout), False
            if conn.sock is not None and not _dropped(conn.sock):
                return conn, True
            conn.close()

    def _release(self, key: tuple[str, str, int], conn: wire.Connection, reusable: bool) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if reusable and not self._closed and conn.sock is not None and not conn.buffered \
                    and len(idle) < MAX_IDLE:
                idle.append(conn)
                return
        conn.close()

    def _connect(self, scheme: str, host: str, port: int, proxy: _Proxy | None, timeout: float) -> wire.Connection:
        """A new connection (through the proxy's tunnel for ``https``, then TLS); timed out after ``timeout``."""
        where = (proxy.host, proxy.port) if proxy is not None else (host, port)
        sock: socket.socket | None = None
        try:
            # a bytes host: getaddrinfo takes it as it is (typeshed says str only)
            sock = socket.create_connection((wire.lookup_host(where[0]), where[1]), timeout)  # type: ignore[arg-type]
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request's head and body in one go
            if scheme == "https":
                if proxy is not None:
                    _tunnel(sock, host, port, proxy.authorization)
                sock = self._context().wrap_socket(sock, server_hostname=wire.lookup_host(host))
        except TimeoutError as exc:
            if sock is not None:
                sock.close()
            raise ConnectTimeout(f"connecting to {_netloc(*where)} timed out") from exc
        except (OSError, wire.ProtocolError) as exc:
            if sock is not None:
                sock.close()
            raise ConnectError(_reason(exc)) from exc
        return wire.Connection(sock)

    def _context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                self._tls = tls_context(verify=self.verify, ca_file=self.ca_file)
            return self._tls


def tls_context(*, verify: bool = True, ca_file: str | Path | None = None) -> ssl.SSLContext:
    """The client TLS context: the system's CAs (or ``ca_file``'s), or no verification at all."""
    import ssl

    if verify:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def _tunnel(sock: socket.socket, host: str, port: int, authorization: str | None) -> None:
    """Ask the proxy on ``sock`` for a tunnel to ``host:port`` (``CONNECT``, HTTP/1.0 as http.client asks)."""
    lines = [f"CONNECT {_netloc(host, port)} HTTP/1.0"]
    if authorization:
        lines.append(f"Proxy-Authorization: {authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    conn = wire.Connection(sock)
    head = conn.read_head()
    if head.status != 200:
        raise OSError(f"Tunnel connection failed: {head.status} {head.reason}".strip())
    if conn.buffered:
        raise wire.ProtocolError("the proxy sent more than its answer to CONNECT")


class _Stale(Exception):
    """A reused connection turned out closed before any answer: the request may be sent again."""


class _Body:
    """A response body on its connection; hands the connection back once it was read to the end."""

    def __init__(self, transport: HttpTransport, key: tuple[str, str, int], conn: wire.Connection,
                 body: wire.Body) -> None:
        self._transport, self._key, self._body = transport, key, body
        self._conn: wire.Connection | None = conn
        if body.done:  # nothing to read (HEAD, 204, 304, an empty body): the connection is free now
            self._done(not body.will_close)

    def read(self, size: int) -> bytes:
        if self._conn is None:
            return b""
        try:
            data = self._body.read(size)
        except TimeoutError as exc:
            self._done(False)
            raise ReadTimeout(f"reading the response timed out after {self._transport.timeout:g} s") from exc
        except (OSError, wire.ProtocolError) as exc:
            self._done(False)
            raise (ReadError if isinstance(exc, OSError) else RemoteProtocolError)(_reason(exc)) from exc
        if self._body.done:
            self._done(not self._body.will_close)
        return data

    def close(self) -> None:
        if self._conn is not None:
            self._done(False)

    def _done(self, reusable: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._transport._release(self._key, conn, reusable)


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle connection is readable: the server closed it (or sent what it should not)."""
    try:
        poller = select.poll()  # not select.select: it fails on descriptors above 1023
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _proxy_for(scheme: str, host: str) -> _Proxy | None:
    """The environment's proxy for ``scheme`` unless ``no_proxy`` covers ``host``."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None  # spares importing urllib.request when no proxy is set (the usual case)
    import urllib.request

    proxies = urllib.request.getproxies()
    url = proxies.get(scheme) or proxies.get("all")
    if not url or urllib.request.proxy_bypass(host):
        return None
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise UnsupportedProtocol(f"unsupported proxy {url!r}: only http:// proxies are supported")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        import base64

        authorization = "Basic " + base64.b64encode(pair).decode()
    return _Proxy(parts.hostname, parts.port or 80, authorization)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


__all__ = ["CONNECT_TIMEOUT", "READ_TIMEOUT", "ConnectError", "ConnectTimeout", "Headers", "HttpTransport",
           "ReadError", "ReadTimeout", "RemoteProtocolError", "Request", "Response", "Transport", "TransportError",
           "UnsupportedProtocol", "WriteError", "WriteTimeout", "parse_links", "tls_context", "with_params"]
