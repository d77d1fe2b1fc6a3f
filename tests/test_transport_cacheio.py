"""The build cache shared through a registry or a directory: two stores stand for two CI runners."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from helpers.cli import lamina
from helpers.images import busybox_rootfs_tar
from helpers.registry import running_registry
from lamina.errors import BuildError, LaminaError
from lamina.image.image import Image, Layer, add_history, append_layer, scratch
from lamina.oci import mediatype as mt
from lamina.oci.config import History
from lamina.oci.descriptor import Descriptor
from lamina.oci.digest import Digest
from lamina.transport.cacheio import (
    CACHE_CONFIG,
    CacheSpec,
    cache_manifest,
    decode_cache_config,
    encode_cache,
    parse_cache_spec,
    select_records,
)

# --- the flags and the format (pure) ------------------------------------------------------


@pytest.mark.parametrize(("text", "export", "want"), [
    ("type=registry,ref=reg:5000/app:cache", False, CacheSpec("registry", "reg:5000/app:cache")),
    ("type=registry,ref=reg:5000/app:cache,mode=max", True, CacheSpec("registry", "reg:5000/app:cache", "max")),
    ("busybox", False, CacheSpec("registry", "docker.io/library/busybox:latest")),
    ("type=local,dest=/tmp/c", True, CacheSpec("local", "/tmp/c")),
    ("type=local,src=/tmp/c", False, CacheSpec("local", "/tmp/c")),
    ("type=registry,ref=r/a,oci-mediatypes=true,image-manifest=true", True, CacheSpec("registry", "docker.io/r/a:latest")),
])
def test_parse_cache_spec(text: str, export: bool, want: CacheSpec) -> None:
    assert parse_cache_spec(text, export=export) == want


@pytest.mark.parametrize(("text", "export", "message"), [
    ("type=s3,bucket=x", True, "unsupported cache type 's3'"),
    ("type=local,src=/x", True, "type=local needs dest=DIR"),
    ("type=registry", False, "needs ref="),
    ("type=registry,ref=a,mode=all", True, "mode must be min or max"),
    ("type=registry,ref=a,colour=red", True, "unknown attribute 'colour'"),
    ("type=registry,ref", True, "expected KEY=VALUE"),
])
def test_parse_cache_spec_errors(text: str, export: bool, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        parse_cache_spec(text, export=export)


def _layer(n: int) -> Layer:
    return Layer(Descriptor(mt.DOCKER_LAYER_GZIP, Digest.of(b"blob%d" % n), 10 + n), Digest.of(b"tar%d" % n))


def _record(layer: Layer | None, created: str) -> dict[str, object]:
    out: dict[str, object] = {"created": created}
    if layer is not None:
        out["layer"] = {"digest": str(layer.digest), "diff_id": str(layer.diff_id), "size": layer.size,
                        "media_type": layer.desc.media_type}
    return out


def test_encode_decode_round_trip_is_canonical() -> None:
    one, two = _layer(1), _layer(2)
    records = {"sha256:b": _record(two, "t2"), "sha256:a": _record(one, "t1"), "sha256:c": _record(None, "t3"),
               "sha256:d": _record(one, "t4")}
    config, layers = encode_cache(records)
    assert [d.digest for d in layers] == [two.digest, one.digest]  # first use first, once each
    assert decode_cache_config(config) == records
    assert encode_cache(dict(reversed(records.items())))[0] == config  # key order does not matter
    manifest = cache_manifest(config, layers)
    assert manifest.config.media_type == CACHE_CONFIG and manifest.media_type == mt.OCI_MANIFEST
    assert manifest.config.digest == Digest.of(config)


@pytest.mark.parametrize("data", [b"[]", b'{"version": 9, "records": {}}', b'{"version": 1}',
                                  b'{"version": 1, "records": {"k": 3}}', b"not json"])
def test_decode_rejects_malformed_configs(data: bytes) -> None:
    with pytest.raises(LaminaError, match="malformed cache config"):
        decode_cache_config(data)


def test_select_records_min_keeps_the_image_chain_only() -> None:
    mine, other = _layer(1), _layer(2)
    image: Image = append_layer(scratch(), mine, History(created_by="RUN x", created="t1"))
    image = add_history(image, History(created_by="ENV A=1", created="t2", empty_layer=True))
    records = {"k1": _record(mine, "t1"), "k2": _record(None, "t2"), "k3": _record(other, "t1"),
               "k4": _record(None, "t9")}
    assert set(select_records(records, image, "min")) == {"k1", "k2"}
    assert set(select_records(records, image, "max")) == set(records)


# --- two runners: A exports, B (an empty store) imports and runs no RUN step ----------------

needs_runc = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runc"), reason="needs root and runc")

MULTI = """\
FROM {base} AS builder
RUN cat /proc/sys/kernel/random/uuid > /out
FROM {base}
COPY app.txt /app.txt
COPY --from=builder /out /out
RUN cat /out /app.txt > /copied && cat /proc/sys/kernel/random/uuid >> /copied
ENV MODE=cached
CMD ["cat", "/copied"]
"""
SINGLE = """\
FROM {base}
COPY app.txt /app.txt
RUN cat /app.txt /proc/sys/kernel/random/uuid > /copied
WORKDIR /srv
CMD ["cat", "/copied"]
"""


def _context(path: Path, dockerfile: str, mtime: int) -> Path:
    """A build context; each runner checks it out in its own place, with its own mtimes."""
    path.mkdir()
    (path / "Dockerfile").write_text(dockerfile)
    (path / "app.txt").write_text("application\n")
    for entry in path.iterdir():
        os.utime(entry, (mtime, mtime))
    return path


@needs_runc
@pytest.mark.integration
@pytest.mark.parametrize(("kind", "mode", "dockerfile"), [
    ("registry", "max", MULTI), ("registry", "min", SINGLE), ("local", "max", MULTI), ("local", "min", SINGLE)])
def test_runner_b_reuses_runner_a_cache(tmp_path: Path, kind: str, mode: str, dockerfile: str) -> None:
    with running_registry(tmp_path / "registry") as reg:
        runner_a, runner_b = tmp_path / "a", tmp_path / "b"
        tarball = tmp_path / "rootfs.tar"
        tarball.write_bytes(busybox_rootfs_tar())
        base = f"{reg.host}/base/busybox:1"
        lamina(runner_a, "import", "-c", "ENV PATH=/bin", str(tarball), base)
        lamina(runner_a, "push", base)
        text = dockerfile.format(base=base)
        if kind == "registry":
            to = f"type=registry,ref={reg.host}/app/cache:main,mode={mode}"
            from_ = f"type=registry,ref={reg.host}/app/cache:main"
        else:
            to, from_ = f"type=local,dest={tmp_path / 'shared'},mode={mode}", f"type=local,src={tmp_path / 'shared'}"
        built = lamina(runner_a, "build", "-t", "app", "--cache-to", to, str(_context(tmp_path / "ca", text, 1000)))
        assert "Using cache" not in built.stdout
        image_a = json.loads(lamina(runner_a, "inspect", "app").stdout)[0]

        # each RUN writes a fresh uuid: had B run one, its image ID would differ from A's
        proc = lamina(runner_b, "build", "-t", "app", "--cache-from", from_,
                      str(_context(tmp_path / "elsewhere", text, 2_000_000)))
        steps = [line for line in proc.stdout.splitlines() if line.startswith("Step ")]
        assert proc.stdout.count(" ---> Using cache") == len(steps) - text.count("FROM "), proc.stdout
        assert "[Warning]" not in proc.stderr
        image_b = json.loads(lamina(runner_b, "inspect", "app").stdout)[0]
        assert (image_b["Id"], image_b["Descriptor"]) == (image_a["Id"], image_a["Descriptor"])  # ID and digest
        copied = lamina(runner_a, "run", "--rm", "app").stdout
        assert lamina(runner_b, "run", "--rm", "app").stdout == copied  # every layer is in B's store
        lamina(runner_b, "push", "app", f"{reg.host}/app/from-b:1")  # and the image is pushable


@needs_runc
@pytest.mark.integration
def test_missing_cache_source_is_a_warning(tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry") as reg:
        tarball = tmp_path / "rootfs.tar"
        tarball.write_bytes(busybox_rootfs_tar())
        lamina(tmp_path / "s", "import", "-c", "ENV PATH=/bin", str(tarball), "busybox:test")
        ctx = _context(tmp_path / "ctx", "FROM busybox:test\nRUN echo hi > /hi\n", 1000)
        proc = lamina(tmp_path / "s", "build", "--cache-from", f"type=registry,ref={reg.host}/none/cache:x",
                      "--cache-from", f"type=local,src={tmp_path / 'nothing'}", str(ctx))
        assert proc.returncode == 0
        warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "importing cache from" in line]
        assert len(warnings) == 2 and "manifest unknown" in warnings[0], warnings
        bad = lamina(tmp_path / "s", "build", "--cache-to", "type=gha", str(ctx), check=False)
        assert bad.returncode == 1 and bad.stderr.startswith("Error: --cache-to 'type=gha': unsupported cache type")


def test_exported_layout_is_an_oci_layout(tmp_path: Path) -> None:
    from lamina.store.store import Store
    from lamina.transport.cacheio import export_cache, import_caches

    store = Store(tmp_path / "store")
    blob = store.blobs.put(b"layer bytes")
    layer = Layer(Descriptor(mt.OCI_LAYER_GZIP, blob, 11), Digest.of(b"tar"))
    records = {"sha256:k1": _record(layer, "t1"), "sha256:k2": _record(None, "t2"),
               "sha256:gone": _record(_layer(7), "t3")}  # its blob is not in the store: left out
    digest = export_cache(store, CacheSpec("local", str(tmp_path / "out")), records)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == str(digest)
    assert (tmp_path / "out" / "oci-layout").exists() and (tmp_path / "out" / "blobs" / "sha256" / blob.hex).exists()

    other = Store(tmp_path / "other")
    warnings: list[str] = []
    imported = import_caches(other, [CacheSpec("local", str(tmp_path / "out"))], warnings.append)
    assert not warnings and set(imported.records) == {"sha256:k1", "sha256:k2"}
    assert not other.blobs.has(blob)  # layers come only when a hit asks for them
    imported.fetch(blob)
    assert other.blobs.read(blob) == b"layer bytes"
    (tmp_path / "out" / "blobs" / "sha256" / blob.hex).unlink()
    with pytest.raises(LaminaError, match="is missing"):
        import_caches(Store(tmp_path / "fourth"), [CacheSpec("local", str(tmp_path / "out"))], warnings.append).fetch(blob)
    (tmp_path / "out" / "blobs" / "sha256" / blob.hex).write_bytes(b"tampered!!!")
    third = Store(tmp_path / "third")
    imported = import_caches(third, [CacheSpec("local", str(tmp_path / "out"))], warnings.append)
    with pytest.raises(LaminaError, match="content hashes to"):
        imported.fetch(blob)
    assert not third.blobs.has(blob)
