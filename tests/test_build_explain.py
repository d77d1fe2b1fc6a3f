"""Explaining cache misses: the pure diff of two steps' inputs, and real rebuilds that say why."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.images import busybox_image, busybox_rootfs_tar
from lamina import api
from lamina.build import events
from lamina.build.context import SourceRoot, checksum, select
from lamina.build.explain import (
    RecordingStatCache,
    StepInputs,
    file_inputs,
    miss_line,
    reasons,
    short,
    summary,
)
from lamina.build.options import BuildOptions
from lamina.oci.reference import Reference
from lamina.store.db import SCHEMA_VERSION, Metadata
from lamina.store.store import Store
from lamina.transport.importer import import_rootfs

D1, D2 = "sha256:" + "1a" * 32, "sha256:" + "9f" * 32
BASE = "base:sha256:" + "ab" * 32


def _inputs(**kw: object) -> StepInputs:
    doc: dict[str, object] = {"parent": "sha256:" + "00" * 32, "kind": "COPY", "source": "COPY . /app",
                              "instruction": {"kind": "COPY", "dest": "/app"}, "variables": {}, "files": None,
                              "other": {"workdir": "/"}}
    doc.update(kw)
    return StepInputs(**doc)  # type: ignore[arg-type]


# (what changed, before, now, expected reasons)
CASES = [
    ("nothing known", None, _inputs(), ("no previous build",)),
    ("a file", _inputs(files={"src/app.py": (D1, "0644")}), _inputs(files={"src/app.py": (D2, "0644")}),
     ("src/app.py changed (sha256:1a1a1a1a… → sha256:9f9f9f9f…)",)),
    ("a file's mode", _inputs(files={"run.sh": (D1, "0644")}), _inputs(files={"run.sh": (D1, "0755")}),
     ("run.sh mode changed (0644 → 0755)",)),
    ("files added and removed", _inputs(files={"a": (D1, "0644")}), _inputs(files={"b": (D1, "0644")}),
     ("a removed", "b added")),
    ("a symlink", _inputs(files={"l": ("-> a", "0777")}), _inputs(files={"l": ("-> b", "0777")}),
     ("l changed (-> a → -> b)",)),
    ("a build arg", _inputs(kind="RUN", source="RUN make", variables={"VERSION": ("arg", "1.2")}),
     _inputs(kind="RUN", source="RUN make", variables={"VERSION": ("arg", "1.3")}),
     ("build arg VERSION changed (1.2 → 1.3)",)),
    ("an ENV value", _inputs(variables={"A": ("env", "x")}), _inputs(variables={"A": ("env", "y")}),
     ("ENV A changed (x → y)",)),
    ("an arg set", _inputs(variables={}), _inputs(variables={"V": ("arg", "1")}), ("build arg V now used (1)",)),
    ("the instruction", _inputs(), _inputs(source="COPY . /srv", instruction={"kind": "COPY", "dest": "/srv"}),
     ("instruction changed",)),
    ("the expansion only", _inputs(), _inputs(instruction={"kind": "COPY", "dest": "/x"}),
     ("instruction changed after expansion",)),
    ("the base image", _inputs(parent=BASE), _inputs(parent="base:sha256:" + "cd" * 32),
     ("base image changed (sha256:abababab… → sha256:cdcdcdcd…)",)),
    ("the parent", _inputs(), _inputs(parent="sha256:" + "11" * 32), ("parent step 6 rebuilt",)),
    ("a file and the parent", _inputs(files={"a": (D1, "0644")}),
     _inputs(files={"a": (D2, "0644")}, parent="sha256:" + "11" * 32),
     ("a changed (sha256:1a1a1a1a… → sha256:9f9f9f9f…)", "parent step 6 rebuilt")),
    ("the workdir", _inputs(), _inputs(other={"workdir": "/srv"}), ("workdir changed (/ → /srv)",)),
    ("a COPY --from source", _inputs(other={"from": "k1"}), _inputs(other={"from": "k2"}),
     ("COPY --from source changed",)),
    ("nothing visible", _inputs(), _inputs(), ("inputs changed",)),
]


@pytest.mark.parametrize(("before", "now", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reasons(before: StepInputs | None, now: StepInputs, expected: tuple[str, ...]) -> None:
    assert reasons(now, before, parent="parent step 6 rebuilt") == expected


def test_many_files_are_summarized() -> None:
    before = _inputs(files={f"f{i}": (D1, "0644") for i in range(9)})
    now = _inputs(files={f"f{i}": (D2, "0644") for i in range(9)})
    found = reasons(now, before, parent="")
    assert len(found) == 6 and found[-1] == "and 4 more files"


def test_inputs_round_trip_through_json() -> None:
    value = _inputs(files={"a": (D1, "0644")}, variables={"V": ("arg", "1")}, other={"from": "k", "n": [1]})
    assert StepInputs.from_json(value.to_json()) == value
    assert StepInputs.from_json({"parent": "p", "kind": "ENV"}) == StepInputs("p", "ENV", "", None)


def test_short_and_lines() -> None:
    assert short(D1) == "sha256:1a1a1a1a…" and short("base:scratch") == "base:scratch"
    assert summary(("a", "b", "c")) == "a, b (+1 more)" and summary(("a",)) == "a"
    assert miss_line(7, 12, "COPY  .\n /app", ("x", "y")) == "step 7/12 COPY . /app: cache miss — x; y"


def test_file_inputs_reuse_the_checksum_digests(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("print(1)")
    (tmp_path / "src" / "app.py").chmod(0o644)
    (tmp_path / "src" / "link").symlink_to("app.py")
    root = SourceRoot.context(tmp_path)
    selected = select(root, ["src"])
    recorder = RecordingStatCache(None)
    checksum(root, selected, recorder)
    files = file_inputs(tmp_path, selected, recorder.seen)
    assert files["src/app.py"] == ("sha256:" + hashlib.sha256(b"print(1)").hexdigest(), "0644")
    assert files["src/link"][0] == "-> app.py" and files["src"][0] == "dir"


def test_schema_migrates_from_version_1(tmp_path: Path) -> None:
    path = tmp_path / "lamina.db"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE cache (key TEXT PRIMARY KEY, record TEXT NOT NULL, created REAL NOT NULL, "
                       "used REAL NOT NULL); INSERT INTO cache VALUES ('k', '{}', 0, 0); PRAGMA user_version = 1;")
    conn.close()
    db = Metadata(path)
    assert db.cache_peek("k") == "{}"  # kept
    db.lineage_put_many([("f", "0/2", "p", "k")])
    assert db.lineage_find("f", "p", "0/9") == "k" and db.lineage_find("f", "q", "0/2") == "k"
    assert db.lineage_find("other", "p", "0/2") is None
    db.image_steps_put("sha256:c", "b1", [(0, 1.5, False), (1, 0.0, True)])
    assert db.image_steps("sha256:c") == {0: (1.5, False, "b1"), 1: (0.0, True, "b1")}
    assert db._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


# real rebuilds ------------------------------------------------------------------------------------
needs_runc = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")

DOCKERFILE = """FROM busybox:test
ARG VERSION=1.2
ENV MODE=prod
RUN echo $VERSION > /version
COPY src /app
RUN cat /app/app.py > /out
CMD ["cat", "/out"]
"""


@pytest.fixture
def project(tmp_path: Path) -> tuple[Store, Path]:
    store = Store(tmp_path / "store")
    busybox_image(store, "busybox:test")
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "app.py").write_text("print(1)")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return store, ctx


def _misses(store: Store, ctx: Path, **kw: object) -> dict[int, tuple[str, ...]]:
    seen: list[events.Event] = []
    api.build(store, BuildOptions(context=ctx, **kw), listener=seen.append)  # type: ignore[arg-type]
    return {e.number: e.reasons for e in seen if isinstance(e, events.CacheMiss)}


@pytest.mark.integration
@needs_runc
def test_rebuilds_say_why_each_step_missed(project: tuple[Store, Path]) -> None:
    store, ctx = project
    assert set(_misses(store, ctx).values()) == {("no previous build",)}
    assert _misses(store, ctx) == {}

    (ctx / "src" / "app.py").write_text("print(2)")
    misses = _misses(store, ctx)
    assert list(misses) == [5, 6, 7]
    (change,) = misses[5]
    assert change.startswith("src/app.py changed (sha256:") and " → sha256:" in change
    assert misses[6] == ("parent step 5 rebuilt",) and misses[7] == ("parent step 6 rebuilt",)

    misses = _misses(store, ctx, build_args={"VERSION": "1.3"})
    # as docker: a new ARG value misses where it is first used, not at the ARG
    assert 2 not in misses and 3 not in misses
    assert misses[4] == ("build arg VERSION changed (1.2 → 1.3)",)

    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("cat /app/app.py", "cat /app/app.py /version"))
    misses = _misses(store, ctx)
    assert misses[6] == ("instruction changed",) and list(misses) == [6, 7]

    assert set(_misses(store, ctx, no_cache=True).values()) == {("--no-cache",)}


@pytest.mark.integration
@needs_runc
def test_a_new_base_image_is_named(project: tuple[Store, Path]) -> None:
    store, ctx = project
    _misses(store, ctx)
    import_rootfs(store, io.BytesIO(busybox_rootfs_tar({"etc/extra": b"x"})), Reference.parse("busybox:test"),
                  changes=("ENV PATH=/bin",))
    misses = _misses(store, ctx)
    assert misses[2][0].startswith("base image changed (sha256:") and len(misses) == 6


@pytest.mark.integration
@needs_runc
def test_cli_explain_prints_a_line_per_miss(project: tuple[Store, Path]) -> None:
    store, ctx = project
    root = str(store.root)
    store.close()

    def build(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lamina", "--root", root, "build", *args, str(ctx)],
                              capture_output=True, text=True, timeout=300, check=True)

    assert " ---> Cache miss: no previous build" in build().stdout
    (ctx / "src" / "app.py").write_text("print(3)")
    out = build("--explain").stdout
    assert "step 5/7 COPY src /app: cache miss — src/app.py changed (sha256:" in out
    assert "step 6/7 RUN cat /app/app.py > /out: cache miss — parent step 5 rebuilt" in out
    (ctx / "src" / "app.py").write_text("print(4)")
    quiet = build("-q", "--explain")
    assert quiet.stdout.startswith("sha256:") and "step 5/7 COPY src /app: cache miss" in quiet.stderr
