"""WWW-Authenticate challenges, Basic and Bearer auth, token reuse and expiry."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from helpers.mockhttp import reply
from helpers.registry import FakeRegistry, MemoryRegistry, make_image
from lamina.errors import AuthError
from lamina.oci.reference import Reference
from lamina.store.store import Store
from lamina.transport.credentials import Credential, CredentialStore
from lamina.transport.http import Request, Response
from lamina.transport.registry.auth import Authenticator, Challenge, parse_challenges, repository_scope
from lamina.transport.registry.client import RegistryClient
from lamina.transport.registry.pull import pull
from lamina.transport.registry.push import push

PULL = (repository_scope("app", "pull"),)
PUSH = (repository_scope("app", "pull", "push"),)
BEARER = 'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:app:pull"'


@pytest.mark.parametrize(("header", "expected"), [
    (BEARER, (Challenge("bearer", {"realm": "https://auth.example/token", "service": "registry.example",
                                   "scope": "repository:app:pull"}),)),
    ('Basic realm="Registry Realm"', (Challenge("basic", {"realm": "Registry Realm"}),)),
    ('basic realm=plain', (Challenge("basic", {"realm": "plain"}),)),
    ('Bearer realm="a\\"b", error="insufficient_scope"',
     (Challenge("bearer", {"realm": 'a"b', "error": "insufficient_scope"}),)),
    ("", ()),
])
def test_parse_challenges(header: str, expected: tuple[Challenge, ...]) -> None:
    assert parse_challenges(header) == expected


def test_parse_several_challenges() -> None:
    found = parse_challenges('Basic realm="r", Bearer realm="https://t/x",service="s"')
    assert [c.scheme for c in found] == ["basic", "bearer"]
    assert found[1].params == {"realm": "https://t/x", "service": "s"}


class _TokenServer:
    """A ``send`` function standing in for a token endpoint."""

    def __init__(self, field: str = "token", expires_in: int | None = 300) -> None:
        self.requests: list[Request] = []
        self.field, self.expires_in = field, expires_in

    def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        doc: dict[str, object] = {self.field: f"t{len(self.requests)}"}
        if self.expires_in is not None:
            doc["expires_in"] = self.expires_in
        return reply(200, json=doc)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_anonymous_until_challenged() -> None:
    auth = Authenticator(None, _TokenServer(), registry="r")
    assert auth.header(PULL) is None


def test_bearer_token_reused_per_scope_until_expiry() -> None:
    tokens, clock = _TokenServer(expires_in=100), _Clock()
    auth = Authenticator(None, tokens, registry="r", clock=clock)
    assert auth.challenge(BEARER, PULL)
    assert auth.header(PULL) == "Bearer t1"
    assert auth.header(PULL) == "Bearer t1"
    assert auth.header(PUSH) == "Bearer t2"  # another scope, another token
    request = tokens.requests[0]
    query = parse_qs(request.parts.query)
    assert query["scope"] == ["repository:app:pull"] and query["service"] == ["registry.example"]
    assert "Authorization" not in request.headers  # anonymous token
    clock.now += 95  # inside the renewal margin
    assert auth.header(PULL) == "Bearer t3"


def test_access_token_field_and_default_expiry() -> None:
    tokens, clock = _TokenServer(field="access_token", expires_in=None), _Clock()
    auth = Authenticator(None, tokens, registry="r", clock=clock)
    auth.challenge(BEARER, PULL)
    assert auth.header(PULL) == "Bearer t1"
    clock.now += 45
    assert auth.header(PULL) == "Bearer t1"
    clock.now += 10
    assert auth.header(PULL) == "Bearer t2"


def test_basic_credentials_go_to_the_token_server() -> None:
    tokens = _TokenServer()
    auth = Authenticator(Credential("alice", "pw"), tokens, registry="r")
    auth.challenge(BEARER, PULL)
    auth.header(PULL)
    expected = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert tokens.requests[0].headers["Authorization"] == expected


def test_identity_token_uses_the_oauth2_refresh_grant() -> None:
    tokens = _TokenServer(field="access_token")
    auth = Authenticator(Credential(identity_token="refresh"), tokens, registry="r")
    auth.challenge(BEARER, PULL)
    assert auth.header(PULL) == "Bearer t1"
    request = tokens.requests[0]
    assert request.method == "POST"
    assert isinstance(request.body, bytes)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = dict(item.split("=", 1) for item in request.body.decode().split("&"))
    assert form["grant_type"] == "refresh_token" and form["refresh_token"] == "refresh"


def test_basic_challenge() -> None:
    auth = Authenticator(lambda: Credential("bob", "pw"), _TokenServer(), registry="r")
    auth.challenge('Basic realm="x"', PULL)
    assert auth.header(PULL) == "Basic " + base64.b64encode(b"bob:pw").decode()
    anonymous = Authenticator(None, _TokenServer(), registry="r")
    anonymous.challenge('Basic realm="x"', PULL)
    with pytest.raises(AuthError, match="no credentials"):
        anonymous.header(PULL)


def test_credentials_looked_up_only_when_challenged() -> None:
    calls: list[int] = []

    def lookup() -> Credential:
        calls.append(1)
        return Credential("u", "p")

    auth = Authenticator(lookup, _TokenServer(), registry="r")
    assert auth.header(PULL) is None and calls == []
    auth.challenge(BEARER, PULL)
    auth.header(PULL)
    auth.header(PUSH)
    assert calls == [1]


def test_refused_token_request_is_an_auth_error_without_the_password() -> None:
    def refuse(request: Request) -> Response:
        return reply(401)

    auth = Authenticator(Credential("alice", "hunter2"), refuse, registry="r")
    auth.challenge(BEARER, PULL)
    with pytest.raises(AuthError) as info:
        auth.header(PULL)
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)


def test_unknown_scheme_is_not_answered() -> None:
    assert not Authenticator(None, _TokenServer(), registry="r").challenge('Negotiate abc', PULL)


# the real registry behind a token service: tests/test_registry_bearer.py


def test_insufficient_scope_keeps_the_token_and_asks_no_new_one() -> None:
    tokens = _TokenServer()
    auth = Authenticator(None, tokens, registry="r")
    auth.challenge(BEARER, PUSH)
    sent = auth.header(PUSH)
    assert not auth.challenge(BEARER + ',error="insufficient_scope"', PUSH, sent)  # no retry: same grant again
    assert auth.header(PUSH) == sent and len(tokens.requests) == 1
    assert auth.challenge(BEARER + ',error="invalid_token"', PUSH, sent)  # expired early: fetch anew
    assert auth.header(PUSH) == "Bearer t2"


def test_token_server_403_says_denied_and_is_not_asked_again() -> None:
    calls: list[Request] = []

    def deny(request: Request) -> Response:
        calls.append(request)
        return reply(403)

    auth = Authenticator(Credential("bob", "pw"), deny, registry="r")
    auth.challenge(BEARER, PUSH)
    for _ in range(2):
        with pytest.raises(AuthError, match=r"^r: the token server denied access to repository:app:pull,push \(403\)$"):
            auth.header(PUSH)
    assert len(calls) == 1


# --- end to end against a fake Bearer registry --------------------------------------


@pytest.fixture
def bearer_registry() -> Iterator[tuple[FakeRegistry, MemoryRegistry]]:
    memory = MemoryRegistry(bearer=True, users={"alice": "wonderland"})
    with FakeRegistry(memory) as fake:
        memory.host = fake.host
        yield fake, memory


def _login(tmp_path: Path, host: str, password: str) -> CredentialStore:
    creds = CredentialStore(tmp_path / "docker")
    creds.login(host, "alice", password)
    return creds


def test_push_and_pull_through_bearer_tokens(tmp_path: Path,
                                             bearer_registry: tuple[FakeRegistry, MemoryRegistry]) -> None:
    fake, memory = bearer_registry
    store = Store(tmp_path / "a")
    image = make_image(store, {"a": b"1"}, {"b": b"2"})
    ref = Reference.parse(f"{fake.host}/team/app:v1")
    with RegistryClient(fake.host, credentials=_login(tmp_path, fake.host, "wonderland")) as client:
        assert push(store, image, ref, client=client).digest == image.manifest_digest
        pulled = pull(Store(tmp_path / "b"), ref, client=client)
    assert pulled.manifest_digest == image.manifest_digest
    scopes = [r.query["scope"] for r in memory.token_requests]
    assert scopes == [["repository:team/app:pull,push"], ["repository:team/app:pull"]]  # one token per scope
    assert all(r.headers["authorization"].startswith("Basic ") for r in memory.token_requests)


def test_wrong_password_is_a_one_line_auth_error(tmp_path: Path,
                                                 bearer_registry: tuple[FakeRegistry, MemoryRegistry]) -> None:
    fake, _ = bearer_registry
    with RegistryClient(fake.host, credentials=_login(tmp_path, fake.host, "guess")) as client, \
            pytest.raises(AuthError) as info:
        pull(Store(tmp_path / "b"), Reference.parse(f"{fake.host}/app:v1"), client=client)
    message = str(info.value)
    assert "refused" in message and "guess" not in message and "\n" not in message


def test_bearer_tokens_with_access_token_field_and_anonymous(tmp_path: Path) -> None:
    memory = MemoryRegistry(bearer=True, token_field="access_token")
    with FakeRegistry(memory) as fake:
        memory.host = fake.host
        store = Store(tmp_path / "a")
        image = make_image(store, {"a": b"1"})
        ref = Reference.parse(f"{fake.host}/app:v1")
        with RegistryClient(fake.host, credentials=None) as client:
            push(store, image, ref, client=client)
            assert pull(Store(tmp_path / "b"), ref, client=client).manifest_digest == image.manifest_digest
    assert all("authorization" not in r.headers for r in memory.token_requests)
    assert json.loads(json.dumps(sorted(memory.grants)))  # tokens were issued
