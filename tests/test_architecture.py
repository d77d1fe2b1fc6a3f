"""The direction of imports (DESIGN.md): dependencies point down, never up.

cli → api → build → (dockerfile, store, snapshot, runtime, transport) → image → oci → errors;
``syscalls`` (mount, unshare, … through libc) sits beside ``errors``: it imports nothing of lamina;
nor does ``launcher`` (``import lamina`` runs it first under ``python -S``), nor
``model`` (the dataclass decorator every layer's types use).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lamina"

ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "syscalls": set(),
    "launcher": set(),
    "model": set(),
    "oci": {"errors", "model"},
    "image": {"errors", "model", "oci"},
    "store": {"errors", "model", "syscalls", "oci", "image"},
    "dockerfile": {"errors", "model"},
    "runtime": {"errors", "model", "syscalls"},
    "snapshot": {"errors", "model", "syscalls", "oci", "image", "store"},
    "transport": {"errors", "model", "oci", "image", "store"},
    "history": {"errors", "model", "oci", "image", "store"},
    "layerview": {"errors", "model", "oci", "image", "store"},
    "build": {"errors", "model", "syscalls", "oci", "image", "store", "dockerfile", "runtime", "snapshot", "transport"},
    "api": {"errors", "model", "syscalls", "oci", "image", "store", "dockerfile", "runtime", "snapshot", "transport",
            "build", "history"},
    "cli": {"errors", "model", "syscalls", "oci", "image", "store", "dockerfile", "runtime", "snapshot", "transport",
            "build", "history", "api", "layerview"},
}


def _lamina_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "lamina" and len(parts) > 1:
                found.add(parts[1])
    return found


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    rel = path.relative_to(SRC)
    layer = rel.parts[0].removesuffix(".py")
    if layer in ("__init__", "__main__"):
        return
    allowed = ALLOWED[layer] | {layer}
    assert _lamina_imports(path) <= allowed, f"{rel} imports {_lamina_imports(path) - allowed}"
