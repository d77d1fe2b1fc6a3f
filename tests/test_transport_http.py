"""The HTTP transport against real servers (http.server) on 127.0.0.1: pooling, streaming, TLS, proxies."""

from __future__ import annotations

import gzip
import hashlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers.loopback import LoopbackServer
from helpers.registry import TLSFiles, free_port, make_tls
from lamina.transport import http as lhttp
from lamina.transport.http import (
    ConnectError,
    Headers,
    HttpTransport,
    ReadTimeout,
    RemoteProtocolError,
    Request,
    Response,
    TransportError,
    UnsupportedProtocol,
    parse_links,
    with_params,
)

Route = Callable[[BaseHTTPRequestHandler], None]
BIG = bytes(range(256)) * 4096  # 1 MiB


class Server:
    """``http.server`` on loopback (optionally TLS) answering with ``route``; counts connections."""

    def __init__(self, route: Route, tls: TLSFiles | None = None) -> None:
        self.route = route
        self.connections = 0
        self.request_lines: list[str] = []
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                server.connections += 1
                super().setup()

            def _serve(self) -> None:
                server.request_lines.append(self.requestline)
                server.route(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if tls else "http"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Server:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, with a Content-Length or chunked."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while size := int(handler.rfile.readline().strip(), 16):
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
        handler.rfile.readline()
        return b"".join(parts)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def echo(handler: BaseHTTPRequestHandler) -> None:
    body = read_body(handler)
    send(handler, 200, f"{handler.command} {handler.path} {len(body)} {hashlib.sha256(body).hexdigest()}".encode(),
         X_Transfer_Encoding=handler.headers.get("Transfer-Encoding", "-"),
         X_Content_Length=handler.headers.get("Content-Length", "-"))


@pytest.fixture
def transport() -> Iterator[HttpTransport]:
    with HttpTransport() as t:
        yield t


def test_keep_alive_reuses_one_connection(transport: HttpTransport) -> None:
    with Server(echo) as server:
        for i in range(5):
            response = transport.handle(Request("GET", server.url(f"/x{i}")))
            assert response.status_code == 200 and response.read().startswith(f"GET /x{i} 0".encode())
        assert server.connections == 1


def test_head_and_empty_bodies_keep_the_connection(transport: HttpTransport) -> None:
    with Server(echo) as server:
        assert transport.handle(Request("HEAD", server.url())).read() == b""
        assert transport.handle(Request("POST", server.url("/p"))).read().startswith(b"POST /p 0 ")
        assert transport.handle(Request("GET", server.url())).status_code == 200
        assert server.connections == 1


def test_a_connection_the_server_closed_is_not_reused(transport: HttpTransport) -> None:
    def close_after(handler: BaseHTTPRequestHandler) -> None:
        send(handler, 200, b"ok")
        handler.close_connection = True  # without saying so: the idle pooled connection goes stale

    with Server(close_after) as server:
        for _ in range(3):
            assert transport.handle(Request("GET", server.url())).read() == b"ok"
            time.sleep(0.05)
        assert server.connections == 3


@pytest.mark.parametrize("body", [None, b"data", [b"da", b"ta"]])
def test_a_stale_connection_missed_by_the_check_is_retried_once_on_a_fresh_one(
        transport: HttpTransport, monkeypatch: pytest.MonkeyPatch, body: bytes | list[bytes] | None) -> None:
    def close_after(handler: BaseHTTPRequestHandler) -> None:
        read_body(handler)
        send(handler, 200, b"ok")
        handler.close_connection = True

    monkeypatch.setattr(lhttp, "_dropped", lambda sock: False)  # as if the server closed it just now
    headers = {"Content-Length": "4"} if body is not None else {}
    with Server(close_after) as server:
        for _ in range(3):
            time.sleep(0.05)
            assert transport.handle(Request("PUT", server.url(), headers, body)).read() == b"ok"
        assert server.connections == 3


def test_a_streamed_upload_with_a_length_is_sent_as_is(transport: HttpTransport) -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(BIG), 100_000):
            sent.append(start)
            yield BIG[start:start + 100_000]

    with Server(echo) as server:
        response = transport.handle(Request("PUT", server.url("/up"), {"Content-Length": str(len(BIG))}, chunks()))
        assert response.read() == f"PUT /up {len(BIG)} {hashlib.sha256(BIG).hexdigest()}".encode()
        assert response.headers["x-transfer-encoding"] == "-" and len(sent) == 11
        chunked = transport.handle(Request("PATCH", server.url("/up"), body=iter([b"abc", b"def"])))
        assert chunked.read().startswith(b"PATCH /up 6 ")
        assert chunked.headers["X-Transfer-Encoding"] == "chunked"
        assert server.connections == 1


def test_an_error_in_the_body_source_propagates_and_drops_the_connection(transport: HttpTransport) -> None:
    def failing() -> Iterator[bytes]:
        yield b"abc"
        raise KeyError("the source broke")

    with Server(echo) as server:
        transport.handle(Request("GET", server.url())).read()
        with pytest.raises(KeyError):
            transport.handle(Request("PUT", server.url(), {"Content-Length": "10"}, failing()))
        assert transport.handle(Request("GET", server.url())).status_code == 200
        assert server.connections == 2


def test_a_streamed_download_releases_the_connection_at_its_end(transport: HttpTransport) -> None:
    with Server(lambda h: send(h, 200, BIG)) as server:
        response = transport.handle(Request("GET", server.url()), stream=True)
        sizes = [len(chunk) for chunk in response.iter_raw(65536)]
        assert sizes == [65536] * 16
        transport.handle(Request("GET", server.url())).read()
        assert server.connections == 1
        partial = transport.handle(Request("GET", server.url()), stream=True)
        next(partial.iter_raw(1024))
        partial.close()  # not read to the end: that connection cannot carry another request
        assert transport.handle(Request("GET", server.url())).read() == BIG
        assert server.connections == 2


def test_chunked_and_gzip_responses(transport: HttpTransport) -> None:
    packed = gzip.compress(BIG)

    def chunked(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Content-Encoding", "gzip")
        handler.end_headers()
        for start in range(0, len(packed), 1000):
            piece = packed[start:start + 1000]
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        handler.wfile.write(b"0\r\n\r\n")

    with Server(chunked) as server:
        assert transport.handle(Request("GET", server.url())).read() == BIG
        raw = transport.handle(Request("GET", server.url()), stream=True)
        assert b"".join(raw.iter_raw()) == packed
        assert server.connections == 1


def test_a_body_cut_short_is_a_protocol_error(transport: HttpTransport) -> None:
    def short(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        handler.wfile.write(b"x" * 40)
        handler.close_connection = True

    with Server(short) as server, pytest.raises(RemoteProtocolError, match="60 bytes before the end"):
        transport.handle(Request("GET", server.url()))


def test_read_timeout(transport: HttpTransport) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(0.5)
        send(handler, 200)

    with Server(slow) as server, pytest.raises(ReadTimeout):
        transport.handle(Request("GET", server.url(), timeout=0.1))


def test_threads_share_the_pool() -> None:
    with Server(echo) as server, HttpTransport() as transport:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(20):
                    body = f"{n}-{i}".encode()
                    answer = transport.handle(Request("PUT", server.url(f"/{n}"), body=body)).read()
                    assert answer == f"PUT /{n} {len(body)} {hashlib.sha256(body).hexdigest()}".encode()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and server.connections <= 4


def test_connection_errors(transport: HttpTransport) -> None:
    with pytest.raises(ConnectError, match="refused"):
        transport.handle(Request("GET", f"http://127.0.0.1:{free_port()}/"))
    with pytest.raises(UnsupportedProtocol, match="ftp"):
        transport.handle(Request("GET", "ftp://127.0.0.1/x"))
    assert issubclass(ConnectError, TransportError) and "\n" not in str(ConnectError("a\nb"))


# --- TLS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def test_tls_verified_with_a_ca_file(tls: TLSFiles) -> None:
    with Server(echo, tls) as server, HttpTransport(ca_file=tls.ca) as transport:
        for _ in range(3):
            assert transport.handle(Request("GET", server.url("/s"))).read().startswith(b"GET /s 0")
        assert server.connections == 1


def test_tls_checks_a_host_name(tls: TLSFiles) -> None:
    """SNI and the certificate's name check, with the host name handed to ssl as ASCII bytes."""
    with Server(echo, tls) as server, HttpTransport(ca_file=tls.ca) as transport:
        assert transport.handle(Request("GET", f"https://localhost:{server.port}/n")).read().startswith(b"GET /n 0")


def test_tls_refuses_an_unknown_ca_unless_told_not_to_verify(tls: TLSFiles) -> None:
    with Server(echo, tls) as server:
        with HttpTransport() as transport, pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            transport.handle(Request("GET", server.url()))
        with HttpTransport(verify=False) as transport:
            assert transport.handle(Request("GET", server.url())).status_code == 200


def test_tls_honours_ssl_cert_file(tls: TLSFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    with Server(echo, tls) as server, HttpTransport() as transport:
        assert transport.handle(Request("GET", server.url())).status_code == 200


def test_plain_http_makes_no_tls_context(transport: HttpTransport) -> None:
    with Server(echo) as server:
        transport.handle(Request("GET", server.url())).read()
    assert transport._tls is None


# --- proxies --------------------------------------------------------------------------


class Proxy(LoopbackServer):
    """A tiny forward proxy: absolute-form requests answered itself, CONNECT tunnelled to the target."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        super().__init__()

    def serve(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(4096)
                if not data:
                    return
                head += data
            line = head.split(b"\r\n", 1)[0].decode()
            self.seen.append(line)
            method, target, _ = line.split(" ")
            if method != "CONNECT":
                client.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(line)}\r\nConnection: close\r\n\r\n{line}"
                               .encode())
                return
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port))) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pipe(client, upstream)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    while True:
        readable, _, _ = select.select([a, b], [], [], 5)
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    running = Proxy()
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{running.port}")
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{running.port}")
    yield running
    running.close()


def test_plain_http_goes_through_the_proxy_in_absolute_form(proxy: Proxy, transport: HttpTransport) -> None:
    url = "http://registry.invalid:5000/v2/?n=1"
    assert transport.handle(Request("GET", url)).read() == f"GET {url} HTTP/1.1".encode()


def test_https_goes_through_a_connect_tunnel(proxy: Proxy, tls: TLSFiles) -> None:
    with Server(echo, tls) as server, HttpTransport(ca_file=tls.ca) as transport:
        for _ in range(2):
            assert transport.handle(Request("GET", server.url("/t"))).read().startswith(b"GET /t 0")
    assert proxy.seen == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.0"]


def test_no_proxy_is_honoured(proxy: Proxy, transport: HttpTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with Server(echo) as server:
        assert transport.handle(Request("GET", server.url("/direct"))).read().startswith(b"GET /direct 0")
    assert proxy.seen == []


def test_only_http_proxies_are_supported(monkeypatch: pytest.MonkeyPatch, transport: HttpTransport) -> None:
    monkeypatch.setenv("http_proxy", "socks5://127.0.0.1:1080")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(UnsupportedProtocol, match="socks5"):
        transport.handle(Request("GET", "http://example.invalid/"))


# --- pure helpers ---------------------------------------------------------------------


def test_headers_are_case_insensitive_and_join_repeats() -> None:
    headers = Headers([("WWW-Authenticate", 'Basic realm="a"'), ("www-authenticate", 'Bearer realm="b"')])
    assert headers["Www-Authenticate"] == 'Basic realm="a", Bearer realm="b"'
    assert "www-AUTHENTICATE" in headers and list(headers) == ["WWW-Authenticate"]
    assert Request("GET", "http://x/", {"X-A": "1"}).headers["x-a"] == "1"


def test_response_helpers() -> None:
    response = Response(502, headers={"Link": '</v2/a/tags/list?last=b&n=2>; rel="next"'}, content=b'{"a": 1}')
    assert response.reason_phrase == "Bad Gateway" and response.json() == {"a": 1} and not response.is_success
    assert response.links == {"next": {"url": "/v2/a/tags/list?last=b&n=2", "rel": "next"}}


@pytest.mark.parametrize(("value", "links"), [
    ("", []),
    ('<https://a/x>; rel="next", <https://a/y>; rel=last', [{"url": "https://a/x", "rel": "next"},
                                                             {"url": "https://a/y", "rel": "last"}]),
    ("</p?a=1,2>", [{"url": "/p?a=1,2"}]),
])
def test_parse_links(value: str, links: list[dict[str, str]]) -> None:
    assert parse_links(value) == links


@pytest.mark.parametrize(("url", "params", "out"), [
    ("https://r/u?_state=a%2Fb%3D%3D&x=1", {"digest": "sha256:1"}, "https://r/u?_state=a%2Fb%3D%3D&x=1&digest=sha256%3A1"),
    ("https://r/u?digest=old&k=v", {"digest": "new"}, "https://r/u?k=v&digest=new"),
    ("https://t/token", [("service", "s"), ("scope", "a"), ("scope", "b")], "https://t/token?service=s&scope=a&scope=b"),
    ("https://t/token", {}, "https://t/token"),
])
def test_with_params(url: str, params: dict[str, str] | list[tuple[str, str]], out: str) -> None:
    assert with_params(url, params) == out


def test_the_module_stays_light() -> None:
    """Neither httpx nor http.client (see test_transport_wire): what `lamina push` pays for at start-up."""
    import subprocess
    import sys

    code = "import sys, lamina.transport.registry.push; print(' '.join(sorted(sys.modules)))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env={"PYTHONPATH": str(Path(__file__).parents[1] / "src")}).stdout.split())
    assert "lamina.transport.http" in loaded
    assert not {"httpx", "httpcore", "h11", "urllib.request", "http.client", "ssl"} & loaded
