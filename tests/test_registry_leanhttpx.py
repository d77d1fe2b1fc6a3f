"""httpx without trio, anyio and its CLI; TLS contexts made only when HTTPS is used (start-up cost)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from lamina.errors import RegistryError
from lamina.transport.registry.client import RegistryClient

SRC = Path(__file__).resolve().parents[1] / "src"


def _python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_registry_package_imports_httpx_without_the_optional_packages() -> None:
    out = _python("import sys, lamina.transport.registry, httpcore\n"
                  "print(sorted(n for n in ('trio', 'anyio', 'httpx._main') if n in sys.modules))\n"
                  "print(sorted(n for n in ('trio', 'anyio', 'httpx._main') if sys.modules.get(n, 1) is None))")
    assert out.splitlines() == ["[]", "[]"]  # neither imported nor left blocked


def test_later_imports_of_the_blocked_packages_still_work() -> None:
    out = _python("import importlib.util, lamina.transport.registry\n"
                  "if importlib.util.find_spec('anyio'):\n"
                  "    import anyio\n"
                  "print('ok')")
    assert out == "ok"


def test_httpx_loaded_first_is_left_alone() -> None:
    out = _python("import httpx, sys; before = 'httpx._main' in sys.modules\n"
                  "import lamina.transport.registry\n"
                  "print(before == ('httpx._main' in sys.modules))")
    assert out == "True"


def _no_tls(*args: object, **kwargs: object) -> ssl.SSLContext:
    raise AssertionError("a verifying TLS context was made")


def test_a_plain_http_registry_never_makes_a_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpx, "create_ssl_context", _no_tls)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    with RegistryClient("127.0.0.1:1", tries=1) as client, pytest.raises(RegistryError, match="ConnectError"):
        client.request("GET", "/v2/", scope=(), what="probing")


def test_an_https_registry_makes_its_tls_context_at_the_first_request(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real: Callable[[], ssl.SSLContext] = httpx.create_ssl_context

    def counted() -> ssl.SSLContext:
        made.append(1)
        return real()

    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    with RegistryClient("127.0.0.1:1", insecure=False, tries=1) as client:
        assert made == []
        with pytest.raises(RegistryError, match="ConnectError"):
            client.request("GET", "/v2/", scope=(), what="probing")
        with pytest.raises(RegistryError, match="ConnectError"):
            client.request("GET", "/v2/", scope=(), what="probing")
    assert made == [1]
