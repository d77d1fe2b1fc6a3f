"""`lamina layers`: the terminal view, JSON, and the HTML report (checked in headless Chromium)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from helpers.cliutil import invoke
from lamina.cli.main import cli
from lamina.image.image import Layer, add_history, append_layer, scratch
from lamina.image.layerio import LayerSink
from lamina.oci import mediatype as mt
from lamina.oci.config import History
from lamina.oci.descriptor import Descriptor, Platform
from lamina.oci.reference import Reference
from lamina.store.store import Store, StoredImage

HOSTILE = "etc/<img src=x onerror=alert(1)>&\"'.txt"


def _tar(*entries: tuple[str, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                out.addfile(info)
            else:
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layer(store: Store, data: bytes) -> Layer:
    with store.blobs.writer() as w:
        sink = LayerSink(w, "gzip")
        sink.write(data)
        sink.close()
        digest = w.commit(sync=False)
    return Layer(Descriptor(mt.DOCKER_LAYER_GZIP, digest, w.size), sink.diff_id)


LAYERS = [
    ("ADD rootfs.tar /", _tar(("bin", None), ("bin/sh", b"s" * 1000), ("etc", None), ("etc/passwd", b"p" * 40),
                              (HOSTILE, b"h" * 3))),
    ("RUN make", _tar(("app", None), *((f"app/f{i:02}", b"x" * (i + 1)) for i in range(30)),
                      ("etc", None), ("etc/passwd", b"q" * 50))),
    ("RUN rm /bin/sh", _tar(("bin", None), ("bin/.wh.sh", b""))),
]


def make_image(root: Path) -> StoredImage:
    store = Store(root)
    try:
        image = scratch(Platform("linux", "amd64"))
        for i, (text, data) in enumerate(LAYERS):
            image = append_layer(image, _layer(store, data), History(created_by=text))
            if i == 0:
                image = add_history(image, History(created_by='CMD ["sh"]'))
        stored = store.put_image(image)
        store.tag(Reference.parse("demo:1"), stored.manifest_digest)
        return stored
    finally:
        store.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_image(tmp_path / "store")
    return tmp_path / "store"


def layers(root: Path, *args: str) -> Any:
    result = invoke(cli, ["--root", str(root), "layers", *args])
    return result


def test_terminal_view(root: Path) -> None:
    result = layers(root, "demo:1")
    assert result.exit_code == 0
    out = result.output
    wasted = 1000 + 40
    total = 1043 + sum(range(1, 31)) + 50
    assert f"3 layers, {total / 1000:.3g}kB, wasted {wasted / 1000:.3g}kB, efficiency {1 - wasted / total:.2%}" in out
    assert "RUN make" in out and "RUN rm /bin/sh" in out and 'CMD ["sh"]' not in out
    assert "- /bin/sh  1kB" in out and "~ /etc/passwd  50B" in out and "+ /app/f29  30B" in out
    assert "… 12 more (--limit 0 lists all)" in out  # 32 changes in layer 1, 20 shown
    assert "/bin/sh" in out.split("Wasted space")[1]


def test_limit(root: Path) -> None:
    out = layers(root, "--limit", "3", "demo:1").output
    assert "… 29 more" in out and "+ /app/f29" in out and "+ /app/f00" not in out
    assert "/app/f00" in layers(root, "--limit", "0", "demo:1").output


def test_json_matches_the_image(root: Path) -> None:
    stored = make_image(root)  # same content, same digests
    doc = json.loads(layers(root, "--format", "json", "demo:1").output)
    assert doc["image"] == str(stored.id) and doc["name"] == "demo:1"
    assert [lay["digest"] for lay in doc["layers"]] == [str(lay.digest) for lay in stored.image.layers]
    assert [lay["blob_size"] for lay in doc["layers"]] == [lay.size for lay in stored.image.layers]
    assert [lay["size"] for lay in doc["layers"]] == [1043, sum(range(1, 31)) + 50, 0]
    assert [(lay["added"], lay["changed"], lay["deleted"]) for lay in doc["layers"]] == [(5, 0, 0), (31, 1, 0),
                                                                                           (0, 0, 1)]
    assert doc["wasted"] == 1040 and doc["layers"][0]["wasted"] == 1040
    assert {(w["path"], w["how"], w["hidden_by"]) for w in doc["wasted_files"]} == {
        ("/bin/sh", "deleted", 2), ("/etc/passwd", "overwritten", 1)}
    assert len(doc["layers"][1]["files"]) == 32  # JSON lists every file unless --limit says otherwise


def test_missing_image_is_one_line(root: Path) -> None:
    result = invoke(cli, ["--root", str(root), "layers", "nope:1"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")


def test_html_is_self_contained_and_escaped(root: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    result = layers(root, "--html", str(page), "demo:1")
    assert result.output.startswith(f"Wrote {page}: 3 layers")
    text = page.read_text()
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#x27;.txt" in text
    for external in ("http://", "https://", "src=\"", "<link", "@import"):
        assert external not in text
    assert text.count("<svg") == 1 and text.count("<script>") == 1
    assert not list(tmp_path.glob(".*.partial"))


# headless Chromium reads the page as a browser would ---------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Elements(HTMLParser):
    """Every element's tag, attributes and text, from Chromium's dump of the live DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = {"tag": tag, **{k: v or "" for k, v in attrs}, "text": ""}
        self.elements.append(element)
        if tag not in ("meta", "input", "rect", "br"):
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element["text"] += data

    def find(self, **attrs: str) -> list[dict[str, Any]]:
        return [e for e in self.elements if all(e.get(k) == v for k, v in attrs.items())]


def dump_dom(page: Path, fragment: str = "") -> tuple[_Elements, str]:
    assert CHROMIUM
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--user-data-dir=" + str(page.parent / "chromium-profile"),
                           "--dump-dom", page.as_uri() + fragment],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parser = _Elements()
    parser.feed(proc.stdout)
    return parser, proc.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_numbers_in_chromium_match_the_image(root: Path, tmp_path: Path) -> None:
    stored = make_image(root)
    page = tmp_path / "report.html"
    layers(root, "--html", str(page), "demo:1")
    dom, log = dump_dom(page, "#q=f2")
    assert "Uncaught" not in log  # the page's script ran without errors
    expected = json.loads(layers(root, "--format", "json", "demo:1").output)
    assert dom.find(tag="body")[0]["data-image"] == str(stored.id)
    assert dom.find(id="size")[0]["data-value"] == str(expected["size"])
    assert dom.find(id="wasted")[0]["data-value"] == "1040"
    assert float(dom.find(id="efficiency")[0]["data-value"]) == pytest.approx(expected["efficiency"])
    assert dom.find(id="layers", tag="dd")[0]["text"] == "3"
    rows = [e for e in dom.elements if e.get("class") == "layer-row"]
    bars = [e for e in dom.elements if e.get("class") == "layer-bar"]
    details = [e for e in dom.elements if e.get("class") == "layer" and e["tag"] == "details"]
    for lay, row, bar, detail, want in zip(stored.image.layers, rows, bars, details, expected["layers"],
                                           strict=True):
        assert detail["data-digest"] == str(lay.digest)
        assert row["data-blob-size"] == str(lay.size)
        assert row["data-size"] == bar["data-size"] == str(want["size"])
        assert row["data-wasted"] == str(want["wasted"])
        assert int(detail["data-files"]) == want["added"] + want["changed"] + want["deleted"]
    assert "RUN make" in rows[1]["text"]
    hostile = [e for e in dom.elements if e.get("data-path") == "/" + HOSTILE]
    assert len(hostile) == 1 and not dom.find(tag="img")  # a file name never becomes markup
    files = [e for e in dom.elements if e["tag"] == "tr" and "file" in e.get("class", "").split()]
    shown = {e["data-path"] for e in files if "hidden" not in e["class"].split()}
    assert shown == {"/app/f20", "/app/f21", "/app/f22", "/app/f23", "/app/f24", "/app/f25",
                     "/app/f26", "/app/f27", "/app/f28", "/app/f29"}  # the #q= filter ran
    assert [d.get("open") is not None for d in details] == [False, True, False]


# a real build, read back ---------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")
def test_layers_of_a_real_build_agree_with_history(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from helpers.images import busybox_rootfs_tar

    def lamina(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "lamina", "--root", str(tmp_path / "s"), *args],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    (tmp_path / "rootfs.tar").write_bytes(busybox_rootfs_tar())
    lamina("import", "-c", "ENV PATH=/bin", str(tmp_path / "rootfs.tar"), "busybox:test")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox:test\n"
                                    "RUN mkdir /data && dd if=/dev/zero of=/data/big bs=1k count=64 && echo a > /a\n"
                                    "RUN rm /data/big && echo bb > /a\n")
    lamina("build", "-t", "app:1", str(ctx))
    doc = json.loads(lamina("layers", "--format", "json", "app:1"))
    history = [row for row in json.loads(lamina("history", "--format", "json", "app:1")) if not row["empty_layer"]]
    built = doc["layers"][1:]
    assert [lay["digest"] for lay in built] == [row["layer"] for row in reversed(history[:2])]
    assert [lay["size"] for lay in built] == [row["size"] for row in reversed(history[:2])]
    assert [(f["path"], f["kind"]) for f in built[1]["files"]] == [("/a", "changed"), ("/data/big", "deleted")]
    assert doc["wasted"] == 65536 + 2 and doc["layers"][1]["wasted"] == 65536 + 2
