"""HTTP/1.1 framing over a socket: the client half of RFC 9112 that :mod:`lamina.transport.http` needs.

``http.client`` costs 22-30 ms to import (it parses headers with :mod:`email`,
which drags in ~15 modules, and imports :mod:`ssl`); this is the part of it
lamina uses, written over a plain socket so that a push of a tiny image does
not pay for the rest:

- requests: the request line, ``Host`` and ``Accept-Encoding: identity``
  unless given, ``Content-Length: 0`` for a PUT/POST/PATCH without a body,
  and an iterable body sent as is when it has a ``Content-Length``, else
  chunked (as ``http.client`` frames them);
- responses: the status line (interim 1xx answers skipped), headers in order
  with repeats kept (obsolete line folding joined), and the body by
  ``Content-Length``, chunked (trailers read and dropped) or up to the close;
  HEAD, 1xx, 204 and 304 answers have none.

A hostile server cannot make it buffer much: a status, header, chunk-size or
trailer line is at most 64 KiB and a head at most 100 headers, as in
``http.client``; past that, or on anything that is not HTTP/1.x, it raises
:class:`ProtocolError`. Socket errors and timeouts pass through as they are.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping

MAX_LINE = 64 * 1024  # a status, header, chunk-size or trailer line
MAX_HEADERS = 100
_RECV = 64 * 1024
_JOIN_BODY = 64 * 1024  # a bytes body up to this size goes out in the same send as the head
_BODY_METHODS = frozenset({"PATCH", "POST", "PUT"})  # sent ``Content-Length: 0`` without a body
_NOT_IN_TARGET = frozenset(chr(c) for c in [*range(0x21), 0x7F])


class ProtocolError(Exception):
    """The server answered with something that is not HTTP/1.x, or too much of it."""


class NoResponse(ProtocolError):
    """The connection closed before a status line came (on a pooled one: it had gone stale)."""


class ShortBody(ProtocolError):
    """The connection closed before the end of the body."""


class Head:
    """A response's status line and headers (in order, a repeated one once per line).

    A plain class: a dataclass costs its decorator's ``exec`` at import."""

    __slots__ = ("headers", "reason", "status", "version")

    def __init__(self, version: int, status: int, reason: str, headers: list[tuple[str, str]]) -> None:
        self.version = version  # 10 or 11
        self.status = status
        self.reason = reason
        self.headers = headers

    def get(self, name: str) -> str | None:
        """The header's values joined with ", " (None when absent)."""
        values = [value for key, value in self.headers if key.lower() == name]
        return ", ".join(values) if values else None

    def tokens(self, name: str) -> list[str]:
        """A comma-separated header's items, lower-cased: ``Connection: Keep-Alive`` → ``["keep-alive"]``."""
        return [item.strip().lower() for item in (self.get(name) or "").split(",") if item.strip()]


class Connection:
    """One connection: its socket and the bytes read ahead on it. ``sock`` is None once closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        self._buffer = bytearray()

    @property
    def buffered(self) -> bool:
        """Whether bytes the last response did not account for wait unread (the connection is then unusable)."""
        return bool(self._buffer)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self._buffer.clear()
        if sock is not None:
            sock.close()

    # --- sending ----------------------------------------------------------------------

    def send_request(self, method: str, target: str, headers: Mapping[str, str],
                     body: bytes | bytearray | memoryview | Iterable[bytes] | None, *, host: str) -> None:
        """Send the request line, the headers (with ``Host`` set to ``host`` unless given) and the body.

        Exceptions from an iterable ``body`` propagate; the connection is then unusable."""
        sock = self._socket()
        names = {name.lower() for name in headers}
        lines = [f"{method} {target} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {host}")
        if "accept-encoding" not in names:
            lines.append("Accept-Encoding: identity")
        if isinstance(body, bytes | bytearray | memoryview):
            data, pieces = bytes(body), None
        else:
            data, pieces = None, body
        chunked = False
        if "content-length" not in names and "transfer-encoding" not in names:
            if data is not None:
                lines.append(f"Content-Length: {len(data)}")
            elif pieces is not None:
                chunked = True
                lines.append("Transfer-Encoding: chunked")
            elif method.upper() in _BODY_METHODS:
                lines.append("Content-Length: 0")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        _check_head(method, target, lines)
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if data is not None and len(data) <= _JOIN_BODY:
            sock.sendall(head + data)
            return
        sock.sendall(head)
        if data is not None:
            sock.sendall(data)
        elif pieces is not None:
            for piece in pieces:
                if not piece:
                    continue  # an empty chunk would end a chunked body
                sock.sendall(b"%X\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")

    # --- reading ----------------------------------------------------------------------

    def read_head(self) -> Head:
        """The next final response's status line and headers (a 100 Continue or 103 before it skipped)."""
        while True:
            line = self.readline("status line")
            if not line:
                raise NoResponse("Remote end closed connection without response")
            version, status, reason = _status_line(line)
            headers = self._headers("header")
            if not 100 <= status < 200 or status == 101:
                return Head(version, status, reason, headers)

    def body(self, head: Head, method: str) -> Body:
        """A reader of ``head``'s body (``method`` is the request's: a HEAD's answer has none)."""
        return Body(self, head, method)

    def readline(self, what: str) -> bytes:
        """A line with its end (b"" at the end of the stream; the rest without one)."""
        start = 0
        while (end := self._buffer.find(b"\n", start)) < 0:
            if len(self._buffer) > MAX_LINE:
                raise ProtocolError(f"the server sent a {what} longer than {MAX_LINE} bytes")
            start = len(self._buffer)
            data = self._socket().recv(_RECV)
            if not data:
                end = len(self._buffer) - 1
                break
            self._buffer += data
        if end >= MAX_LINE:
            raise ProtocolError(f"the server sent a {what} longer than {MAX_LINE} bytes")
        line = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        return line

    def read(self, size: int) -> bytes:
        """``size`` bytes, fewer only at the end of the stream."""
        if len(self._buffer) >= size:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data
        out = bytearray(size)
        got = len(self._buffer)
        out[:got] = self._buffer
        self._buffer.clear()
        sock = self._socket()
        with memoryview(out) as view:
            while got < size and (n := sock.recv_into(view[got:])):
                got += n
        del out[got:]
        return bytes(out)

    def _headers(self, what: str) -> list[tuple[str, str]]:
        """Header (or trailer) lines up to the empty one; a folded line continues the one before."""
        headers: list[tuple[str, str]] = []
        while True:
            line = self.readline(f"{what} line")
            if line in (b"\r\n", b"\n", b""):
                return headers
            text = line.decode("latin-1").rstrip("\r\n")
            if text[:1] in (" ", "\t"):
                if headers:
                    name, value = headers[-1]
                    headers[-1] = (name, f"{value} {text.strip()}".strip())
                continue
            if len(headers) >= MAX_HEADERS:
                raise ProtocolError(f"the server sent more than {MAX_HEADERS} {what}s")
            name, colon, value = text.partition(":")
            if colon and name and name == name.strip():  # else not a header line: skipped
                headers.append((name, value.strip(" \t")))

    def _socket(self) -> socket.socket:
        if self.sock is None:
            raise OSError("the connection is closed")
        return self.sock


class Body:
    """A response body as it comes: by length, chunked, or up to the close of the connection."""

    def __init__(self, conn: Connection, head: Head, method: str) -> None:
        self._conn = conn
        self._chunk_left = 0  # of the current chunk; then its CRLF is read
        self._chunked = False
        self.remaining: int | None = None  # bytes still to come by Content-Length; None: chunked or to the close
        self.done = False
        connection = head.tokens("connection")
        if head.version == 11:
            self.will_close = "close" in connection
        else:
            self.will_close = "keep-alive" not in connection and head.get("keep-alive") is None
        if method.upper() == "HEAD" or head.status in (204, 304) or 100 <= head.status < 200:
            self.remaining = 0
        elif (coding := head.tokens("transfer-encoding")) and coding[-1] == "chunked":
            self._chunked = True
        elif not coding and (length := head.get("content-length")) is not None:
            self.remaining = _content_length(length)
        if self.remaining is None and not self._chunked:
            self.will_close = True  # the body ends where the connection does
        if self.remaining == 0:
            self.done = True

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at the end); b"" once the body was read to the end.

        Raises :class:`ShortBody` when the connection closes first (after handing over what
        came: a Content-Length body's last bytes, then the error at the next read)."""
        if self.done or size <= 0:
            return b""
        if self._chunked:
            return self._read_chunked(size)
        if self.remaining is None:
            data = self._conn.read(size)
            self.done = not data
            return data
        data = self._conn.read(min(size, self.remaining))
        self.remaining -= len(data)
        if not data:
            raise ShortBody(f"the server closed the connection {self.remaining} bytes before the end of the body")
        self.done = self.remaining == 0
        return data

    def _read_chunked(self, size: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < size:
            if self._chunk_left == 0:
                line = self._conn.readline("chunk size line")
                if not line:
                    raise ShortBody(f"the server closed the connection before the end of the body "
                                    f"({got} bytes of a chunk read)")
                self._chunk_left = _chunk_size(line)
                if self._chunk_left == 0:
                    self._conn._headers("trailer")
                    self.done = True
                    break
            want = min(size - got, self._chunk_left)
            data = self._conn.read(want)
            got += len(data)
            self._chunk_left -= len(data)
            parts.append(data)
            if len(data) < want:
                raise ShortBody(f"the server closed the connection before the end of the body "
                                f"({got} bytes of a chunk read)")
            if self._chunk_left == 0 and self._conn.readline("chunk end").strip():
                raise ProtocolError("the server sent a chunk longer than its size")
        return b"".join(parts)


def host_header(host: str, port: int, default_port: int) -> str:
    """``Host``'s value: the name (an IPv6 address in brackets) and the port unless it is the default."""
    name = f"[{host}]" if ":" in host else host
    return name if port == default_port else f"{name}:{port}"


def lookup_host(host: str) -> bytes:
    """``host`` as :func:`socket.getaddrinfo` takes it without importing the ``idna`` codec (~3 ms)
    when it is ASCII, as almost every name is."""
    try:
        return host.encode("ascii")
    except UnicodeEncodeError:
        return host.encode("idna")


def valid_target(target: str) -> bool:
    """Whether ``target`` can go in a request line: ASCII without spaces or control characters."""
    return target.isascii() and not any(c in _NOT_IN_TARGET for c in target)


def _status_line(line: bytes) -> tuple[int, int, str]:
    parts = line.decode("latin-1").rstrip("\r\n").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit() \
            or not 100 <= int(parts[1]) <= 999:
        raise ProtocolError(f"the server did not answer with an HTTP/1.x status line: {line[:200]!r}")
    version = 10 if parts[0] == "HTTP/1.0" else 11
    return version, int(parts[1]), parts[2].strip() if len(parts) > 2 else ""


def _content_length(value: str) -> int:
    """``Content-Length``'s value; repeats must agree (a mismatch could smuggle a second response)."""
    values = {item.strip() for item in value.split(",")}
    if len(values) != 1 or not (length := values.pop()).isdigit() or not length.isascii():
        raise ProtocolError(f"the server sent a bad Content-Length: {value[:100]!r}")
    return int(length)


def _chunk_size(line: bytes) -> int:
    size = line.partition(b";")[0].strip()  # extensions dropped
    if not size or size.translate(None, b"0123456789abcdefABCDEF"):
        raise ProtocolError(f"the server sent a bad chunk size line: {line[:100]!r}")
    return int(size, 16)


def _check_head(method: str, target: str, lines: list[str]) -> None:
    """Refuse what would let a value end the request line or a header early (header injection)."""
    if not method or not method.isascii() or any(c in _NOT_IN_TARGET for c in method):
        raise ValueError(f"invalid HTTP method {method!r}")
    if not valid_target(target):
        raise ValueError(f"URL can't contain control characters or non-ASCII ones: {target!r}")
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        if not name or any(c in name for c in " \t\r\n:") or "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"invalid header {line[:100]!r}")
