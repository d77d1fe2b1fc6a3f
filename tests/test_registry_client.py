"""The HTTP session: base URLs, retries, redirects without credentials, error lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.mockhttp import MockTransport, reply
from helpers.registry import FakeRegistry, FakeRequest, Reply, free_port
from lamina.errors import AuthError, RegistryError
from lamina.transport.credentials import CredentialStore
from lamina.transport.http import ConnectError, Request, Response
from lamina.transport.registry.auth import repository_scope
from lamina.transport.registry.client import RegistryClient, base_url, is_loopback, response_error

SCOPE = (repository_scope("app", "pull"),)


@pytest.mark.parametrize(("domain", "insecure", "url"), [
    ("docker.io", None, "https://registry-1.docker.io"),
    ("ghcr.io", None, "https://ghcr.io"),
    ("localhost:5000", None, "http://localhost:5000"),
    ("localhost", None, "http://localhost"),
    ("127.0.0.1:5000", None, "http://127.0.0.1:5000"),
    ("127.8.9.1", None, "http://127.8.9.1"),
    ("[::1]:5000", None, "http://[::1]:5000"),
    ("10.0.0.1:5000", None, "https://10.0.0.1:5000"),
    ("reg.lan:5000", True, "http://reg.lan:5000"),
    ("127.0.0.1:5000", False, "https://127.0.0.1:5000"),
])
def test_base_url(domain: str, insecure: bool | None, url: str) -> None:
    assert base_url(domain, insecure) == url


def test_is_loopback() -> None:
    assert is_loopback("LOCALHOST:1") and is_loopback("::1") and not is_loopback("localhost.example")


def _client(handler: Callable[[Request], Response], **kw: object) -> RegistryClient:
    return RegistryClient("reg.example", transport=MockTransport(handler), backoff=0.001, **kw)  # type: ignore[arg-type]


def _errors(status: int, code: str, message: str) -> Response:
    return reply(status, json={"errors": [{"code": code, "message": message, "detail": {"x": 1}}]})


@pytest.mark.parametrize(("response", "unknown", "kind", "text"), [
    (_errors(404, "MANIFEST_UNKNOWN", "manifest unknown"), "manifest unknown: app:v1", RegistryError,
     "pulling x: manifest unknown: app:v1 (MANIFEST_UNKNOWN: manifest unknown)"),
    (_errors(401, "UNAUTHORIZED", "authentication\nrequired"), None, AuthError,
     "pulling x: unauthorized (UNAUTHORIZED: authentication required)"),
    (_errors(403, "DENIED", "requested access to the resource is denied"), None, AuthError,
     "pulling x: denied (DENIED: requested access to the resource is denied)"),
    (reply(502, text="<html>bad gateway</html>"), None, RegistryError, "pulling x: HTTP 502 Bad Gateway"),
    (reply(401, json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
           headers={"WWW-Authenticate": 'Bearer realm="r",scope="repository:a:push",error="insufficient_scope"'}),
     None, AuthError, "pulling x: denied: requested access to the resource is denied (repository:a:push not granted)"),
])
def test_response_error(response: Response, unknown: str | None, kind: type[Exception], text: str) -> None:
    error = response_error(response, "pulling x", unknown=unknown)
    assert type(error) is kind and str(error) == text
    assert error.status == response.status_code


def test_retries_5xx_and_429_then_succeeds() -> None:
    statuses = iter([500, 429, 503, 200])
    seen: list[int] = []

    def handler(request: Request) -> Response:
        seen.append(1)
        return reply(next(statuses))

    with _client(handler) as client:
        assert client.request("GET", "/v2/", scope=SCOPE, what="x").status_code == 200
    assert len(seen) == 4


def test_retries_are_bounded_and_the_last_answer_is_returned() -> None:
    calls: list[int] = []

    def handler(request: Request) -> Response:
        calls.append(1)
        return reply(503)

    with _client(handler, tries=3) as client:
        assert client.request("GET", "/v2/", scope=SCOPE, what="x").status_code == 503
    assert len(calls) == 3


def test_non_idempotent_requests_are_not_retried() -> None:
    calls: list[str] = []

    def handler(request: Request) -> Response:
        calls.append(request.method)
        return reply(500)

    with _client(handler) as client:
        assert client.request("PATCH", "/v2/app/blobs/uploads/1", scope=SCOPE, what="x").status_code == 500
    assert calls == ["PATCH"]


def test_connection_errors_are_retried_then_reported_in_one_line() -> None:
    failures = [ConnectError("refused")]

    def flaky(request: Request) -> Response:
        if failures:
            raise failures.pop()
        return reply(200)

    with _client(flaky) as client:
        assert client.request("GET", "/v2/", scope=SCOPE, what="x").status_code == 200
    port = free_port()  # nothing listens there
    with RegistryClient(f"127.0.0.1:{port}", tries=2, backoff=0.001) as client, \
            pytest.raises(RegistryError, match=rf"^pinging: 127.0.0.1:{port}: ConnectError"):
        client.request("GET", "/v2/", scope=SCOPE, what="pinging")


def test_500_then_200_over_a_real_socket() -> None:
    answers = iter([Reply(500, b"oops"), Reply(200, b"{}")])
    with FakeRegistry(lambda request: next(answers)) as fake, RegistryClient(fake.host, backoff=0.001) as client:
        assert client.request("GET", "/v2/", scope=SCOPE, what="x").status_code == 200
        assert len(fake.requests) == 2


def test_redirect_to_another_origin_drops_credentials(tmp_path: Path) -> None:
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        if request.parts.hostname == "cdn.example":
            return reply(200, content=b"blob")
        if request.parts.path == "/v2/app/blobs/sha256:1":
            return reply(307, headers={"Location": "/v2/app/blobs/mirror"})
        if request.parts.path == "/v2/app/blobs/mirror":
            return reply(302, headers={"Location": "https://cdn.example/blob?sig=1"})
        return reply(404)

    creds = CredentialStore(tmp_path)
    creds.login("reg.example", "u", "p")
    with _client(handler, credentials=creds) as client:
        client.auth.challenge('Basic realm="r"', SCOPE)
        response = client.request("GET", "/v2/app/blobs/sha256:1", scope=SCOPE, what="x", follow_redirects=True)
    assert response.content == b"blob"
    assert [r.parts.hostname for r in seen] == ["reg.example", "reg.example", "cdn.example"]
    assert "Authorization" in seen[1].headers  # same origin keeps them
    assert "Authorization" not in seen[2].headers


def test_redirects_not_followed_unless_asked() -> None:
    def handler(request: Request) -> Response:
        return reply(307, headers={"Location": "https://elsewhere/"})

    with _client(handler) as client:
        assert client.request("GET", "/v2/x", scope=SCOPE, what="x").status_code == 307


def test_challenge_answered_and_request_resent() -> None:
    def handler(request: Request) -> Response:
        if request.parts.path == "/token":
            return reply(200, json={"token": "abc"})
        if request.headers.get("Authorization") == "Bearer abc":
            return reply(200, content=b"ok")
        return reply(401, headers={"WWW-Authenticate": 'Bearer realm="https://reg.example/token"'})

    with _client(handler) as client:
        response = client.request("GET", "/v2/app/manifests/v1", scope=SCOPE, what="x")
    assert response.content == b"ok"


def test_location_and_params_merge() -> None:
    seen: list[str] = []

    def handler(request: Request) -> Response:
        seen.append(request.url)
        return reply(201)

    with _client(handler) as client:
        client.request("PUT", "https://reg.example/v2/app/blobs/uploads/u1?_state=s", scope=SCOPE, what="x",
                       params={"digest": "sha256:1"})
        client.request("PUT", "/v2/app/blobs/uploads/u2?_state=t", scope=SCOPE, what="x", params={"digest": "d"})
    assert seen[0] == "https://reg.example/v2/app/blobs/uploads/u1?_state=s&digest=sha256%3A1"
    assert str(seen[1]) == "https://reg.example/v2/app/blobs/uploads/u2?_state=t&digest=d"


def test_stream_error_responses_come_back_read() -> None:
    def handler(request: Request) -> Response:
        return _errors(404, "BLOB_UNKNOWN", "blob unknown to registry")

    with _client(handler) as client:
        response = client.request("GET", "/v2/app/blobs/sha256:1", scope=SCOPE, what="x", stream=True)
        error = response_error(response, "pulling x", unknown="blob unknown: sha256:1")
    assert str(error) == "pulling x: blob unknown: sha256:1 (BLOB_UNKNOWN: blob unknown to registry)"


def test_fake_request_records() -> None:
    with FakeRegistry(lambda r: Reply(200)) as fake, RegistryClient(fake.host) as client:
        client.request("GET", "/v2/", scope=SCOPE, what="x", headers={"X-Test": "1"})
    assert isinstance(fake.requests[0], FakeRequest) and fake.requests[0].headers["x-test"] == "1"
