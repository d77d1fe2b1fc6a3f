"""A Docker token service for tests: what stands in front of a registry configured with ``auth: token``.

The registry (distribution 2.8) answers an unauthenticated request with
``401`` and ``WWW-Authenticate: Bearer realm=…,service=…,scope=…``; the client
then asks ``GET realm?service=…&scope=repository:NAME:pull,push`` here, with
Basic credentials or none, and gets a JWT the registry verifies against the
certificate bundle this server hands it (``rootcertbundle``).

The JWT follows distribution's token spec: an ES256 signature made with a key
generated per server, the signing certificate in the header's ``x5c`` (base64
DER, verified by the registry against ``rootcertbundle``) and ``kid``, and the
claims ``iss``, ``sub``, ``aud`` (the service, a string: distribution 2.8
rejects a list), ``exp``, ``nbf``, ``iat``, ``jti`` and ``access``.

What is granted comes from ``grants``: ``(account, pattern, actions)`` rows,
where account ``None`` is anyone (anonymous included), ``"*"`` anyone who
authenticated, and pattern a :func:`fnmatch` pattern on the repository name.
As the spec says, the token holds the granted part of what was asked (an
account with no right gets an empty ``access``, and the registry then answers
401 ``insufficient_scope``), unless ``forbid_status`` (say 403, as some token
services do) makes the server refuse outright a request it cannot grant whole. Bad Basic
credentials are a 401 here. Every request is recorded (:attr:`requests`), so
tests count tokens per scope set; ``short_lived_next`` makes the next N
tokens good at the registry for only ``SHORT_LIFE`` seconds (``exp`` set back
by the registry's 60 s leeway) while ``expires_in`` tells the client they last,
which is how a token that dies early (a revoked key, a skewed clock) looks.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SERVICE = "lamina-test-registry"
ISSUER = "lamina-test-token-service"
LEEWAY = 60  # distribution accepts a token this many seconds past its exp
SHORT_LIFE = 2  # seconds a short-lived token is good at the registry

Grant = tuple[str | None, str, tuple[str, ...]]

DEFAULT_GRANTS: tuple[Grant, ...] = (
    ("alice", "team/*", ("pull", "push")),
    ("alice", "public/*", ("pull", "push")),
    ("bob", "team/*", ("pull",)),
    (None, "public/*", ("pull",)),
)


@dataclass(frozen=True)
class TokenRequest:
    """One request as the server saw and answered it."""

    account: str | None  # the authenticated user, None when anonymous (or refused)
    service: str
    scopes: tuple[str, ...]
    status: int
    access: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (repository, actions) granted

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Signer:
    """An EC P-256 key and a self-signed certificate for it (the registry's whole trust bundle)."""

    def __init__(self, directory: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256()))
        self.bundle = directory / "token-ca.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        der = cert.public_bytes(serialization.Encoding.DER)
        self.x5c = base64.b64encode(der).decode()
        self.kid = _libtrust_key_id(self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))

    def sign(self, claims: Mapping[str, object]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        header = {"typ": "JWT", "alg": "ES256", "kid": self.kid, "x5c": [self.x5c]}
        signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode())
                                 for part in (header, claims))
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _libtrust_key_id(spki_der: bytes) -> str:
    """libtrust's key ID (what distribution matches ``kid`` against): SHA-256 of the DER public
    key, its first 240 bits in base32, in 12 groups of 4 joined by colons."""
    import hashlib

    text = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode()
    return ":".join(text[i:i + 4] for i in range(0, 48, 4))


class TokenServer:
    """The token service on 127.0.0.1 in a thread; a context manager (start, then stop)."""

    def __init__(self, directory: Path, *, users: Mapping[str, str] | None = None,
                 grants: Sequence[Grant] = DEFAULT_GRANTS, expires_in: int = 300,
                 forbid_status: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.users = dict(users if users is not None else {"alice": "wonder-land", "bob": "builder"})
        self.grants = tuple(grants)
        self.expires_in = expires_in
        self.forbid_status = forbid_status
        self.short_lived_next = 0
        self.service, self.issuer = SERVICE, ISSUER
        self.requests: list[TokenRequest] = []
        self._signer = _Signer(directory)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    @property
    def rootcertbundle(self) -> Path:
        return self._signer.bundle

    def __enter__(self) -> TokenServer:
        """Start serving; entering a started server again (running_registry does) is a no-op."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()

    def issued(self) -> list[TokenRequest]:
        """The requests answered with a token."""
        with self._lock:
            return [r for r in self.requests if r.status == 200]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # --- the protocol --------------------------------------------------------------

    def allowed(self, account: str | None, repository: str) -> set[str]:
        actions: set[str] = set()
        for who, pattern, granted in self.grants:
            if (who is None or who == account or (who == "*" and account is not None)) \
                    and fnmatch.fnmatchcase(repository, pattern):
                actions |= set(granted)
        return actions

    def answer(self, query: Mapping[str, list[str]], authorization: str) -> tuple[int, dict[str, object]]:
        """The status and JSON body for one token request."""
        service = query.get("service", [""])[0]
        scopes = tuple(s for value in query.get("scope", []) for s in value.split(" ") if s)
        account: str | None = None
        if authorization:
            scheme, _, raw = authorization.partition(" ")
            user, _, password = base64.b64decode(raw).decode().partition(":") if scheme == "Basic" else ("", "", "")
            if not user or self.users.get(user) != password:
                return self._record(None, service, scopes, 401, (),
                                    {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]})
            account = user
        if service != self.service:
            return self._record(account, service, scopes, 400, (), {"details": f"unknown service {service!r}"})
        access: list[tuple[str, tuple[str, ...]]] = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, wanted = rest.rpartition(":")
            granted = tuple(a for a in wanted.split(",") if a in self.allowed(account, name)) \
                if kind == "repository" else ()
            if self.forbid_status is not None and set(granted) != set(wanted.split(",")):
                return self._record(account, service, scopes, self.forbid_status, (),
                                    {"errors": [{"code": "DENIED", "message": f"access to {scope} denied"}]})
            if granted:
                access.append((name, granted))
        return self._record(account, service, scopes, 200, tuple(access), self._token(account, tuple(access)))

    def _token(self, account: str | None, access: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, object]:
        now = int(time.time())
        with self._lock:
            short = self.short_lived_next > 0
            self.short_lived_next -= short
        exp = now - LEEWAY + SHORT_LIFE if short else now + self.expires_in
        claims = {"iss": self.issuer, "sub": account or "", "aud": self.service, "exp": exp,
                  "nbf": now - 1, "iat": now, "jti": uuid.uuid4().hex,
                  "access": [{"type": "repository", "name": n, "actions": list(a)} for n, a in access]}
        token = self._signer.sign(claims)
        issued = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat().replace("+00:00", "Z")
        return {"token": token, "access_token": token, "expires_in": self.expires_in, "issued_at": issued}

    def _record(self, account: str | None, service: str, scopes: tuple[str, ...], status: int,
                access: tuple[tuple[str, tuple[str, ...]], ...],
                body: dict[str, object]) -> tuple[int, dict[str, object]]:
        with self._lock:
            self.requests.append(TokenRequest(account, service, scopes, status, access))
        return status, body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != "/token":
                    status, body = 404, {"details": "not found"}
                else:
                    status, body = server.answer(parse_qs(parts.query), self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", f'Basic realm="{server.realm}"')
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return _Handler


__all__ = ["DEFAULT_GRANTS", "Grant", "TokenRequest", "TokenServer"]
