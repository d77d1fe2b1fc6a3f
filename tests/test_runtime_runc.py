"""Integration tests for lamina.runtime.runc: real containers over a busybox rootfs.

Skipped unless running as root with runc available. The rootfs is Debian's
static busybox with a few applet links; ``/bin/busybox`` comes from the
``busybox-static`` package.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.errors import RuntimeError_
from lamina.runtime.runc import OWNER_ANNOTATION, RuncExecutor, _owner_token, cleanup_stale
from lamina.runtime.spec import Mount, ProcessSpec, make_spec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("runc", path=os.environ.get("PATH", "") + ":/usr/sbin") is None,
        reason="needs root and runc",
    ),
]

APPLETS = ("sh", "echo", "id", "cat", "ls", "touch", "hostname", "sleep", "pwd", "test", "true", "kill")
BUSYBOX = Path("/bin/busybox")


@pytest.fixture(scope="module")
def busybox_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not BUSYBOX.exists():
        subprocess.run(["apt-get", "install", "-y", "busybox-static"], check=True, capture_output=True)
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    return root


@pytest.fixture
def rootfs(busybox_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "rootfs"
    shutil.copytree(busybox_template, target, symlinks=True)
    return target


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "runc-state"


@pytest.fixture
def bundles(tmp_path: Path) -> Path:
    path = tmp_path / "bundles"
    path.mkdir()
    return path


@pytest.fixture
def executor(state: Path, bundles: Path) -> Iterator[RuncExecutor]:
    yield RuncExecutor(state, bundle_dir=bundles)
    assert containers(state) == []
    assert list(bundles.iterdir()) == []


def containers(state: Path) -> list[str]:
    if not state.exists():
        return []
    listed = subprocess.run(["runc", "--root", str(state), "list", "-q"], capture_output=True, check=True)
    return listed.stdout.decode().split()


def sh(script: str, *, uid: int = 0, gid: int = 0, cwd: str = "/", env: tuple[str, ...] = ()) -> ProcessSpec:
    return ProcessSpec(("/bin/sh", "-c", script), ("PATH=/bin", *env), cwd, uid, gid)


def run(executor: RuncExecutor, rootfs: Path, script: str, **options: object) -> tuple[int, str]:
    chunks: list[bytes] = []
    code = executor.run(rootfs, sh(script), output=chunks.append, **options)  # type: ignore[arg-type]
    return code, b"".join(chunks).decode()


def test_exit_codes(executor: RuncExecutor, rootfs: Path) -> None:
    assert executor.run(rootfs, sh("true")) == 0
    assert executor.run(rootfs, sh("exit 3")) == 3


def test_stdout_and_stderr_merged(executor: RuncExecutor, rootfs: Path) -> None:
    """Both streams arrive; runc copies them separately, so only per-stream order holds."""
    code, out = run(executor, rootfs, "echo out; echo err >&2; echo out2")
    lines = out.splitlines()
    assert code == 0 and sorted(lines) == ["err", "out", "out2"]
    assert lines.index("out") < lines.index("out2")


def test_output_is_streamed_live(executor: RuncExecutor, rootfs: Path, tmp_path: Path) -> None:
    """The container waits for a file the callback creates on seeing its first line."""
    shared = tmp_path / "shared"
    shared.mkdir()
    mount = Mount("/shared", str(shared), "bind", ("rbind", "rw"))

    def output(chunk: bytes) -> None:
        chunks.append(chunk)
        if b"first" in chunk:
            (shared / "go").touch()

    chunks: list[bytes] = []
    script = "echo first; i=0; while [ ! -e /shared/go ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; echo $i"
    assert executor.run(rootfs, sh(script), mounts=(mount,), output=output) == 0
    first, waited = b"".join(chunks).decode().split()
    assert first == "first" and int(waited) < 200


def test_process_identity_env_and_cwd(executor: RuncExecutor, rootfs: Path) -> None:
    (rootfs / "work").mkdir()
    process = ProcessSpec(
        ("/bin/sh", "-c", 'id -u; id -g; id -G; pwd; echo "$GREETING"'),
        ("PATH=/bin", "GREETING=hello world"),
        "/work",
        uid=1234,
        gid=567,
        additional_gids=(89,),
    )
    chunks: list[bytes] = []
    assert executor.run(rootfs, process, output=chunks.append) == 0
    assert b"".join(chunks).decode().splitlines() == ["1234", "567", "567 89", "/work", "hello world"]


def test_hostname_and_proc(executor: RuncExecutor, rootfs: Path) -> None:
    script = "hostname; echo $$; cat /proc/1/comm; cat /etc/hostname"
    code, out = run(executor, rootfs, script, hostname="builder")
    assert (code, out.splitlines()) == (0, ["builder", "1", "sh", "builder"])


def test_network_none_has_only_loopback(executor: RuncExecutor, rootfs: Path) -> None:
    assert run(executor, rootfs, "ls /sys/class/net", network="none") == (0, "lo\n")


def test_host_network_sees_host_interfaces(executor: RuncExecutor, rootfs: Path) -> None:
    code, out = run(executor, rootfs, "ls /sys/class/net")
    assert code == 0
    assert sorted(out.split()) == sorted(os.listdir("/sys/class/net"))


def test_unknown_network_is_an_error(executor: RuncExecutor, rootfs: Path) -> None:
    with pytest.raises(RuntimeError_, match="network mode 'bridge'"):
        executor.run(rootfs, sh("true"), network="bridge")


def test_writes_land_in_rootfs(executor: RuncExecutor, rootfs: Path) -> None:
    assert run(executor, rootfs, "echo data > /made; touch /bin/also") == (0, "")
    assert (rootfs / "made").read_text() == "data\n"
    assert (rootfs / "bin" / "also").exists()


def test_etc_files_are_visible_but_not_written_to_rootfs(executor: RuncExecutor, rootfs: Path) -> None:
    code, out = run(
        executor,
        rootfs,
        "cat /etc/hosts; cat /etc/resolv.conf; (echo x > /etc/hosts) 2>/dev/null || echo ro",
        hostname="box",
        network="none",
    )
    assert code == 0
    assert out.startswith("127.0.0.1\tlocalhost box\n")
    assert out.endswith("ro\n")
    for name in ("hosts", "resolv.conf", "hostname"):
        stub = rootfs / "etc" / name
        assert not stub.exists() or stub.stat().st_size == 0, name


def test_existing_etc_hosts_is_covered_not_changed(executor: RuncExecutor, rootfs: Path) -> None:
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "hosts").write_text("original\n")
    code, out = run(executor, rootfs, "cat /etc/hosts")
    assert code == 0 and "localhost" in out and "original" not in out
    assert (rootfs / "etc" / "hosts").read_text() == "original\n"


def test_missing_shell_is_a_clean_error(executor: RuncExecutor, rootfs: Path) -> None:
    (rootfs / "bin" / "sh").unlink()
    chunks: list[bytes] = []
    with pytest.raises(RuntimeError_) as caught:
        executor.run(rootfs, sh("true"), output=chunks.append)
    assert str(caught.value) == (
        'runc run failed: unable to start container process: exec: "/bin/sh": stat /bin/sh: no such file or directory'
    )
    assert chunks == []


def test_missing_rootfs_is_a_clean_error(executor: RuncExecutor, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError_, match="not a directory"):
        executor.run(tmp_path / "absent", sh("true"))


def test_stdin_from_memory(executor: RuncExecutor, rootfs: Path) -> None:
    chunks: list[bytes] = []
    data = b"line\n" * 50000
    assert executor.run(rootfs, sh("cat"), stdin=io.BytesIO(data), output=chunks.append) == 0
    assert b"".join(chunks) == data


def test_stdin_from_file(executor: RuncExecutor, rootfs: Path, tmp_path: Path) -> None:
    source = tmp_path / "input"
    source.write_bytes(b"from a file\n")
    chunks: list[bytes] = []
    with source.open("rb") as stdin:
        assert executor.run(rootfs, sh("cat"), stdin=stdin, output=chunks.append) == 0
    assert chunks == [b"from a file\n"]


def test_stdin_defaults_to_dev_null(executor: RuncExecutor, rootfs: Path) -> None:
    assert run(executor, rootfs, "cat; echo done") == (0, "done\n")


def test_terminal_mode(executor: RuncExecutor, rootfs: Path) -> None:
    primary, secondary = os.openpty()
    try:
        chunks: list[bytes] = []
        process = ProcessSpec(
            ("/bin/sh", "-c", "test -t 0 && test -t 1 && echo tty"), ("PATH=/bin",), "/", 0, 0, terminal=True
        )
        with os.fdopen(secondary, "rb", closefd=False) as stdin:
            assert executor.run(rootfs, process, stdin=stdin, output=chunks.append) == 0
        assert b"".join(chunks).replace(b"\r", b"") == b"tty\n"
    finally:
        os.close(primary)
        os.close(secondary)


def test_keyboard_interrupt_cleans_up(executor: RuncExecutor, rootfs: Path, state: Path) -> None:
    """A real SIGINT while blocked reading output: container and bundle are gone."""

    def output(chunk: bytes) -> None:
        assert containers(state) != []
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()

    with pytest.raises(KeyboardInterrupt):
        executor.run(rootfs, sh("echo started; sleep 100"), output=output)
    # the executor fixture asserts no container and no bundle are left


def test_exception_in_callback_cleans_up(executor: RuncExecutor, rootfs: Path) -> None:
    def output(chunk: bytes) -> None:
        raise ValueError("callback failed")

    with pytest.raises(ValueError, match="callback failed"):
        executor.run(rootfs, sh("echo started; sleep 100"), output=output)


def test_killed_by_signal_is_128_plus_n(executor: RuncExecutor, rootfs: Path, state: Path) -> None:
    """pid 1 ignores signals from inside, so kill it from outside with runc kill."""

    def output(chunk: bytes) -> None:
        (container,) = containers(state)
        subprocess.run(["runc", "--root", str(state), "kill", container, "KILL"], check=True)

    assert executor.run(rootfs, sh("echo started; sleep 100"), output=output) == 137


def test_overlay_rootfs(executor: RuncExecutor, busybox_template: Path, tmp_path: Path) -> None:
    upper, work, merged = (tmp_path / name for name in ("upper", "work", "merged"))
    for path in (upper, work, merged):
        path.mkdir()
    options = f"lowerdir={busybox_template},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        code, out = run(executor, merged, "echo new > /made; ls /bin/busybox; cat /etc/hosts >/dev/null")
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert (code, out) == (0, "/bin/busybox\n")
    assert (upper / "made").read_text() == "new\n"
    assert not (busybox_template / "made").exists()
    assert all(p.stat().st_size == 0 for p in (upper / "etc").iterdir())


def test_cleanup_stale_removes_orphans_only(rootfs: Path, state: Path, tmp_path: Path) -> None:
    """Containers whose owner died go; a live owner's running container stays."""
    live_owner = _owner_token(os.getpid()) or ""
    created = {"lamina-orphan": "1:0", "lamina-live": live_owner}
    for name, owner in created.items():
        bundle = tmp_path / f"{name}-bundle"
        bundle.mkdir()
        spec = make_spec(
            sh("true"),
            rootfs=str(rootfs),
            hostname="h",
            network="none",
            annotations=((OWNER_ANNOTATION, owner),),
            nofile=1024,
        )
        (bundle / "config.json").write_text(json.dumps(spec))
        subprocess.run(
            ["runc", "--root", str(state), "create", "--bundle", str(bundle), name],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        assert cleanup_stale(state) == ("lamina-orphan",)
        assert containers(state) == ["lamina-live"]
        assert not (tmp_path / "lamina-orphan-bundle").exists()
        assert (tmp_path / "lamina-live-bundle").exists()
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "--force", "lamina-live"], check=False)
    assert cleanup_stale(tmp_path / "no-such-state") == ()


# --- which runtime: auto is crun where it can run, else runc ------------------------------------


@pytest.fixture
def runtimes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, object]:
    """Fake installs (``installed``), a fake cgroup layout (``unified``) and namespace (``private``)."""
    from lamina.runtime import runc

    world: dict[str, object] = {"installed": {"runc", "crun"}, "private": False}
    unified = tmp_path / "unified"
    unified.mkdir()
    monkeypatch.setattr(runc, "_which", lambda name: f"/usr/bin/{name}" if name in world["installed"] else None)  # type: ignore[operator]
    monkeypatch.setattr(runc, "UNIFIED_CGROUP", unified)
    monkeypatch.setattr(runc, "in_private_mount_namespace", lambda: world["private"])
    world["unified"] = unified
    return world


def test_auto_prefers_crun(runtimes: dict[str, object]) -> None:
    from lamina.runtime.runc import choose_runtime

    assert choose_runtime("auto") == "/usr/bin/crun"  # no hybrid cgroup layout: crun runs anywhere
    assert choose_runtime("runc") == "/usr/bin/runc"  # a named runtime is taken as asked


def test_auto_on_a_hybrid_host_takes_crun_only_in_a_private_namespace(runtimes: dict[str, object]) -> None:
    from lamina.runtime.runc import choose_runtime

    (runtimes["unified"] / "cgroup.controllers").write_text("cpu memory\n")  # type: ignore[operator]
    assert choose_runtime("auto") == "/usr/bin/runc"  # crun would refuse the layout it cannot hide here
    runtimes["private"] = True
    assert choose_runtime("auto") == "/usr/bin/crun"


def test_auto_without_crun_is_runc_and_without_either_an_error(runtimes: dict[str, object]) -> None:
    from lamina.runtime.runc import choose_runtime

    runtimes["installed"] = {"runc"}
    assert choose_runtime("auto") == "/usr/bin/runc"
    runtimes["installed"] = set()
    with pytest.raises(RuntimeError_, match="OCI runtime 'runc' not found"):
        choose_runtime("auto")


def test_each_runtime_keeps_its_own_state_dir(tmp_path: Path) -> None:
    from lamina.runtime.runc import state_dir

    assert state_dir(tmp_path, "/usr/bin/crun") == tmp_path / "crun"
    assert state_dir(tmp_path, "/usr/sbin/runc") == tmp_path / "runc"
