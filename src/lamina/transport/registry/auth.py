"""Answering a registry's ``WWW-Authenticate`` challenge.

A registry that wants credentials says so with a 401 and a challenge:
``Basic realm="..."`` (send the password on every request) or ``Bearer
realm=...,service=...`` (trade the password, or nothing, at ``realm`` for a
token scoped to ``repository:NAME:pull[,push]``). Tokens are kept per scope
until shortly before ``expires_in`` runs out, so a pull asks for one token and
a push for one more. A token the registry refuses as invalid (expired early)
is fetched again once; one refused for ``insufficient_scope`` is not, as the
token server already granted all it would, nor is a scope it refused (403).
A registry that never challenges is used anonymously.

Token requests go through the caller's ``send`` function, so this module does
no I/O of its own and tests can answer with plain functions.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

from lamina.errors import AuthError
from lamina.model import model
from lamina.transport.credentials import Credential
from lamina.transport.http import Request, Response, with_params
from lamina.transport.registry.scope import Scope, repository_scope

DEFAULT_EXPIRY = 60.0  # the token spec's default when expires_in is absent
_EXPIRY_MARGIN = 10.0  # renew a little early: a token must outlive the request it is on
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')



@model
class Challenge:
    """One parsed challenge; ``scheme`` is lower case (``basic``, ``bearer``)."""

    scheme: str
    params: Mapping[str, str]


def parse_challenges(header: str) -> tuple[Challenge, ...]:
    """Parse a ``WWW-Authenticate`` value, which may hold several challenges."""
    out: list[Challenge] = []
    rest = header.strip()
    while rest:
        m = re.match(r"([A-Za-z][A-Za-z0-9_-]*)(?:\s+|$)", rest)
        if not m:
            break
        scheme, rest = m.group(1).lower(), rest[m.end():]
        params: dict[str, str] = {}
        while (p := _PARAM.match(rest)) and p.end() > 0:
            value = p.group(2) if p.group(2) is not None else p.group(3)
            params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[p.end():]
        out.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return tuple(out)


@model
class _Token:
    value: str
    expires: float


Send = Callable[[Request], Response]


class Authenticator:
    """Produces the ``Authorization`` header for a scope; thread-safe.

    ``credential`` may be a function, called once and only when a registry
    first challenges (so anonymous pulls never run a credential helper).
    ``send`` performs token requests (the client passes its own, so retries
    and TLS settings apply); ``clock`` is a parameter so expiry is testable.
    """

    def __init__(self, credential: Credential | None | Callable[[], Credential | None], send: Send, *,
                 registry: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = credential if callable(credential) else (lambda: credential)
        self._looked_up = False
        self._cached: Credential | None = None
        self._send = send
        self._registry = registry
        self._clock = clock
        self._challenge: Challenge | None = None
        self._tokens: dict[Scope, _Token] = {}
        self._denied: dict[Scope, str] = {}
        self._lock = threading.Lock()

    @property
    def challenged(self) -> bool:
        return self._challenge is not None

    def header(self, scope: Scope) -> str | None:
        """The header to send for ``scope``, fetching a token if one is due; None = anonymous."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic()
        with self._lock:
            if scope in self._denied:  # a token server's 403 is its answer for this process
                raise AuthError(self._denied[scope], status=403)
            token = self._tokens.get(scope)
            if token is None or token.expires <= self._clock():
                try:
                    token = self._fetch_token(challenge, scope)
                except AuthError as exc:
                    if exc.status == 403:
                        self._denied[scope] = str(exc)
                    raise
                self._tokens[scope] = token
        return f"Bearer {token.value}"

    def challenge(self, header: str, scope: Scope, sent: str | None = None) -> bool:
        """Take a 401's challenge; whether it is one we can answer.

        ``sent`` is the Authorization the refused request carried: only that
        token is dropped, so parallel requests refused before the first token
        arrived do not throw away the one another thread just fetched.
        """
        found = {c.scheme: c for c in parse_challenges(header)}
        chosen = found.get("bearer") or found.get("basic")
        if chosen is None:
            return False
        if insufficient_scope(chosen) and sent is not None and sent.startswith("Bearer "):
            return False  # the token holds all the token server grants us: a new one would be the same
        with self._lock:
            self._challenge = chosen
            token = self._tokens.get(scope)
            if sent is not None and token is not None and sent == f"Bearer {token.value}":
                del self._tokens[scope]
        return True

    @property
    def _credential(self) -> Credential | None:
        if not self._looked_up:
            found = self._lookup()
            self._cached = found if found is not None and not found.empty else None
            self._looked_up = True
        return self._cached

    def _basic(self) -> str:
        cred = self._credential
        if cred is None or not cred.username:
            raise AuthError(f"{self._registry}: authentication required and no credentials are stored "
                            f"(run `lamina login {self._registry}`)", status=401)
        raw = f"{cred.username}:{cred.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _fetch_token(self, challenge: Challenge, scope: Scope) -> _Token:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthError(f"{self._registry}: Bearer challenge without a realm", status=401)
        service = challenge.params.get("service", "")
        cred = self._credential
        if cred is not None and cred.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": cred.identity_token,
                    "service": service, "scope": " ".join(scope), "client_id": "lamina"}
            request = Request("POST", realm, {"Content-Type": "application/x-www-form-urlencoded"},
                              urlencode(form).encode())
        else:
            params = [("scope", s) for s in scope]
            if service:
                params.insert(0, ("service", service))
            headers = {"Authorization": self._basic()} if cred is not None and cred.username else {}
            request = Request("GET", with_params(realm, params), headers)
        response = self._send(request)
        return self._parse_token(response, scope)

    def _parse_token(self, response: Response, scope: Scope) -> _Token:
        if response.status_code == 403:  # some token services refuse outright what others leave out of the token
            raise AuthError(f"{self._registry}: the token server denied access to {' '.join(scope) or 'the registry'}"
                            " (403)", status=403)
        if response.status_code == 401:
            raise AuthError(f"{self._registry}: the token server refused our credentials (401)", status=401)
        if response.status_code != 200:
            raise AuthError(f"{self._registry}: token request failed with HTTP {response.status_code}",
                            status=response.status_code)
        try:
            doc = response.json()
            value = str(doc.get("token") or doc.get("access_token") or "")
            expires_in = float(doc.get("expires_in") or DEFAULT_EXPIRY)
        except (ValueError, AttributeError, TypeError) as exc:
            raise AuthError(f"{self._registry}: unreadable token response") from exc
        if not value:
            raise AuthError(f"{self._registry}: token response holds no token")
        lifetime = max(expires_in - _EXPIRY_MARGIN, expires_in / 2)
        return _Token(value, self._clock() + lifetime)


def insufficient_scope(challenge: Challenge) -> bool:
    """Whether a Bearer challenge says the token was good but does not grant the request."""
    return challenge.scheme == "bearer" and challenge.params.get("error") == "insufficient_scope"


__all__ = ["Authenticator", "Challenge", "Scope", "insufficient_scope", "parse_challenges", "repository_scope"]
