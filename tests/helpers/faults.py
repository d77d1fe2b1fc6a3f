"""Fault-injection helpers: lamina as separate processes, a sentinel tree, store health.

The fault tests (tests/test_faults_*.py) run lamina the way users do — one
process per command, many at once, some killed with SIGKILL — and end by
asserting two things: nothing was lost (``system check`` is clean, no stale
mount or runc container, the next build works) and nothing was written
outside the allowed directories (a *sentinel tree* beside the store and the
context is byte-for-byte unchanged).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lamina.runtime.runc import RUNTIMES

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("LAMINA_PROGRESS", None)
    return env


def lamina(root: Path, *args: str, check: bool = True, timeout: float = 300,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``lamina --root ROOT ARGS`` to completion in its own process."""
    from helpers import cli

    return cli.lamina(root, *args, check=check, timeout=timeout, stdin=stdin, environ=_env())


def start(root: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``lamina --root ROOT ARGS`` without waiting (stdout and stderr captured)."""
    return subprocess.Popen([sys.executable, "-m", "lamina", "--root", str(root), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def kill_after(proc: subprocess.Popen[str], seconds: float) -> bool:
    """SIGKILL the process (only it: its runc children live on, as after a real crash) after ``seconds``.

    Returns whether it was still running when the signal went out.
    """
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        return True
    proc.communicate(timeout=60)
    return False


# --- the sentinel tree ----------------------------------------------------------------


@dataclass(frozen=True)
class Sentinel:
    """A directory tree nothing may touch; :meth:`assert_unchanged` compares it with its first state."""

    path: Path
    fingerprint: tuple[tuple[str, ...], ...]

    def assert_unchanged(self) -> None:
        now = fingerprint(self.path)
        if now != self.fingerprint:
            before, after = set(self.fingerprint), set(now)
            changed = sorted({e[0] for e in before ^ after})
            raise AssertionError(f"the sentinel tree {self.path} changed: {changed[:20]}")


def make_sentinel(path: Path) -> Sentinel:
    """Files, a nested dir, an executable, a symlink and a hard link: the kinds an escape would hit."""
    (path / "etc").mkdir(parents=True)
    (path / "etc" / "passwd").write_text("root:x:0:0:sentinel:/root:/bin/sh\n")
    (path / "bin").mkdir()
    tool = path / "bin" / "tool"
    tool.write_bytes(b"#!/bin/sh\necho sentinel\n")
    tool.chmod(0o755)
    (path / "secret").write_bytes(os.urandom(64))
    (path / "secret").chmod(0o600)
    os.symlink("etc/passwd", path / "link")
    os.link(path / "secret", path / "hardlink")
    (path / "empty").mkdir()
    return Sentinel(path, fingerprint(path))


def fingerprint(root: Path) -> tuple[tuple[str, ...], ...]:
    """Every entry under ``root`` (root itself included): type, mode, owner, size, links, mtime, content."""
    paths = [str(root)]
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        paths += [os.path.join(dirpath, name) for name in sorted(dirs + files)]
    return tuple(_entry(root, path) for path in paths)


def _entry(root: Path, path: str) -> tuple[str, ...]:
    st = os.lstat(path)
    content, size, links = "", 0, 0
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            content = hashlib.sha256(f.read()).hexdigest()
        size, links = st.st_size, st.st_nlink
    elif stat.S_ISLNK(st.st_mode):
        content = os.readlink(path)
    return (os.path.relpath(path, root), oct(st.st_mode), f"{st.st_uid}:{st.st_gid}", str(size), str(links),
            str(st.st_mtime_ns), content)


# --- the store's health ---------------------------------------------------------------


def mounts_under(path: Path) -> list[str]:
    """Mount points under ``path`` in this process's mount namespace (lamina's own die with it)."""
    prefix = str(path.resolve())
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4] for line in info if line.split()[4].startswith(prefix)]


def containers(root: Path) -> list[str]:
    """Containers left in the store's runtime state dirs (``runc/``, ``crun/``), as each runtime lists them."""
    found = []
    for runtime in RUNTIMES:
        state = root / runtime
        if state.is_dir() and shutil.which(runtime):
            listed = subprocess.run([runtime, "--root", str(state), "list", "-q"], capture_output=True, text=True,
                                    timeout=60)
            found += listed.stdout.split()
    return found


def delete_containers(root: Path) -> None:
    """Force-delete every container in the store's runtime state dirs (a test's own cleanup)."""
    for runtime in RUNTIMES:
        state = root / runtime
        if state.is_dir() and shutil.which(runtime):
            for name in subprocess.run([runtime, "--root", str(state), "list", "-q"], capture_output=True,
                                       text=True, timeout=60).stdout.split():
                subprocess.run([runtime, "--root", str(state), "delete", "--force", name], capture_output=True,
                               timeout=60)


def store_processes(root: Path) -> list[int]:
    """Processes (runc's, a container's) whose command line names the store: what a killed lamina left running."""
    needle = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def check_clean(root: Path) -> str:
    """``system check`` must find nothing, or only what ``--repair`` is for; then it must find nothing.

    Returns what the first check printed (for a failing test's message).
    """
    first = lamina(root, "system", "check", check=False)
    if first.returncode != 0:
        problems = [line for line in first.stdout.splitlines() if not line.startswith("Checked ")]
        repairable = ("leftover ", "snapshot ")
        assert all(line.startswith(repairable) for line in problems), (
            f"system check found damage, not just leftovers:\n{first.stdout}{first.stderr}")
        repaired = lamina(root, "system", "check", "--repair", check=False)
        assert repaired.returncode == 0, f"repair failed:\n{repaired.stdout}{repaired.stderr}"
        second = lamina(root, "system", "check", check=False)
        assert second.returncode == 0, f"still broken after --repair:\n{second.stdout}{second.stderr}"
    return first.stdout


def wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    """Wait for processes to end; those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists()]
        if alive:
            time.sleep(0.1)
    return alive
