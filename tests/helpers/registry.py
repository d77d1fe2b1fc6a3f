"""Registries for tests: the real CNCF distribution binary, and a scriptable fake.

``running_registry(tmp_path)`` starts Debian's ``docker-registry`` (installed
with apt when missing) on a free loopback port, optionally with htpasswd auth
over TLS (a throwaway CA made with ``cryptography``) or behind a Bearer token
service (``token=``, see :mod:`helpers.tokenserver`), and stops it afterwards.
``FakeRegistry`` is an ``http.server`` on loopback that answers with a plain
function, for the cases a real registry will not produce (wrong bytes, 500s,
Bearer challenges). ``make_image`` builds a small image straight into a store.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import io
import ipaddress
import json
import re
import shutil
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from lamina.image.image import Layer, append_layer, scratch
from lamina.image.layerio import LayerSink
from lamina.oci import mediatype as mt
from lamina.oci.config import History
from lamina.oci.descriptor import Descriptor, Platform
from lamina.store.store import Store, StoredImage

if TYPE_CHECKING:
    from helpers.tokenserver import TokenServer

REGISTRY_BIN = "/usr/bin/docker-registry"


# --- the real registry ----------------------------------------------------------


def ensure_tool(path: str, package: str) -> bool:
    """Whether ``path`` exists, installing ``package`` with apt first if it does not."""
    if Path(path).exists():
        return True
    if shutil.which("apt-get") is None:
        return False
    subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True, timeout=600, check=False)
    return Path(path).exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningRegistry:
    host: str  # 127.0.0.1:PORT, as a reference's domain
    root: Path
    process: subprocess.Popen[bytes]
    ca_file: Path | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path, host: str = "127.0.0.1") -> TLSFiles:
    """A throwaway CA and a server certificate for ``host`` (an IP) and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
             ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                            critical=True)
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            names = [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                                            critical=False)
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                                            critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("lamina test CA", ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lamina test CA")]),
                   ca_key, True)
    server = cert(host, key, ca_cert.subject, ca_key, False)
    files = TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


def _config(root: Path, port: int, tls: TLSFiles | None, htpasswd: Path | None,
            token: TokenServer | None = None) -> str:
    # behind a token service the access log is on: tests count uploads in registry.log (access_log)
    lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", f"    disabled: {str(token is None).lower()}",
             "storage:", "  filesystem:", f"    rootdirectory: {root / 'data'}", "  delete:", "    enabled: true",
             "http:", f"  addr: 127.0.0.1:{port}", "  secret: lamina-test-secret"]
    if tls:
        lines += ["  tls:", f"    certificate: {tls.cert}", f"    key: {tls.key}"]
    if htpasswd:
        lines += ["auth:", "  htpasswd:", "    realm: lamina-test", f"    path: {htpasswd}"]
    elif token:
        lines += ["auth:", "  token:", f"    realm: {token.realm}", f"    service: {token.service}",
                  f"    issuer: {token.issuer}", f"    rootcertbundle: {token.rootcertbundle}"]
    return "\n".join(lines) + "\n"


def _htpasswd(path: Path, users: Mapping[str, str]) -> None:
    entries = []
    for user, password in users.items():
        out = subprocess.run(["htpasswd", "-nbB", "-C", "4", user, password], capture_output=True, check=True)
        entries.append(out.stdout.decode().strip())
    path.write_text("\n".join(entries) + "\n")


def start_registry(workdir: Path, *, users: Mapping[str, str] | None = None,
                   token: TokenServer | None = None) -> RunningRegistry:
    """Start distribution on loopback; with ``users``, htpasswd auth over TLS (it requires TLS);
    with ``token``, Bearer auth by that token service (plain HTTP, as loopback allows)."""
    if not ensure_tool(REGISTRY_BIN, "docker-registry"):
        raise RuntimeError("docker-registry is not installed and apt could not install it")
    workdir.mkdir(parents=True, exist_ok=True)
    tls = htpasswd = None
    if users:
        if not ensure_tool("/usr/bin/htpasswd", "apache2-utils"):
            raise RuntimeError("htpasswd (apache2-utils) is not available")
        tls, htpasswd = make_tls(workdir), workdir / "htpasswd"
        _htpasswd(htpasswd, users)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(_config(workdir, port, tls, htpasswd, token))
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - the child writes to it
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    running = RunningRegistry(f"127.0.0.1:{port}", workdir, process, tls.ca if tls else None)
    try:
        _wait_ready(running, workdir / "registry.log")
    except BaseException:
        running.stop()
        raise
    return running


def _wait_ready(reg: RunningRegistry, log: Path, timeout: float = 15.0) -> None:
    scheme = "https" if reg.ca_file else "http"
    context = ssl.create_default_context(cafile=str(reg.ca_file)) if reg.ca_file else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reg.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"{scheme}://{reg.host}/v2/", timeout=2, context=context).close()
            return
        except urllib.error.HTTPError:
            return  # 401 from an auth-enabled registry: it is up
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not answer on {reg.host} within {timeout}s")


@contextlib.contextmanager
def running_registry(workdir: Path, *, users: Mapping[str, str] | None = None,
                     token: TokenServer | None = None) -> Iterator[RunningRegistry]:
    """A started registry, stopped on exit; ``token`` (a :class:`TokenServer`) is started with it."""
    with contextlib.ExitStack() as stack:
        if token is not None:
            stack.enter_context(token)
        reg = start_registry(workdir, users=users, token=token)
        stack.callback(reg.stop)
        yield reg


_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>/v2/\S*) HTTP/[0-9.]+" (?P<status>\d{3}) ')


def access_log(reg: RunningRegistry) -> list[tuple[str, str, int]]:
    """``(method, path, status)`` per request the registry logged (a token-auth registry logs them)."""
    text = (reg.root / "registry.log").read_text(errors="replace")
    return [(m["method"], m["path"], int(m["status"])) for m in _ACCESS.finditer(text)]


# --- a scriptable fake ----------------------------------------------------------


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[FakeRequest], Reply]


class FakeRegistry:
    """An HTTP server on 127.0.0.1 answering every request with ``handler``; records requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[FakeRequest] = []
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = FakeRequest(self.command, parts.path, parse_qs(parts.query),
                                      {k.lower(): v for k, v in self.headers.items()}, body)
                fake.requests.append(request)
                reply = fake.handler(request)
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in reply.headers:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeRegistry:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class MemoryRegistry:
    """A tiny distribution API in memory, to serve a :class:`FakeRegistry`.

    With ``bearer=True`` every ``/v2/`` request needs a token from ``/token``
    (which checks ``users`` by Basic auth when given, and is anonymous otherwise);
    a token is ``tok-N`` and grants the scopes it was issued for. ``expires_in``
    and ``token_field`` (``token`` or ``access_token``) shape the token answer.
    """

    _PATH = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>blobs/uploads|blobs|manifests)(?:/(?P<ref>[^/]*))?$")

    def __init__(self, *, bearer: bool = False, users: Mapping[str, str] | None = None,
                 token_field: str = "token", expires_in: int = 300) -> None:
        self.blobs: dict[str, bytes] = {}
        self.links: set[tuple[str, str]] = set()
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.uploads: dict[str, bytearray] = {}
        self.bearer, self.users, self.token_field, self.expires_in = bearer, dict(users or {}), token_field, expires_in
        self.grants: dict[str, set[str]] = {}
        self.token_requests: list[FakeRequest] = []
        self.host = ""

    def __call__(self, req: FakeRequest) -> Reply:
        if req.path == "/token":
            return self._token(req)
        if req.path == "/v2/":
            return self._auth(req, None) or Reply(200, b"{}")
        m = self._PATH.match(req.path)
        if not m:
            return Reply(404)
        name, kind, ref = m.group("name"), m.group("kind"), m.group("ref") or ""
        action = "pull" if req.method in ("GET", "HEAD") else "push"
        denied = self._auth(req, f"repository:{name}:{action}")
        if denied:
            return denied
        if kind == "manifests":
            return self._manifest(req, name, ref)
        if kind == "blobs":
            return self._blob(name, ref)
        return self._upload(req, name, ref)

    def _auth(self, req: FakeRequest, scope: str | None) -> Reply | None:
        if not self.bearer:
            return None
        token = req.headers.get("authorization", "").removeprefix("Bearer ")
        granted = self.grants.get(token)
        if granted is not None and (scope is None or scope in granted):
            return None
        challenge = f'Bearer realm="http://{self.host}/token",service="fake"'
        if scope:
            challenge += f',scope="{scope}"'
        body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
        return Reply(401, body.encode(), {"WWW-Authenticate": challenge})

    def _token(self, req: FakeRequest) -> Reply:
        self.token_requests.append(req)
        if self.users:
            raw = req.headers.get("authorization", "").removeprefix("Basic ")
            user, _, password = base64.b64decode(raw or "").decode().partition(":")
            if self.users.get(user) != password:
                return Reply(401, b'{"details":"bad credentials"}')
        granted: set[str] = set()
        for scope in req.query.get("scope", []):
            prefix, _, actions = scope.rpartition(":")
            granted |= {f"{prefix}:{a}" for a in actions.split(",")}
        token = f"tok-{len(self.grants)}"
        self.grants[token] = granted
        return Reply(200, json.dumps({self.token_field: token, "expires_in": self.expires_in}).encode())

    def _manifest(self, req: FakeRequest, name: str, ref: str) -> Reply:
        if req.method == "PUT":
            digest = "sha256:" + hashlib.sha256(req.body).hexdigest()
            for key in {ref, digest}:
                self.manifests[(name, key)] = (req.body, req.headers.get("content-type", ""))
            return Reply(201, headers={"Docker-Content-Digest": digest})
        found = self.manifests.get((name, ref))
        if found is None:
            return Reply(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}')
        digest = "sha256:" + hashlib.sha256(found[0]).hexdigest()
        return Reply(200, found[0], {"Content-Type": found[1], "Docker-Content-Digest": digest})

    def _blob(self, name: str, digest: str) -> Reply:
        if (name, digest) not in self.links:
            return Reply(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}')
        return Reply(200, self.blobs[digest])

    def _upload(self, req: FakeRequest, name: str, upload: str) -> Reply:
        if req.method == "POST":
            mount, source = req.query.get("mount", [""])[0], req.query.get("from", [""])[0]
            if mount and (source, mount) in self.links:
                self.links.add((name, mount))
                return Reply(201, headers={"Location": f"/v2/{name}/blobs/{mount}"})
            upload = f"u{len(self.uploads)}"
            self.uploads[upload] = bytearray()
            return Reply(202, headers={"Location": f"/v2/{name}/blobs/uploads/{upload}"})
        data = self.uploads[upload]
        data += req.body
        if req.method == "PATCH":
            return Reply(202, headers={"Location": f"/v2/{name}/blobs/uploads/{upload}"})
        digest = req.query["digest"][0]
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return Reply(400, b'{"errors":[{"code":"DIGEST_INVALID","message":"digest mismatch"}]}')
        self.blobs[digest] = bytes(data)
        self.links.add((name, digest))
        return Reply(201, headers={"Location": f"/v2/{name}/blobs/{digest}"})


# --- images -----------------------------------------------------------------------


def make_layer(store: Store, files: Mapping[str, bytes]) -> Layer:
    """A gzip layer blob holding ``files`` (deterministic), written into ``store``."""
    with store.blobs.writer() as writer:
        sink = LayerSink(writer, "gzip")
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        sink.close()
        digest = writer.commit()
        size = writer.size
    return Layer(Descriptor(mt.DOCKER_LAYER_GZIP, digest, size), sink.diff_id)


def make_image(store: Store, *layers: Mapping[str, bytes], platform: Platform | None = None) -> StoredImage:
    """An image from scratch with one layer per mapping, stored (untagged) in ``store``."""
    image = scratch(platform or Platform("linux", "amd64"))
    for i, files in enumerate(layers):
        image = append_layer(image, make_layer(store, files), History(created_by=f"test layer {i}"))
    return store.put_image(image)
