"""An :class:`~lamina.runtime.executor.Executor` that drives runc (or crun).

Each run is one ``runc run`` in the foreground over a throwaway bundle
directory holding ``config.json`` and the container's ``/etc/hosts``,
``/etc/resolv.conf`` and ``/etc/hostname``, which are bind-mounted read-only
so nothing is written into the root filesystem. runc keeps its state under
the ``root`` given to the constructor (lamina's store), never the system's.

Without a terminal runc relays the process's stdout and stderr into one
pipe that is read in the caller's thread (runc copies the two streams
separately, so only the order within each stream is kept, as with
BuildKit), and runc runs in its own session so Ctrl-C
reaches lamina only: on any exception, KeyboardInterrupt included, the
container is killed and deleted and the bundle removed. Containers left by
a lamina that died anyway are removed by :func:`cleanup_stale`.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from lamina.errors import RuntimeError_
from lamina.runtime.executor import DEFAULT_HOSTNAME, Output
from lamina.runtime.mountns import in_private_mount_namespace
from lamina.runtime.spec import (
    NOFILE_LIMIT,
    Mount,
    Network,
    ProcessSpec,
    check_network,
    hostname_file,
    hosts_file,
    make_spec,
    resolv_conf,
)
from lamina.runtime.stream import FailureLineFilter

ID_PREFIX = "lamina-"
OWNER_ANNOTATION = "org.lamina.owner"
_CHUNK = 65536
_STOP_TIMEOUT = 10.0
_CAP_SYS_RESOURCE = 24


class RuncExecutor:
    """Runs processes with ``runc run``; ``runtime`` may name crun instead (or ``auto``: :func:`choose_runtime`)."""

    def __init__(self, root: Path, *, runtime: str = "runc", bundle_dir: Path | None = None) -> None:
        self._binary = choose_runtime(runtime)
        self._root = Path(root)
        self._bundle_dir = bundle_dir
        self._nofile = nofile_limit()
        if Path(self._binary).name == "crun":
            hide_hybrid_cgroup2()

    def run(
        self,
        rootfs: Path,
        process: ProcessSpec,
        *,
        network: str = "host",
        mounts: tuple[Mount, ...] = (),
        stdin: BinaryIO | None = None,
        output: Output | None = None,
        hostname: str = DEFAULT_HOSTNAME,
        errors: Output | None = None,
    ) -> int:
        """Run ``process`` in a container over ``rootfs``; see :meth:`Executor.run`."""
        try:
            net = check_network(network)
        except ValueError as exc:
            raise RuntimeError_(str(exc)) from None
        self._root.mkdir(parents=True, exist_ok=True)
        container_id = ID_PREFIX + os.urandom(8).hex()
        bundle = Path(tempfile.mkdtemp(prefix=container_id + "-", dir=self._bundle_dir))
        try:
            config = _bundle_config(bundle, Path(rootfs), process, net, mounts, hostname, self._nofile)
            _write_file(bundle / "config.json", json.dumps(config))
            status = self._run_in(bundle, container_id, process.terminal, stdin, output, errors)
        finally:
            shutil.rmtree(bundle, ignore_errors=True)
        return status

    def _run_in(
        self, bundle: Path, container_id: str, terminal: bool, stdin: BinaryIO | None, output: Output | None,
        errors: Output | None = None,
    ) -> int:
        log = bundle / "runtime.log"
        command = [*self._global_args(), "--log", str(log), "--log-format", "json"]
        command += ["run", "--bundle", str(bundle), container_id]
        stdin_fd, feed = _stdin_source(stdin, terminal)
        try:
            proc = subprocess.Popen(
                command,
                stdin=stdin_fd,
                stdout=_stdout_sink(output, terminal),
                # With a terminal the process writes to the pty; runc's own
                # messages are in the log.
                stderr=subprocess.DEVNULL if terminal else (
                    subprocess.PIPE if errors is not None else subprocess.STDOUT),
                # A terminal run stays in our session so runc can own the tty.
                start_new_session=not terminal,
            )
        except OSError as exc:
            raise RuntimeError_(f"starting {self._binary}: {exc}") from exc
        filtered = FailureLineFilter(output) if output is not None else None
        # runc's own failure line comes on stderr: filter the stream that carries it
        err_filtered = FailureLineFilter(errors) if errors is not None and proc.stderr is not None else None
        err_pump = None
        try:
            if feed is not None:
                _start_feeder(feed, proc.stdin)
            if err_filtered is not None and proc.stderr is not None:
                err_pump = threading.Thread(target=_pump, args=(proc.stderr, err_filtered),
                                            name="lamina-stderr", daemon=True)
                err_pump.start()
            if filtered is not None and proc.stdout is not None:
                _pump(proc.stdout, filtered)
            code = proc.wait()
            if err_pump is not None:
                err_pump.join()
        except BaseException:
            self._stop(proc, container_id)
            raise
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            if proc.stderr is not None and (err_pump is None or not err_pump.is_alive()):
                proc.stderr.close()
        failure = _runtime_failure(log) if code != 0 else None
        if filtered is not None:
            filtered.finish(failure is not None and err_filtered is None)
        if err_filtered is not None:
            err_filtered.finish(failure is not None)
        if failure is not None:
            raise RuntimeError_(failure)
        return 128 - code if code < 0 else code

    def _stop(self, proc: subprocess.Popen[bytes], container_id: str) -> None:
        """Kill the container, wait for ``runc run`` to return, delete its state.

        ``runc kill`` is retried because the interrupt may land before runc
        has registered the container; killing runc itself mid-create could
        leave an orphaned ``runc init`` behind, so that is the last resort.
        """
        deadline = time.monotonic() + _STOP_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            self._quiet("kill", container_id, "KILL")
            try:
                proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._quiet("delete", "--force", container_id)

    def _global_args(self) -> list[str]:
        return [self._binary, "--root", str(self._root)]

    def _quiet(self, *args: str) -> None:
        subprocess.run(
            [*self._global_args(), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


UNIFIED_CGROUP = Path("/sys/fs/cgroup/unified")


def hide_hybrid_cgroup2(unified: Path = UNIFIED_CGROUP) -> bool:
    """Let crun run on a hybrid cgroup host; True if the v2 hierarchy was hidden.

    crun refuses to start ("cgroups in hybrid mode not supported") when the
    v2 hierarchy of a v1+v2 layout holds any controller. Containers here need
    no v2 controller, so in lamina's *private* mount namespace (never the
    host's) that hierarchy is unmounted and crun sees a plain v1 layout.
    """
    try:
        controllers = (unified / "cgroup.controllers").read_text().split()
    except OSError:
        return False
    if not controllers or not in_private_mount_namespace():
        return False
    from lamina import syscalls

    try:
        syscalls.umount(unified, detach=True)
    except OSError:
        return False
    return True


def find_runtime(runtime: str) -> str:
    """Return the path of the OCI runtime binary ``runtime`` (a name or a path)."""
    found = _which(runtime)
    if found is None:
        raise RuntimeError_(f"OCI runtime {runtime!r} not found on PATH")
    return found


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")


AUTO = "auto"
RUNTIMES = ("crun", "runc")  # what ``auto`` picks from, in this order


def choose_runtime(runtime: str = AUTO) -> str:
    """The path of the runtime to use: ``runtime`` itself, or for ``auto`` crun when it is installed
    and can run here, else runc.

    crun (C) starts a container in about half runc's (Go) time, ~40 ms less per RUN here, as
    podman and buildah prefer it. On a hybrid cgroup host it can run only where its v2 hierarchy
    can be hidden (:func:`hide_hybrid_cgroup2`): in lamina's private mount namespace, which the
    build and run paths enter before they choose.
    """
    if runtime != AUTO:
        return find_runtime(runtime)
    crun = _which("crun")
    if crun is not None and _crun_can_run():
        return crun
    return find_runtime("runc")


def _crun_can_run() -> bool:
    try:
        controllers = (UNIFIED_CGROUP / "cgroup.controllers").read_text().split()
    except OSError:
        return True  # no hybrid layout
    return not controllers or in_private_mount_namespace()


def state_dir(store_root: Path, binary: str) -> Path:
    """Where containers of ``binary`` keep their state in a store: a directory per runtime
    (``runc/``, ``crun/``), since one runtime cannot list or delete the other's containers."""
    return Path(store_root) / Path(binary).name


def _bundle_config(
    bundle: Path,
    rootfs: Path,
    process: ProcessSpec,
    network: Network,
    mounts: tuple[Mount, ...],
    hostname: str,
    nofile: int,
) -> dict[str, Any]:
    """Write the /etc files into ``bundle`` and return the spec that mounts them."""
    if not rootfs.is_dir():
        raise RuntimeError_(f"root filesystem {rootfs} is not a directory")
    files = {
        "/etc/hosts": hosts_file(hostname, network, _read_host_file("/etc/hosts")),
        "/etc/resolv.conf": resolv_conf(_read_host_file("/etc/resolv.conf")),
        "/etc/hostname": hostname_file(hostname),
    }
    etc_mounts = []
    for destination, text in files.items():
        source = bundle / Path(destination).name
        _write_file(source, text)
        etc_mounts.append(Mount.bind(str(source), destination))
    return make_spec(
        process,
        rootfs=str(rootfs.resolve()),
        hostname=hostname,
        network=network,
        extra_mounts=(*etc_mounts, *mounts),
        nofile=nofile,
        annotations=((OWNER_ANNOTATION, _owner_token(os.getpid()) or ""),),
    )


def nofile_limit() -> int:
    """Docker's open-files limit, or our own hard limit when we may not raise it.

    Raising a hard limit needs CAP_SYS_RESOURCE, which nested or restricted
    environments often drop; asking runc for more would fail every run.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if _has_capability(_CAP_SYS_RESOURCE) or hard == resource.RLIM_INFINITY:
        return NOFILE_LIMIT
    return min(NOFILE_LIMIT, hard)


def _has_capability(bit: int) -> bool:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def _stdin_source(stdin: BinaryIO | None, terminal: bool) -> tuple[int | IO[Any] | None, BinaryIO | None]:
    """What runc's stdin should be, and a stream to feed through a pipe, if any.

    Without ``stdin`` a terminal run reads ours (the user's tty), any other
    run reads ``/dev/null``. A stream without a file descriptor is copied in.
    """
    if stdin is None:
        return (None if terminal else subprocess.DEVNULL), None
    try:
        stdin.fileno()
    except (OSError, AttributeError, ValueError):
        return subprocess.PIPE, stdin
    return stdin, None


def _stdout_sink(output: Output | None, terminal: bool) -> int | None:
    """A pipe when output is wanted; else our own stdout for a terminal, or nothing."""
    if output is not None:
        return subprocess.PIPE
    return None if terminal else subprocess.DEVNULL


def _start_feeder(source: BinaryIO, sink: IO[bytes] | None) -> None:
    """Copy ``source`` into ``sink`` in a daemon thread, then close ``sink``.

    The thread ends when ``source`` is exhausted or the container stops
    reading; it is not joined, so a blocking ``source`` may outlive the run.
    """
    if sink is None:
        return

    def feed() -> None:
        try:
            while chunk := source.read(_CHUNK):
                sink.write(chunk)
                sink.flush()
        except (ValueError, OSError):
            pass  # the container stopped reading; nothing more to deliver
        finally:
            with contextlib.suppress(OSError):
                sink.close()

    threading.Thread(target=feed, name="lamina-stdin", daemon=True).start()


def _pump(stream: IO[bytes], filtered: FailureLineFilter) -> None:
    fd = stream.fileno()
    while chunk := os.read(fd, _CHUNK):
        filtered.feed(chunk)


def _runtime_failure(log: Path) -> str | None:
    """The last error runc logged, or None when the process itself just failed."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    message = None
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", "")).strip() or message
    return message


def _read_host_file(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _write_file(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o644)


def _owner_token(pid: int) -> str | None:
    """``pid:start-time``, so a recycled pid does not pass for a live owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime), counted after the parenthesised command name.
    fields = stat.rsplit(")", 1)[1].split()
    return f"{pid}:{fields[19]}"


def _owner_alive(token: str) -> bool:
    pid_text, _, _ = token.partition(":")
    return pid_text.isdigit() and _owner_token(int(pid_text)) == token


def cleanup_stale(root: Path, *, runtime: str = "runc") -> tuple[str, ...]:
    """Delete lamina's containers under ``root`` that are stopped or whose owner died.

    Containers of live lamina processes are left alone. Returns the ids removed.
    """
    binary = find_runtime(runtime)
    if not Path(root).is_dir():
        return ()
    for _attempt in range(3):
        # another lamina process may delete its container while runc lists them: list again
        listed = subprocess.run(
            [binary, "--root", str(root), "list", "--format", "json"],
            capture_output=True,
            check=False,
        )
        if listed.returncode == 0:
            break
    else:
        raise RuntimeError_(f"listing containers in {root}: {listed.stderr.decode(errors='replace').strip()}")
    removed = []
    for state in _stale(json.loads(listed.stdout or b"null") or []):
        subprocess.run(
            [binary, "--root", str(root), "delete", "--force", state["id"]], capture_output=True, check=False
        )
        bundle = Path(str(state.get("bundle") or ""))
        if bundle.name.startswith(state["id"] + "-"):
            shutil.rmtree(bundle, ignore_errors=True)
        removed.append(str(state["id"]))
    return tuple(removed)


def _bundle_annotations(state: dict[str, Any]) -> dict[str, Any]:
    """A container's annotations from its bundle: crun's ``list`` does not show them."""
    try:
        config = json.loads((Path(str(state.get("bundle") or "")) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    annotations = config.get("annotations") if isinstance(config, dict) else None
    return annotations if isinstance(annotations, dict) else {}


def _stale(states: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    stale = []
    for state in states:
        if not str(state.get("id", "")).startswith(ID_PREFIX):
            continue
        annotations = state.get("annotations") or _bundle_annotations(state)
        owner = str(annotations.get(OWNER_ANNOTATION, ""))
        # a live owner deletes its own containers, stopped or not; only orphans are ours to remove
        if not _owner_alive(owner):
            stale.append(state)
    return stale


__all__ = ["RuncExecutor", "cleanup_stale", "find_runtime"]
