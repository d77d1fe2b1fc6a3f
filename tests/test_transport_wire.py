"""HTTP/1.1 framing (lamina.transport.wire) through HttpTransport, against a loopback server that answers
with scripted bytes: what http.server never sends (trailers, folding, bodies up to the close, hostile heads)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers.loopback import LoopbackServer
from lamina.transport import http as lhttp
from lamina.transport import wire
from lamina.transport.http import HttpTransport, RemoteProtocolError, Request, UnsupportedProtocol

Answer = Callable[[bytes], tuple[bytes | None, bool]]  # request → (raw answer or None for none, then close?)


class Scripted(LoopbackServer):
    """Loopback server: reads each request (head and body) and sends what ``answer`` returns."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        super().__init__()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, client: socket.socket) -> None:
        with client, client.makefile("rb") as rfile:
            while request := _read_request(rfile):
                self.requests.append(request)
                data, close = self.answer(request)
                if data is not None:
                    client.sendall(data)
                if close or data is None:
                    return

    def __enter__(self) -> Scripted:
        return self


def _read_request(rfile: object) -> bytes:
    """One request's bytes as sent (b"" when the client closed)."""
    readline = rfile.readline  # type: ignore[attr-defined]
    head = b""
    while (line := readline()) not in (b"\r\n", b""):
        head += line
    if not head:
        return b""
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        body = b""
        while True:
            size_line = readline()
            body += size_line
            size = int(size_line.strip(), 16)
            body += rfile.read(size + 2)  # type: ignore[attr-defined]
            if size == 0:
                break
        return head + b"\r\n" + body
    length = next((int(line.split(b":")[1]) for line in lowered.split(b"\r\n") if line.startswith(b"content-length:")), 0)
    return head + b"\r\n" + rfile.read(length)  # type: ignore[attr-defined]


def ok(body: bytes = b"ok", *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in extra)
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


@pytest.fixture
def transport() -> Iterator[HttpTransport]:
    with HttpTransport(timeout=5) as t:
        yield t


def get(transport: HttpTransport, server: Scripted, method: str = "GET", **kw: object) -> lhttp.Response:
    return transport.handle(Request(method, server.url(), **kw))  # type: ignore[arg-type]


# --- response bodies --------------------------------------------------------------------


def test_chunked_body_with_extensions_and_trailers_keeps_the_connection(transport: HttpTransport) -> None:
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;name=value\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nDigest: x\r\nOther: y\r\n\r\n")
    with Scripted(lambda _: (chunked, False)) as server:
        for _ in range(3):
            response = get(transport, server)
            assert response.read() == b"hello world" and "Digest" not in response.headers
        assert server.connections == 1


def test_chunked_body_streamed_in_small_pieces(transport: HttpTransport) -> None:
    data = bytes(range(256)) * 400
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        b"%x\r\n%s\r\n" % (len(data[i:i + 3000]), data[i:i + 3000]) for i in range(0, len(data), 3000)) + b"0\r\n\r\n"
    with Scripted(lambda _: (chunked, False)) as server:
        response = transport.handle(Request("GET", server.url()), stream=True)
        pieces = list(response.iter_raw(1000))
        assert b"".join(pieces) == data and {len(p) for p in pieces[:-1]} == {1000}
        assert get(transport, server).read() == data and server.connections == 1


def test_a_body_without_length_is_read_to_the_close(transport: HttpTransport) -> None:
    with Scripted(lambda _: (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 100_000, True)) as server:
        assert get(transport, server).read() == b"z" * 100_000
        assert get(transport, server).read() == b"z" * 100_000
        assert server.connections == 2  # such a connection is not reused


def test_http_1_0_closes_unless_kept_alive(transport: HttpTransport) -> None:
    with Scripted(lambda _: (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False)) as server:
        assert get(transport, server).read() == b"ok" and get(transport, server).read() == b"ok"
        assert server.connections == 2
    alive = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"
    with Scripted(lambda _: (alive, False)) as server:
        assert get(transport, server).read() == b"ok" and get(transport, server).read() == b"ok"
        assert server.connections == 1


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nDocker-Content-Digest: sha256:1\r\n\r\n",  # to a HEAD
    b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
])
def test_answers_without_a_body_keep_the_connection(transport: HttpTransport, answer: bytes) -> None:
    with Scripted(lambda _: (answer, False)) as server:
        for _ in range(2):
            response = get(transport, server, "HEAD")
            assert response.read() == b"" and response.status_code in (200, 204, 304)
        assert server.connections == 1
        if b"200" in answer:
            assert response.headers["content-length"] == "1000"
            assert response.headers["Docker-Content-Digest"] == "sha256:1"


def test_interim_answers_are_skipped(transport: HttpTransport) -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(b"done")
    with Scripted(lambda _: (answer, False)) as server:
        response = get(transport, server)
        assert (response.status_code, response.read(), "Link" in response.headers) == (200, b"done", False)


def test_headers_repeats_folding_and_reason(transport: HttpTransport) -> None:
    answer = (b"HTTP/1.1 401 Go Away Now\r\nWWW-Authenticate: Basic realm=\"a\"\r\n"
              b"Www-Authenticate: Bearer realm=\"b\"\r\nX-Folded: one\r\n  two\r\nLocation:  /v2/x  \r\n"
              b"Content-Length: 0\r\n\r\n")
    with Scripted(lambda _: (answer, False)) as server:
        response = get(transport, server)
    assert response.reason_phrase == "Go Away Now" and response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="a", Bearer realm="b"'
    assert response.headers["X-Folded"] == "one two" and response.headers["location"] == "/v2/x"


def test_a_reason_phrase_may_be_missing(transport: HttpTransport) -> None:
    with Scripted(lambda _: (b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", False)) as server:
        assert get(transport, server).reason_phrase == ""


def test_bytes_after_the_response_spoil_the_connection(transport: HttpTransport) -> None:
    with Scripted(lambda _: (ok(b"ok") + b"junk", False)) as server:
        assert get(transport, server).read() == b"ok" and get(transport, server).read() == b"ok"
        assert server.connections == 2


# --- bodies cut short and hostile servers ---------------------------------------------


def test_a_chunked_body_cut_short(transport: HttpTransport) -> None:
    cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n10\r\nabc"
    with Scripted(lambda _: (cut, True)) as server, \
            pytest.raises(RemoteProtocolError, match=r"closed the connection before the end of the body \(8 bytes"):
        get(transport, server)
    with Scripted(lambda _: (cut[:-9], True)) as server, pytest.raises(RemoteProtocolError, match="before the end"):
        get(transport, server)  # cut before the next chunk's size


def test_a_length_body_cut_short_streams_what_came_then_fails(transport: HttpTransport) -> None:
    with Scripted(lambda _: (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd", True)) as server:
        response = transport.handle(Request("GET", server.url()), stream=True)
        pieces = response.iter_raw(100)
        assert next(pieces) == b"abcd"
        with pytest.raises(RemoteProtocolError, match="closed the connection 6 bytes before the end of the body"):
            next(pieces)


@pytest.mark.parametrize(("answer", "message"), [
    (b"HTTP/1.1 200 " + b"x" * 70_000 + b"\r\n\r\n", "status line longer than 65536 bytes"),
    (b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n", "header line longer than 65536 bytes"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", "more than 100 headers"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 70_000, "chunk size line longer"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", "longer than its size"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "did not answer with an HTTP/1.x status line"),
    (b"HTTP/2 200\r\n\r\n", "did not answer with an HTTP/1.x status line"),
    (b"HTTP/1.1 20x OK\r\n\r\n", "did not answer with an HTTP/1.x status line"),
])
def test_hostile_answers_are_protocol_errors(transport: HttpTransport, answer: bytes, message: str) -> None:
    with Scripted(lambda _: (answer, True)) as server, pytest.raises(RemoteProtocolError, match=message):
        get(transport, server)


def test_no_answer_at_all(transport: HttpTransport) -> None:
    with Scripted(lambda _: (None, True)) as server, \
            pytest.raises(RemoteProtocolError, match="server disconnected without sending a response"):
        get(transport, server)


# --- pooled connections the server closed -----------------------------------------------


def test_a_pooled_connection_closed_by_the_server_is_replaced(transport: HttpTransport) -> None:
    with Scripted(lambda _: (ok(b"ok"), True)) as server:  # answers, then closes without saying so
        for _ in range(3):
            assert get(transport, server).read() == b"ok"
        assert server.connections == 3


def test_a_request_on_a_connection_closed_unseen_is_sent_again_once(
        transport: HttpTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    answered = 0

    def first_only(_: bytes) -> tuple[bytes | None, bool]:
        nonlocal answered
        answered += 1
        return (ok(b"ok"), False) if answered % 2 else (None, True)  # then reads the next request and hangs up

    monkeypatch.setattr(lhttp, "_dropped", lambda sock: False)
    with Scripted(first_only) as server:
        assert get(transport, server).read() == b"ok"
        assert get(transport, server, "PUT", body=b"data").read() == b"ok"  # retried on a new connection
        assert server.connections == 2 and server.requests[1] == server.requests[2]


def test_a_streamed_body_is_not_sent_twice(transport: HttpTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    answered = 0

    def first_only(_: bytes) -> tuple[bytes | None, bool]:
        nonlocal answered
        answered += 1
        return (ok(b"ok"), False) if answered == 1 else (None, True)

    monkeypatch.setattr(lhttp, "_dropped", lambda sock: False)
    with Scripted(first_only) as server:
        assert get(transport, server).read() == b"ok"
        with pytest.raises(RemoteProtocolError, match="without sending a response"):
            get(transport, server, "PUT", body=iter([b"da", b"ta"]))
        assert server.connections == 1


def test_a_proxy_refusing_the_tunnel_is_a_connect_error(
        transport: HttpTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    with Scripted(lambda _: (refusal, True)) as proxy:
        monkeypatch.setenv("https_proxy", f"http://user:pa%3Ass@127.0.0.1:{proxy.port}")
        with pytest.raises(lhttp.ConnectError, match="Tunnel connection failed: 407 Proxy Authentication Required"):
            transport.handle(Request("GET", "https://registry.invalid:5000/v2/"))
    assert proxy.requests == [b"CONNECT registry.invalid:5000 HTTP/1.0\r\n"
                              b"Proxy-Authorization: Basic dXNlcjpwYTpzcw==\r\n\r\n"]


# --- requests on the wire ------------------------------------------------------------------


def test_request_framing(transport: HttpTransport) -> None:
    with Scripted(lambda _: (ok(), False)) as server:
        get(transport, server, "PUT")
        get(transport, server, "PATCH", body=iter([b"abc", b"", b"defg"]), headers={"X-A": "1"})
        get(transport, server, "POST", body=bytearray(b"xyz"))
        get(transport, server, "GET", headers={"Host": "other.example", "Accept-Encoding": "gzip"})
    host = f"Host: 127.0.0.1:{server.port}"
    assert server.requests == [
        f"PUT / HTTP/1.1\r\n{host}\r\nAccept-Encoding: identity\r\nContent-Length: 0\r\n\r\n".encode(),
        f"PATCH / HTTP/1.1\r\n{host}\r\nAccept-Encoding: identity\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n".encode(),
        f"POST / HTTP/1.1\r\n{host}\r\nAccept-Encoding: identity\r\nContent-Length: 3\r\n\r\nxyz".encode(),
        b"GET / HTTP/1.1\r\nHost: other.example\r\nAccept-Encoding: gzip\r\n\r\n",
    ]


def test_what_could_inject_headers_is_refused(transport: HttpTransport) -> None:
    with Scripted(lambda _: (ok(), False)) as server:
        with pytest.raises(ValueError, match="invalid header"):
            get(transport, server, headers={"X-A": "1\r\nX-Injected: 2"})
        with pytest.raises(UnsupportedProtocol, match="control characters"):
            transport.handle(Request("GET", server.url("/a?b c")))
        assert get(transport, server).read() == b"ok"


def test_host_helpers() -> None:
    assert wire.host_header("::1", 443, 443) == "[::1]" and wire.host_header("r.io", 5000, 443) == "r.io:5000"
    assert wire.lookup_host("registry.example") == b"registry.example"
    assert wire.lookup_host("bücher.example") == b"xn--bcher-kva.example"


# --- import cost ---------------------------------------------------------------------------------


def test_importing_the_transport_loads_no_http_client() -> None:
    """What `lamina push` pays at start-up: no http.client (its email.* parsing), no ssl until https."""
    src = str(Path(__file__).parents[1] / "src")
    code = "import sys, lamina.transport.http; print(' '.join(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, sysconfig.get_paths()["purelib"]])}
    loaded = set(subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True,
                                env=env).stdout.split())
    assert "lamina.transport.http" in loaded
    heavy = {"http.client", "ssl", "urllib.request", "http.cookies", "calendar", "uu", "quopri", "json", "base64",
             "pathlib", "urllib.parse", "encodings.idna", "http"}
    assert not heavy & loaded and not {name for name in loaded if name.startswith("email")}
