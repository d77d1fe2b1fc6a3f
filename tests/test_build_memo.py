"""Whole-build memos: an unchanged rebuild is answered from the memo, and any change is seen.

The pure parts (the key, the racy check) are unit tests; the rest drives the real CLI:
a memo's replayed output must equal what the slow path prints for the same fully cached
build, and every kind of change a build depends on must send the next build down the slow
path — an edit that keeps size and mtime, a new file, a retargeted symlink, a moved base
tag, a removed image, a new .dockerignore.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cli import lamina
from helpers.images import import_busybox
from lamina.build import events
from lamina.build.memo import MemoRecorder, memo_key, replay, signature
from lamina.build.options import BuildOptions
from lamina.store.db import Metadata

# --- pure parts ---------------------------------------------------------------------------


def test_the_key_follows_every_option_that_changes_the_result(tmp_path: Path) -> None:
    base = BuildOptions(context=tmp_path, tags=("app:1",), build_args={"A": "1"})
    key = memo_key(base, "1.0")
    assert key is not None and key == memo_key(BuildOptions(context=tmp_path, tags=("app:1",),
                                                            build_args={"A": "1"}), "1.0")
    others = [
        BuildOptions(context=tmp_path, tags=("app:2",), build_args={"A": "1"}),
        BuildOptions(context=tmp_path, tags=("app:1",), build_args={"A": "2"}),
        BuildOptions(context=tmp_path, tags=("app:1",), build_args={"A": "1"}, target="x"),
        BuildOptions(context=tmp_path, tags=("app:1",), build_args={"A": "1"}, timestamp=1),
        BuildOptions(context=tmp_path, tags=("app:1",), build_args={"A": "1"}, oci=True),
        BuildOptions(context=tmp_path, tags=("app:1",), build_args={"A": "1"}, labels={"l": "v"}),
        BuildOptions(context=tmp_path, tags=("app:1",), build_args={"A": "1"}, dockerfile=tmp_path / "Other"),
    ]
    assert len({memo_key(o, "1.0") for o in others} | {key}) == len(others) + 1
    assert memo_key(base, "1.1") != key  # another lamina may build differently


def test_the_key_changes_with_lamina_s_own_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.build import memo

    options = BuildOptions(context=tmp_path)
    key = memo_key(options, "1.0")
    assert memo.code_stamp() > 0
    monkeypatch.setattr(memo, "code_stamp", lambda: 1)
    assert memo_key(options, "1.0") != key  # an edited checkout is not the code that made the memo


@pytest.mark.parametrize("change", [{"pull": True}, {"no_cache_filter": ("a",)},
                                    {"dockerfile_text": "FROM scratch"}])
def test_builds_that_depend_on_more_than_files_get_no_memo(tmp_path: Path, change: dict[str, object]) -> None:
    assert memo_key(BuildOptions(context=tmp_path, **change), "1.0") is None  # type: ignore[arg-type]


def test_a_path_changed_after_the_build_started_gets_no_memo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.build import memo

    monkeypatch.setattr(memo, "RACY_NS", 50_000_000)  # a filesystem with fine timestamps
    db = Metadata(tmp_path / "db")
    old, new = tmp_path / "old", tmp_path / "new"
    old.write_text("x")
    time.sleep(0.1)
    recorder = MemoRecorder("k")
    new.write_text("y")  # as if written between the build's read and its end: same clock tick possible
    recorder.watch([old, new])
    assert not recorder.write(db, manifest="m", image_id="i", short_id="s", tags=[], tag_names=[], cache_keys=[])
    time.sleep(0.1)
    recorder = MemoRecorder("k")
    recorder.watch([old, new, tmp_path / "absent"])
    assert recorder.write(db, manifest="m", image_id="i", short_id="s", tags=[], tag_names=[], cache_keys=[])
    assert db.memo_get("k") is not None
    db.close()


def test_by_default_a_path_changed_within_a_second_of_the_start_gets_no_memo(tmp_path: Path) -> None:
    db = Metadata(tmp_path / "db")
    (tmp_path / "f").write_text("x")
    time.sleep(0.3)  # on a filesystem with one-second timestamps, a later write could look this old
    recorder = MemoRecorder("k")
    recorder.watch([tmp_path / "f"])
    assert not recorder.write(db, manifest="m", image_id="i", short_id="s", tags=[], tag_names=[], cache_keys=[])
    db.close()


def test_replay_gives_a_fully_cached_builds_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lamina.build import memo

    monkeypatch.setattr(memo, "RACY_NS", 50_000_000)
    db = Metadata(tmp_path / "db")
    (tmp_path / "f").write_text("x")
    time.sleep(0.1)
    recorder = MemoRecorder("k")
    recorder.watch([tmp_path / "f"])
    for event in (events.StepStarted("0", 1, 3, "FROM base"), events.StepDone("0", 1, "aaa", 0.1, False),
                  events.StepStarted("0", 2, 3, "RUN make"), events.StepOutput("0", 2, b"compiling\n"),
                  events.StepCached("0", 9),  # another stage's: says nothing of step 2
                  events.StepDone("0", 2, "bbb", 3.0, False),
                  events.StepStarted("0", 3, 3, "onbuild RUN x"), events.StepDone("0", 3, "ccc", 0.0, False),
                  events.Warning_("careful")):
        recorder.observe(event)
        if event == events.StepOutput("0", 2, b"compiling\n"):
            recorder.keyed("0", 2)  # the RUN looked itself up (and missed): a rebuild finds it
    recorder.write(db, manifest="m", image_id="sha256:i", short_id="i", tags=["app:1"],
                   tag_names=["docker.io/library/app:1"], cache_keys=[])
    seen: list[events.Event] = []
    replay(json.loads(db.memo_get("k") or ""), seen.append, 0.5)
    assert seen == [
        events.StepStarted("0", 1, 3, "FROM base"), events.StepDone("0", 1, "aaa", 0.0, False),
        events.StepStarted("0", 2, 3, "RUN make"), events.StepCached("0", 2), events.StepDone("0", 2, "bbb", 0.0, True),
        events.StepStarted("0", 3, 3, "onbuild RUN x"), events.StepDone("0", 3, "ccc", 0.0, False),
        events.Warning_("careful"), events.BuildDone("i", ("app:1",), 1, 3, 0.5),
    ]
    db.close()


def test_signature_sees_what_a_write_changes_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("aaaa")
    before = signature(str(path))
    stat = path.stat()
    time.sleep(0.02)
    path.write_text("bbbb")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = signature(str(path))
    assert before is not None and after is not None and before[:3] == after[:3] and before != after
    assert signature(str(tmp_path / "missing")) is None


# --- through the CLI ---------------------------------------------------------------------

DOCKERFILE = """\
FROM busybox:test AS tools
ARG FLAVOUR=plain
RUN echo "tools $FLAVOUR" > /tools
ONBUILD RUN echo later > /later

FROM tools AS child
RUN cat /later > /child

FROM busybox:test
ENV MODE=prod
WORKDIR /app
COPY src/ ./src/
COPY link/conf.txt /etc/conf.txt
COPY --from=tools /tools /tools
COPY --from=child /child /child
COPY --link notes/*.txt /notes/
RUN cat /app/src/* /etc/conf.txt > /all
LABEL purpose=memo
CMD ["cat", "/all"]
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("needs root and runc")
    tmp = tmp_path_factory.mktemp("memo")
    import_busybox(tmp / "store", tmp / "work")
    return tmp / "store"


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Path]:
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src" / "a.sh").write_text("echo a\n")
    (ctx / "src" / "b.sh").write_text("echo b\n")
    (ctx / "conf-1").mkdir()
    (ctx / "conf-1" / "conf.txt").write_text("one\n")
    (ctx / "conf-2").mkdir()
    (ctx / "conf-2" / "conf.txt").write_text("two\n")
    (ctx / "link").symlink_to("conf-1")
    (ctx / "notes").mkdir()
    (ctx / "notes" / "x.txt").write_text("x\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    time.sleep(1.2)  # older than the build by more than memo.RACY_NS
    yield ctx


def _build(root: Path, ctx: Path, *extra: str) -> tuple[str, str]:
    """(plain output, image ID) of ``lamina build``."""
    out = lamina(root, "build", "--progress", "plain", "-t", "memo:app", *extra, str(ctx)).stdout
    image = lamina(root, "inspect", "--format", "{{.Id}}", "memo:app").stdout.strip()
    return out, image


def _last_build(root: Path) -> dict[str, object]:
    newest = sorted((root / "logs").iterdir())[-1]
    return json.loads((newest / "build.json").read_text())  # type: ignore[no-any-return]


def _forget_memos(root: Path) -> None:
    with sqlite3.connect(root / "lamina.db") as conn:
        conn.execute("DELETE FROM build_memo")


@pytest.mark.integration
def test_the_memo_prints_and_gives_what_the_fully_cached_build_does(root: Path, ctx: Path) -> None:
    first, image = _build(root, ctx)
    assert "Using cache" not in first.split("COPY src/")[1].split("\n", 2)[1]  # it ran
    _forget_memos(root)
    slow, slow_image = _build(root, ctx)  # the slow path, fully cached (it writes the memo again)
    assert _last_build(root).get("memo") is None
    fast, fast_image = _build(root, ctx)
    assert _last_build(root).get("memo") is True
    assert fast == slow and fast_image == slow_image == image
    assert fast.count("Using cache") == 14 and "Successfully tagged memo:app\n" in fast
    quiet = lamina(root, "build", "-q", "--iidfile", str(ctx.parent / "iid"), "-t", "memo:app", str(ctx)).stdout
    assert quiet.strip() == image == (ctx.parent / "iid").read_text()
    with sqlite3.connect(root / "lamina.db") as conn:  # lamina history: the last build took every step cached
        flags = conn.execute("SELECT cached FROM image_steps WHERE config=?", (image,)).fetchall()
    assert flags and all(flag == (1,) for flag in flags)


def _edit_keeping_size_and_mtime(ctx: Path) -> None:
    path = ctx / "src" / "a.sh"
    st = path.stat()
    time.sleep(0.02)
    path.write_text("echo A\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _new_file(ctx: Path) -> None:
    (ctx / "src" / "c.sh").write_text("echo c\n")


def _retarget_link(ctx: Path) -> None:
    (ctx / "link").unlink()
    (ctx / "link").symlink_to("conf-2")


def _new_ignore(ctx: Path) -> None:
    (ctx / ".dockerignore").write_text("src/b.sh\n")


def _wildcard_match(ctx: Path) -> None:
    (ctx / "notes" / "y.txt").write_text("y\n")


def _dockerfile(ctx: Path) -> None:
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("MODE=prod", "MODE=dev"))


@pytest.mark.integration
@pytest.mark.parametrize("edit", [_edit_keeping_size_and_mtime, _new_file, _retarget_link, _new_ignore,
                                  _wildcard_match, _dockerfile], ids=lambda f: f.__name__.strip("_"))
def test_a_change_to_what_the_build_read_is_seen(root: Path, ctx: Path, edit: object) -> None:
    _build(root, ctx)
    _, image = _build(root, ctx)  # the memo is written by now
    assert callable(edit)
    edit(ctx)
    out, changed = _build(root, ctx)
    assert _last_build(root).get("memo") is None
    assert changed != image


@pytest.mark.integration
def test_a_moved_base_tag_a_removed_image_and_a_moved_tag_are_seen(root: Path, ctx: Path) -> None:
    _build(root, ctx)
    _, image = _build(root, ctx)
    lamina(root, "tag", "busybox:test", "memo:app")  # the build's tag now names another image
    _, again = _build(root, ctx)
    assert _last_build(root).get("memo") is None and again == image
    lamina(root, "rmi", "memo:app")
    _, again = _build(root, ctx)
    assert _last_build(root).get("memo") is None and again == image
    lamina(root, "tag", "memo:app", "memo:base")  # a new base for a second Dockerfile
    other = ctx.parent / "other"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM memo:base\nENV X=1\n")
    time.sleep(1.2)
    for _ in range(2):
        first = lamina(root, "build", "-q", "-t", "memo:other", str(other)).stdout.strip()
    assert _last_build(root).get("memo") is True
    lamina(root, "tag", "busybox:test", "memo:base")
    moved = lamina(root, "build", "-q", "-t", "memo:other", str(other)).stdout.strip()
    assert _last_build(root).get("memo") is None and moved != first


@pytest.mark.integration
def test_no_cache_never_takes_the_memo_but_leaves_one_when_nothing_changed(root: Path, ctx: Path) -> None:
    _build(root, ctx)
    _build(root, ctx)
    out, rebuilt = _build(root, ctx, "--no-cache")
    assert _last_build(root).get("memo") is None and "Using cache" not in out
    _, again = _build(root, ctx)  # every RUN made the same files again: the memo stands for this build
    assert _last_build(root).get("memo") is True and again == rebuilt


@pytest.mark.integration
def test_after_a_no_cache_build_that_made_other_content_the_next_build_gives_its_image(
        root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "random"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\nRUN cat /proc/sys/kernel/random/uuid > /id\n"
                                    "RUN cp /id /copy\nENV DONE=1\n")
    time.sleep(1.2)
    first = lamina(root, "build", "-q", "-t", "memo:random", str(ctx)).stdout.strip()
    other = lamina(root, "build", "-q", "--no-cache", "-t", "memo:random", str(ctx)).stdout.strip()
    assert other != first
    _forget_memos(root)  # the slow path follows the records to the new chain ...
    assert lamina(root, "build", "-q", "-t", "memo:random", str(ctx)).stdout.strip() == other
    again = lamina(root, "build", "-q", "-t", "memo:random", str(ctx)).stdout.strip()
    assert _last_build(root).get("memo") is True and again == other  # ... and the memo says so too
    ran = lamina(root, "run", "--rm", "memo:random", "sh", "-c", "cmp /id /copy && echo same").stdout
    assert ran.strip() == "same"


def test_a_base_is_watched_through_its_tag_or_not_at_all(tmp_path: Path) -> None:
    db = Metadata(tmp_path / "db")
    db.add_image("sha256:" + "a" * 64, "sha256:" + "c" * 64, "m")
    db.set_tag("docker.io/library/base:1", "sha256:" + "a" * 64)
    recorder = MemoRecorder("k")
    recorder.resolved("base:1", "sha256:" + "a" * 64, db)
    recorder.resolved("base@sha256:" + "a" * 64, "sha256:" + "a" * 64, db)
    recorder.resolved("c" * 64, "sha256:" + "a" * 64, db)
    assert recorder.bases == [["tag", "docker.io/library/base:1", "sha256:" + "a" * 64],
                              ["image", "sha256:" + "a" * 64], ["image", "sha256:" + "a" * 64]]
    assert not recorder.reason
    recorder.resolved("cccc", "sha256:" + "a" * 64, db)  # an ID prefix may name another image later
    assert "prefix" in recorder.reason
    other = MemoRecorder("k")
    other.resolved("base@sha256:" + "b" * 64, "sha256:" + "a" * 64, db)  # an index's digest
    assert "repository digest" in other.reason
    db.close()
