"""The five benchmark workloads of issue #7, generated deterministically (no large files in git).

Each workload is a Dockerfile plus a build context written by :func:`generate` from a seeded
PRNG, so every machine builds byte-identical inputs. A :class:`Scale` sets the sizes: ``FULL``
is the issue's, ``QUICK`` a tenth or so (to check the harness), ``TINY`` is for unit tests.
A generated context is reused while its stamp (the hash of its specification) matches;
:func:`mutate` changes the one copied file the incremental scenario edits.

The base images are docker-archives every tool loads the same way: a busybox root filesystem
(Debian's busybox-static with every applet linked) and a Debian bookworm ``minbase`` made by
debootstrap (cached under /var/cache, so reruns are cheap).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

BUSYBOX_BASE = "bench/busybox:1"
DEBIAN_BASE = "bench/debian:bookworm"
CACHE = Path(os.environ.get("LAMINA_BENCH_CACHE", "/var/cache/lamina-bench"))
MIRROR = "http://deb.debian.org/debian"

_WORDS = ("let", "const", "return", "if", "else", "for", "while", "import", "from", "def", "class",
          "value", "result", "config", "handler", "request", "response", "buffer", "index", "count",
          "self", "None", "True", "False", "await", "async", "yield", "lambda", "items", "keys", "=",
          "(", ")", "{", "}", "[", "]", "+", "-", "*", "/", "==", "!=", "<", ">", "and", "or", "not")


@dataclass(frozen=True, slots=True)
class Scale:
    """Sizes of the generated inputs; one preset per use."""

    name: str
    src_files: int  # (a) text files in the copied source tree
    src_bytes: int  # (a) their total size
    binary_bytes: int  # (a) the copied "binary"
    run_write_lines: int  # (a) lines of `seq` the first RUN writes (≈ 8 bytes each)
    small_runs: int  # (b) small RUN instructions
    context_files: int  # (c) files in the big context
    context_bytes: int  # (c) its total size
    touched_files: int  # (d) Debian files each RUN touches / creates
    stage_sleep: int  # (e) seconds each independent stage works


FULL = Scale("full", 2000, 10 << 20, 30 << 20, 2_500_000, 40, 20_000, 400 << 20, 3000, 1)
QUICK = Scale("quick", 200, 1 << 20, 3 << 20, 250_000, 10, 2000, 40 << 20, 300, 1)
TINY = Scale("tiny", 12, 24 << 10, 16 << 10, 100, 3, 20, 64 << 10, 10, 0)


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload: its Dockerfile, context files and what the scenarios touch."""

    letter: str
    title: str
    base: str  # BUSYBOX_BASE or DEBIAN_BASE
    dockerfile: str
    files: tuple[tuple[str, int, str], ...]  # (path, size, kind) generated into the context
    copied: tuple[str, ...]  # context paths COPY reads (files or folders): the physical reference
    mutable: str  # the copied file the incremental scenario changes
    extra: tuple[tuple[str, str], ...] = field(default=())  # literal files (.dockerignore, scripts)


def _spread(total: int, count: int) -> list[int]:
    """``count`` sizes summing to ``total``, varied but deterministic."""
    rng = random.Random(count * 7919 + total)
    weights = [rng.uniform(0.2, 1.8) for _ in range(count)]
    scale = total / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    sizes[-1] = max(1, sizes[-1] + total - sum(sizes))
    return sizes


def _tree(prefix: str, count: int, total: int, kind: str, per_dir: int = 50) -> list[tuple[str, int, str]]:
    sizes = _spread(total, count)
    return [(f"{prefix}/d{i // per_dir:03d}/f{i:05d}.{'txt' if kind == 'text' else 'dat'}", size, kind)
            for i, size in enumerate(sizes)]


def _app(s: Scale) -> Workload:
    dockerfile = f"""\
FROM {BUSYBOX_BASE}
ENV APP_HOME=/app APP_MODE=bench
WORKDIR /app
RUN mkdir -p /var/data && seq 1 {s.run_write_lines} > /var/data/numbers.txt
COPY src/ /app/src/
COPY bin/app /app/bin/app
RUN find /app/src -type f | xargs cat | wc -c > /app/src-bytes.txt && wc -c /app/bin/app >> /app/src-bytes.txt
RUN rm /var/data/numbers.txt
LABEL org.opencontainers.image.title="bench app" org.opencontainers.image.version="1.0"
EXPOSE 8080
CMD ["/app/bin/app", "--serve"]
"""
    files = _tree("src", s.src_files, s.src_bytes, "text") + [("bin/app", s.binary_bytes, "binary")]
    return Workload("a", "app", BUSYBOX_BASE, dockerfile, tuple(files), ("src", "bin/app"),
                    "src/d000/f00000.txt")


def _many(s: Scale) -> Workload:
    runs = s.small_runs
    first, second = runs * 3 // 4, runs - runs * 3 // 4
    lines = [f"FROM {BUSYBOX_BASE}"]
    lines += [f"ENV STEP_{i}=value-{i}" for i in range(5)]
    lines += ["WORKDIR /opt/steps", "ARG VARIANT=plain", "LABEL stage=many"]
    lines += [f"RUN echo step {i} > /opt/steps/{i}.txt" for i in range(first)]
    lines += ["COPY conf/ /etc/app/", "LABEL config=copied"]
    lines += [f"RUN cat /etc/app/*.conf | wc -l > /opt/steps/{first + i}.txt" for i in range(second)]
    lines += [f'LABEL layer.{i}="{i}"' for i in range(max(0, 60 - len(lines) - 3))]
    lines += ["USER root", "EXPOSE 9000", 'CMD ["/bin/sh"]']
    files = [(f"conf/{n}.conf", 600 + 37 * n, "text") for n in range(8)]
    return Workload("b", f"{runs} small RUNs in {len(lines)} instructions", BUSYBOX_BASE, "\n".join(lines) + "\n",
                    tuple(files), ("conf",), "conf/0.conf")


def _context(s: Scale) -> Workload:
    dockerfile = f"""\
FROM {BUSYBOX_BASE}
COPY app/ /app/
RUN cat /app/*.txt | wc -c > /app/size
CMD ["/bin/cat", "/app/size"]
"""
    app = [(f"app/{n}.txt", 2000 + 101 * n, "text") for n in range(10)]
    logs = max(2, s.context_files // 100)  # ignored by .dockerignore
    bulk = s.context_files - len(app) - logs
    files = app + _tree("data", bulk, s.context_bytes * 9 // 10, "binary", per_dir=200)
    files += _tree("logs", logs, s.context_bytes // 10, "text")
    ignore = "logs/\n**/*.tmp\n.git\n"
    return Workload("c", f"{s.context_bytes >> 20} MB / {s.context_files} files context, one folder copied",
                    BUSYBOX_BASE, dockerfile, tuple(files), ("app",), "app/0.txt", ((".dockerignore", ignore),))


def _debian(s: Scale) -> Workload:
    dockerfile = f"""\
FROM {DEBIAN_BASE}
RUN find /usr/share /usr/lib -type f | sort | head -n {s.touched_files} | tr '\\n' '\\0' | xargs -0 touch
COPY gen.sh /usr/local/bin/gen.sh
RUN sh /usr/local/bin/gen.sh {s.touched_files}
RUN rm -rf /usr/share/doc /usr/share/man /var/cache/debconf
CMD ["/bin/bash"]
"""
    script = ("#!/bin/sh\n# makes N small files under /srv/gen\nset -e\nmkdir -p /srv/gen\ni=0\n"
              "while [ $i -lt \"$1\" ]; do echo \"file $i\" > /srv/gen/$i.txt; i=$((i+1)); done\n")
    return Workload("d", f"Debian base, RUNs touching {s.touched_files}+ files", DEBIAN_BASE, dockerfile, (),
                    ("gen.sh",), "gen.sh", (("gen.sh", script),))


def _stages(s: Scale) -> Workload:
    work = f"sleep {s.stage_sleep} && " if s.stage_sleep else ""
    dockerfile = f"""\
FROM {BUSYBOX_BASE} AS one
RUN {work}seq 1 100000 > /out1

FROM {BUSYBOX_BASE} AS two
RUN {work}seq 100000 200000 > /out2

FROM {BUSYBOX_BASE} AS three
COPY part/ /src/
RUN {work}cat /src/* > /out3

FROM {BUSYBOX_BASE}
COPY --from=one /out1 /data/1
COPY --from=two /out2 /data/2
COPY --from=three /out3 /data/3
CMD ["/bin/ls", "/data"]
"""
    files = [(f"part/{n}.txt", 3000 + 211 * n, "text") for n in range(6)]
    return Workload("e", "three independent stages feeding a final one", BUSYBOX_BASE, dockerfile,
                    tuple(files), ("part",), "part/0.txt")


def workloads(scale: Scale) -> dict[str, Workload]:
    """The five workloads, by letter."""
    return {w.letter: w for w in (_app(scale), _many(scale), _context(scale), _debian(scale), _stages(scale))}


# --- writing ---------------------------------------------------------------------------------------------------


def content(path: str, size: int, kind: str) -> bytes:
    """The bytes of one generated file, from a PRNG seeded by its path: text or half-random binary."""
    rng = random.Random(hashlib.sha256(path.encode()).digest())
    if kind == "binary":
        # half random (incompressible), half repetitive, like a real executable compresses ~2:1
        out = bytearray()
        while len(out) < size:
            out += rng.randbytes(4096)
            out += bytes([rng.randrange(256)]) * 4096
        return bytes(out[:size])
    words = rng.choices(_WORDS, k=size // 4 + 16)
    text = bytearray()
    for i in range(0, len(words), 12):
        text += (" ".join(words[i:i + 12]) + "\n").encode()
        if len(text) >= size:
            break
    return bytes(text[:size])


def spec_hash(w: Workload) -> str:
    return hashlib.sha256(json.dumps(asdict(w), sort_keys=True).encode()).hexdigest()


def generate(w: Workload, dest: Path) -> Path:
    """Write ``w``'s context into ``dest`` (reused when already generated); returns ``dest``."""
    stamp = dest.with_name(dest.name + ".stamp")
    if not (stamp.exists() and stamp.read_text() == spec_hash(w) and dest.is_dir()):
        shutil.rmtree(dest, ignore_errors=True)
        stamp.unlink(missing_ok=True)
        dest.mkdir(parents=True)
        for path, size, kind in w.files:
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content(path, size, kind))
        stamp.write_text(spec_hash(w))
    for name, text in w.extra:
        (dest / name).write_text(text)
    (dest / "Dockerfile").write_text(w.dockerfile)
    mutate(w, dest, 0)
    return dest


def mutate(w: Workload, dest: Path, variant: int) -> None:
    """Set the incremental scenario's file to variant ``variant`` (0 is the generated content)."""
    target = dest / w.mutable
    literal = dict(w.extra).get(w.mutable)
    if literal is not None:
        base = literal.encode()
    else:
        size, kind = next((s, k) for p, s, k in w.files if p == w.mutable)
        base = content(w.mutable, size, kind)
    target.write_bytes(base + (f"\n# change {variant}\n".encode() if variant else b""))


def copied_files(w: Workload, dest: Path) -> Iterator[Path]:
    """The context files COPY reads, in a stable order."""
    for name in w.copied:
        path = dest / name
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def tree_digest(root: Path) -> str:
    """One digest over the names and bytes of every file under ``root`` (for tests)."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# --- base images -----------------------------------------------------------------------------------------------


def busybox_rootfs(out: Path) -> Path:
    """A busybox root filesystem tar (every applet linked, /etc/passwd, /tmp) at ``out``."""
    binary = Path(shutil.which("busybox") or "/bin/busybox")
    applets = subprocess.run([binary, "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
            tar.addfile(info, io.BytesIO(data))
        for d in ("bin", "etc", "root", "var"):
            add(d, tarfile.DIRTYPE, 0o755)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("bin/busybox", tarfile.REGTYPE, 0o755, binary.read_bytes())
        for applet in sorted(set(applets) - {"busybox"}):
            add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
    return out


def debian_rootfs(cache: Path = CACHE) -> Path:
    """Debian bookworm minbase as a rootfs tar, made once by debootstrap and cached in ``cache``."""
    out = cache / "debian-bookworm-minbase-rootfs.tar"
    if out.exists():
        return out
    if shutil.which("debootstrap") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "debootstrap"], check=True, capture_output=True)
    cache.mkdir(parents=True, exist_ok=True)
    root = cache / "debian-rootfs.partial"
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(root), MIRROR],
                   check=True, capture_output=True)
    partial = out.with_suffix(".partial")
    subprocess.run(["tar", "--numeric-owner", "--sort=name", "-C", str(root), "-cf", str(partial), "."], check=True)
    partial.rename(out)
    shutil.rmtree(root, ignore_errors=True)
    return out
