"""The speculative COPY: made while the RUN before it runs, kept only when the RUN could not change it.

Each case builds twice, with speculation and without; the layers must hold the same
entries (names, types, modes, owners, link targets, contents; times aside), and the
speculated layer must be kept exactly when the RUN left the COPY's paths alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from helpers.images import busybox_image
from lamina import api
from lamina.build import speculate
from lamina.build.options import BuildOptions
from lamina.build.stagerun import StageRun
from lamina.dockerfile import instructions as ins
from lamina.image.layerio import open_layer
from lamina.store.store import Store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc"),
]


def _entries(store: Store, layer: Any) -> list[tuple[object, ...]]:
    out = []
    with open_layer(store.blobs.open(layer.digest)) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for m in tar:
            data = tar.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            out.append((m.name, m.type, m.mode, m.uid, m.gid, m.linkname, hashlib.sha256(data).hexdigest()))
    return out


def _build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dockerfile: str, *, speculating: bool,
           snapshotter: str = "auto") -> tuple[list[list[tuple[object, ...]]], list[bool]]:
    """The image's layers' entries, and for each speculation looked at, whether its layer was kept."""
    work = tmp_path / ("on" if speculating else "off") / snapshotter
    store = Store(work / "store")
    busybox_image(store)
    ctx = work / "ctx"
    (ctx / "src/sub").mkdir(parents=True)
    (ctx / "src/a.c").write_text("int a;\n")
    (ctx / "src/sub/b.c").write_text("int b;\n")
    (ctx / "f").write_text("from the context\n")
    (ctx / "Dockerfile").write_text(dockerfile)
    kept: list[bool] = []
    adopt = StageRun._adopt_speculation

    def spy(self: StageRun, lowers: list[Path], inputs: dict[str, Any]) -> Any:
        looked = self._position in self._speculations
        layer = adopt(self, lowers, inputs)
        if looked:
            kept.append(layer is not None)
        return layer

    with monkeypatch.context() as patch:
        patch.setattr(StageRun, "_adopt_speculation", spy)
        patch.setattr(speculate, "worth_it", lambda: speculating)
        stored = api.build(store, BuildOptions(context=ctx, tags=("t:latest",), no_cache=True),
                           snapshotter=snapshotter)
    return [_entries(store, layer) for layer in stored.image.layers], kept


@pytest.mark.parametrize(("steps", "kept"), [
    # the RUN writes elsewhere: the layer made meanwhile is the COPY's
    ("RUN mkdir -p /var/data && echo x > /var/data/x\nCOPY src/ /app/src/", [True]),
    # both go through /etc, a directory the RUN only passed through: still kept
    ("RUN echo x > /etc/run.conf\nCOPY src/ /etc/app/", [True]),
    ("WORKDIR /etc\nRUN echo x > /etc/run.conf\nCOPY f app/f", [True]),
    # the same file in both
    ("RUN mkdir -p /app && echo run > /app/f\nCOPY f /app/f", [False]),
    # the RUN made the destination's parent a symlink: the COPY lands in /data
    ("RUN mkdir /data && ln -s /data /app\nCOPY f /app/f", [False]),
    # a parent's mode changed, a file deleted then copied back, a directory replaced by a file
    ("RUN chmod 700 /etc\nCOPY f /etc/app/f", [False]),
    ("RUN rm /etc/group\nCOPY f /etc/group", [False]),
    ("RUN rm -rf /root && echo file > /root\nCOPY f /root", [False]),
    # a symlink already on the destination's path (below the RUN): given up
    ("RUN ln -s /tmp /link\nRUN echo x > /x\nCOPY f /link/f", [False]),
    # a numeric --chown is kept; a name is looked up in the image, so not speculated
    ("RUN echo x > /x\nCOPY --chown=7:8 src/ /app/", [True]),
    ("RUN echo x > /x\nCOPY --chown=root src/ /app/", []),
    # two COPYs in a row, both made while the RUN runs: the second is compared with both layers
    ("RUN echo x > /x\nCOPY src/ /app/src/\nCOPY f /app/bin/f", [True, True]),
    ("RUN echo x > /x\nCOPY f /app/f\nCOPY src/a.c /app/f", [True, False]),
    # a COPY that runs (the first step) has the next one made meanwhile
    ("COPY src/ /app/src/\nCOPY f /app/f", [True]),
    ("COPY src/ /app/\nCOPY f /app/sub/b.c", [False]),
])
def test_a_speculated_copy_gives_the_layers_of_a_plain_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              steps: str, kept: list[bool]) -> None:
    dockerfile = f"FROM busybox:test\n{steps}\n"
    plain, none = _build(monkeypatch, tmp_path, dockerfile, speculating=False)
    speculated, looked = _build(monkeypatch, tmp_path, dockerfile, speculating=True)
    assert none == []
    assert speculated == plain
    assert looked == kept


@pytest.mark.parametrize(("steps", "kept"), [
    ("RUN echo x > /x\nCOPY src/ /app/src/\nCOPY f /app/bin/f", [True, True]),
    ("RUN mkdir /data && ln -s /data /app\nCOPY f /app/f", [False]),
    ("RUN rm /etc/group\nCOPY f /etc/group", [False]),
])
def test_the_same_with_the_native_snapshotter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, steps: str,
                                            kept: list[bool]) -> None:
    """Without overlayfs, upper dirs are computed from a baseline, in overlay's format: the same rule holds."""
    dockerfile = f"FROM busybox:test\n{steps}\n"
    plain, _ = _build(monkeypatch, tmp_path, dockerfile, speculating=False, snapshotter="native")
    speculated, looked = _build(monkeypatch, tmp_path, dockerfile, speculating=True, snapshotter="native")
    assert speculated == plain
    assert looked == kept


@pytest.mark.parametrize(("text", "eligible"), [
    ("COPY a /b", True),
    ("COPY --chown=1:2 a /b", True),
    ("COPY --chown=app a /b", False),
    ("COPY --chown=1:staff a /b", False),
    ("COPY --from=base a /b", False),
    ("COPY --link a /b", False),
    ("ADD a /b", False),
    ("RUN true", False),
])
def test_which_steps_are_speculated(text: str, eligible: bool) -> None:
    from lamina.dockerfile.parser import parse

    node = parse(f"FROM x\n{text}\n", "Dockerfile").nodes[1]
    assert speculate.eligible(ins.to_instruction(node, "Dockerfile")) is eligible


def _copy(text: str) -> ins.Copy:
    from lamina.dockerfile.parser import parse

    instr = ins.to_instruction(parse(f"FROM x\n{text}\n", "Dockerfile").nodes[1], "Dockerfile")
    assert isinstance(instr, ins.Copy)
    return instr


def test_when_a_speculated_layer_stands_for_the_step(tmp_path: Path) -> None:
    """The same COPY, sources and workdir, over the same layers plus the steps' since, which left its paths alone."""
    from lamina.build.stepkeys import canonical_instruction
    from lamina.image.image import Layer
    from lamina.oci.descriptor import Descriptor
    from lamina.oci.digest import Digest

    layer = Layer(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", Digest.of(b"blob"), 4), Digest.of(b"tar"))
    made_dir, base, run_upper, other = (tmp_path / n for n in ("made", "base", "run", "other"))
    (made_dir / "app/src").mkdir(parents=True)
    (run_upper / "var/data").mkdir(parents=True)
    other.mkdir()
    copy = _copy("COPY src/ /app/src/")
    key = canonical_instruction(copy)

    made = speculate.Made(layer, made_dir, "sha256:s")

    def spec(gave_up: bool = False) -> speculate.Speculation:
        def make() -> speculate.Made:
            if gave_up:
                raise speculate.GaveUp("test")
            return made
        return speculate.Speculation(copy, "/", [base], make)

    assert speculate.adopted(spec(), [run_upper, base], key, "sha256:s", "/") == layer
    assert speculate.adopted(spec(), [run_upper, other, base], key, "sha256:s", "/") == layer  # two steps since
    assert speculate.adopted(spec(gave_up=True), [run_upper, base], key, "sha256:s", "/") is None
    assert speculate.adopted(spec(), [base], key, "sha256:s", "/") is None  # no step since: not over its lowers
    assert speculate.adopted(spec(), [run_upper, other], key, "sha256:s", "/") is None  # other layers below
    assert speculate.adopted(spec(), [run_upper, base], key, "sha256:changed", "/") is None  # the context changed
    assert speculate.adopted(spec(), [run_upper, base], key, "sha256:s", "/w") is None
    assert speculate.adopted(spec(), [run_upper, base], canonical_instruction(_copy("COPY src/ /b/")),
                             "sha256:s", "/") is None
    (run_upper / "app").mkdir(mode=0o700)  # the RUN made /app, with another mode than the COPY's
    assert speculate.adopted(spec(), [run_upper, base], key, "sha256:s", "/") is None


def test_destination_as_the_copy_writes_it() -> None:
    assert speculate.destination(_copy("COPY a src/"), "/app") == "/app/src"
    assert speculate.destination(_copy("COPY a ./x/../y"), "") == "/y"
    assert speculate.destination(_copy("COPY a //abs/"), "/w") == "/abs"


@pytest.mark.parametrize(("steps", "line", "message"), [
    ("RUN echo x > /x\nCOPY missing /app/", 3, "missing"),  # the speculation fails first, the step reports
    ("RUN echo x > /x\nCOPY f /etc/passwd/", 3, "not a directory"),  # fails inside the overlay, midway
    ("RUN exit 3\nCOPY src/ /app/", 2, "non-zero code: 3"),  # the RUN fails while its COPY is being made
])
def test_a_failing_step_reports_one_line_and_leaves_no_mount(tmp_path: Path, steps: str, line: int,
                                                             message: str) -> None:
    from helpers.cli import lamina

    root = tmp_path / "store"
    busybox_image(Store(root))
    ctx = tmp_path / "ctx"
    (ctx / "src").mkdir(parents=True)
    (ctx / "src/a.c").write_text("int a;\n")
    (ctx / "f").write_text("f\n")
    (ctx / "Dockerfile").write_text(f"FROM busybox:test\n{steps}\n")
    images = lamina(root, "images", "-q").stdout
    proc = lamina(root, "build", "-q", "-t", "t", str(ctx), code=1)
    error = [text for text in proc.stderr.splitlines() if text.strip()]
    assert len(error) == 1 and error[0].startswith(f"Error: Dockerfile:{line}:") and message in error[0], error
    assert not [p for p in (root / "mounts").iterdir() if not p.name.startswith(".")], "a mount was left"
    assert not (root / "tmp").exists() or not list((root / "tmp").iterdir())
    assert lamina(root, "images", "-q").stdout == images
