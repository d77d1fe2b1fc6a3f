"""Build logs on disk (`lamina logs`) and a shell in a failed RUN's container (`lamina debug`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import lamina
from helpers.images import busybox_rootfs_tar
from lamina.build import buildlog, events
from lamina.build.buildlog import BuildLog, builds, find_build, load_debug
from lamina.errors import BuildError


# the log writer, without a build ---------------------------------------------------------------------
def _feed(log: BuildLog, number: int, *chunks: bytes) -> None:
    log.record(events.StepStarted("0", number, 3, f"RUN step {number}"))
    log.record(events.CacheMiss("0", number, 3, f"RUN step {number}", ("no previous build",)))
    for chunk in chunks:
        log.record(events.StepOutput("0", number, chunk))
    log.record(events.StepDone("0", number, "abc", 0.5, False))


def test_steps_are_logged_whole_and_the_outcome_recorded(tmp_path: Path) -> None:
    log = BuildLog(tmp_path, about={"context": "/ctx"})
    big = b"".join(b"line %d\n" % i for i in range(20000))
    _feed(log, 2, big[:70000], big[70000:])
    _feed(log, 3, b"partial")
    log.finish(BuildError("Dockerfile:3: RUN x: returned a non-zero code: 1"))
    text = (log.path / "2.log").read_bytes()
    assert text.startswith(b"Step 2/3 : RUN step 2\n ---> Cache miss: no previous build\n")
    assert big in text and text.endswith(b" ---> abc in 0.500s\n")
    assert (log.path / "3.log").read_bytes().endswith(b"Error: Dockerfile:3: RUN x: returned a non-zero code: 1\n")
    info = find_build(tmp_path)
    assert (info.build_id, info.status, info.failed_step, dict(info.steps)) == (
        log.build_id, "failed", 3, {2: "RUN step 2", 3: "RUN step 3"})
    assert json.loads((log.path / "build.json").read_text())["context"] == "/ctx"


def test_quiet_steps_write_no_file(tmp_path: Path) -> None:
    log = BuildLog(tmp_path)
    log.record(events.StepStarted("0", 2, 2, "ENV A=1"))
    log.record(events.StepCached("0", 2))
    log.record(events.StepDone("0", 2, "abc", 0.0, True))
    log.finish()
    info = find_build(tmp_path)
    assert [p.name for p in log.path.iterdir()] == ["build.json"] and info.step_numbers() == [2]
    assert info.step_output(2) == b"Step 2/2 : ENV A=1\n ---> Using cache\n ---> abc in 0.000s (cached)\n"


def test_only_the_last_builds_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buildlog, "KEEP_BUILDS", 3)
    monkeypatch.setattr(buildlog, "_PRUNE_SLACK", 0)
    ids = [f"20260101-00000{i}-aaaaaa" for i in range(5)]
    for build_id in ids:
        BuildLog(tmp_path, build_id).finish()
    assert [b.build_id for b in builds(tmp_path)] == ids[:-4:-1]
    assert find_build(tmp_path, "20260101-000003").build_id == ids[3]
    with pytest.raises(BuildError, match="ambiguous"):
        find_build(tmp_path, "2026")
    with pytest.raises(BuildError, match="no build '1999' is kept"):
        find_build(tmp_path, "1999")


def test_no_build_yet(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no build has been logged yet"):
        find_build(tmp_path)


def test_a_failed_run_is_kept_for_debugging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buildlog, "KEEP_DEBUG", 2)
    kept = []
    for i in range(3):
        log = BuildLog(tmp_path, f"20260101-00000{i}-bbbbbb")
        upper = tmp_path / f"upper{i}"
        upper.mkdir()
        (upper / "marker").write_text(str(i))
        log.keep_failed(upper, {"lowers": ["/snap"], "process": {"cwd": "/"}})
        log.finish(BuildError("failed"))
        kept.append(log.build_id)
    state = load_debug(tmp_path, kept[2])
    assert Path(state["upper"], "marker").read_text() == "2" and state["lowers"] == ["/snap"]
    assert state["build"] == kept[2] and find_build(tmp_path, kept[2]).debug
    with pytest.raises(BuildError, match="kept no failed step"):
        load_debug(tmp_path, kept[0])  # beyond KEEP_DEBUG


# the commands, with real builds --------------------------------------------------------------------------
pytestmark_real = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")

FAILING = """FROM busybox:test
ENV GREETING=hello
WORKDIR /work
USER 1000:1000
RUN seq 1 3000 && echo partial > /tmp/marker && echo $GREETING > /tmp/env && exit 5
"""


@pytest.fixture
def failed(tmp_path: Path) -> tuple[Path, Path, str]:
    """A store whose last build failed in a RUN: (store, context, the error line)."""
    root = tmp_path / "store"
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(busybox_rootfs_tar())
    lamina(root, "import", "-c", "ENV PATH=/bin", str(tarball), "busybox:test")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(FAILING)
    bad = lamina(root, "build", "--progress", "plain", str(ctx), check=False)
    assert bad.returncode == 1
    return root, ctx, bad.stderr.strip()


@pytest.mark.integration
@pytestmark_real
def test_failed_run_prints_how_to_debug_and_the_shell_sees_its_writes(failed: tuple[Path, Path, str]) -> None:
    root, _, error = failed
    build_id = find_build(root).build_id
    assert error == (f"Error: Dockerfile:5: RUN seq 1 3000 && echo partial > /tmp/marker && echo $GREETING > "
                     f"/tmp/env && exit 5: returned a non-zero code: 5 (to debug it: lamina --root {root} debug "
                     f"{build_id})")
    out = lamina(root, "debug", build_id[:15], "--cmd", "cat /tmp/marker /tmp/env; pwd; id -u; echo $GREETING")
    assert out.stdout.split() == ["partial", "hello", "/work", "1000", "hello"]
    # what the shell changes is thrown away: the kept state can be debugged again
    lamina(root, "debug", "--cmd", "echo changed > /tmp/marker")
    assert lamina(root, "debug", "--cmd", "cat /tmp/marker").stdout == "partial\n"
    assert lamina(root, "debug", "--cmd", "exit 4", check=False).returncode == 4


@pytest.mark.integration
@pytestmark_real
def test_logs_show_every_step_unclipped(failed: tuple[Path, Path, str]) -> None:
    root, ctx, _ = failed
    out = lamina(root, "logs").stdout
    assert out.startswith("Step 1/5 : FROM busybox:test\n")
    assert "\n".join(str(i) for i in range(1, 3001)) in out and "returned a non-zero code: 5" in out
    step = lamina(root, "logs", "5").stdout
    assert step.startswith("Step 5/5 : RUN seq") and " ---> Cache miss: no previous build\n1\n2\n" in step
    assert lamina(root, "logs", find_build(root).build_id, "3").stdout.startswith("Step 3/5 : WORKDIR /work")
    listed = lamina(root, "logs", "--list").stdout.splitlines()
    assert listed[0].split() == ["BUILD", "STATUS", "STEPS", "FAILED", "STEP", "DEBUG"]
    assert listed[1].split()[1:] == ["failed", "5", "5", "yes"]
    missing = lamina(root, "logs", "9", check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("Error: build ") and "no log for step 9" in missing.stderr
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN echo fixed\n")
    lamina(root, "build", "--progress", "plain", str(ctx))
    assert "fixed" in lamina(root, "logs", "2").stdout
    assert "partial" in lamina(root, "debug", "--cmd", "cat /tmp/marker").stdout  # the newest kept failure


@pytest.mark.integration
@pytestmark_real
def test_debug_without_a_failure_is_one_line(tmp_path: Path) -> None:
    out = lamina(tmp_path / "empty", "debug", check=False)
    assert out.returncode == 1 and out.stderr.startswith("Error: no build kept a failed RUN")
    assert "Traceback" not in out.stderr


@pytest.mark.integration
@pytestmark_real
@pytest.mark.skipif(not shutil.which("script"), reason="needs script(1) for a terminal")
def test_build_debug_opens_a_shell_on_a_terminal(failed: tuple[Path, Path, str]) -> None:
    root, ctx, _ = failed
    command = f"{sys.executable} -m lamina --root {root} build --progress plain --debug {ctx}"
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], input="cat /tmp/marker\nexit\n",
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TERM": "dumb"})
    assert proc.returncode == 1
    assert "Opening a shell in the failed step's container" in proc.stdout and "partial" in proc.stdout


@pytest.mark.integration
@pytestmark_real
def test_debug_recreates_cache_tmpfs_and_context_mounts(tmp_path: Path) -> None:
    root = tmp_path / "store"
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(busybox_rootfs_tar())
    lamina(root, "import", "-c", "ENV PATH=/bin", str(tarball), "busybox:test")
    ctx = tmp_path / "ctx"
    (ctx / "conf").mkdir(parents=True)
    (ctx / "conf" / "app.ini").write_text("mode=debug\n")
    (ctx / "Dockerfile").write_text(
        "FROM busybox:test\n"
        "RUN --mount=type=cache,target=/cache --mount=type=tmpfs,target=/scratch "
        "--mount=type=bind,source=conf,target=/conf --mount=type=secret,id=tok "
        "echo warm > /cache/state && exit 3\n")
    assert lamina(root, "build", "--progress", "plain", str(ctx), check=False).returncode == 1
    out = lamina(root, "debug", "--cmd", "cat /cache/state /conf/app.ini; grep -c ' /scratch tmpfs' /proc/mounts;"
                 " touch /conf/x 2>/dev/null || echo read-only")
    assert out.stdout.split("\n") == ["warm", "mode=debug", "1", "read-only", ""]
    assert "Note: RUN --mount not re-created (secrets are never kept; binds from stages or images): " \
           "secret /run/secrets/tok" in out.stderr
