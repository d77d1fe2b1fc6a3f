"""OCI runtime-spec generation, as pure functions over small values.

``make_spec`` turns a :class:`ProcessSpec` and a root filesystem path into the
``config.json`` dictionary that runc (or crun) reads from a bundle. The
defaults mirror what ``docker build`` gives a RUN step: private mount, PID,
IPC and UTS namespaces, Docker's default capabilities, masked and read-only
``/proc`` paths, and ``noNewPrivileges`` left off. Nothing here touches the
filesystem; the files a container needs around it (``/etc/hosts`` and
friends) are rendered here as text and written by the executor.
"""

from __future__ import annotations

from typing import Any, Literal

from lamina.model import model

OCI_VERSION = "1.0.2"

Network = Literal["host", "none"]
NETWORKS: tuple[Network, ...] = ("host", "none")

# Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES: tuple[str, ...] = tuple(
    f"CAP_{name}"
    for name in (
        "CHOWN",
        "DAC_OVERRIDE",
        "FSETID",
        "FOWNER",
        "MKNOD",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETFCAP",
        "SETPCAP",
        "NET_BIND_SERVICE",
        "SYS_CHROOT",
        "KILL",
        "AUDIT_WRITE",
    )
)

MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)

READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

NOFILE_LIMIT = 1048576


@model
class ProcessSpec:
    """What to run inside the container and as whom.

    ``args[0]`` is looked up on the ``PATH`` found in ``env`` by the runtime,
    inside the container; ``env`` entries are ``KEY=value`` strings.
    """

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    terminal: bool = False


@model
class Mount:
    """One OCI mount entry; ``source`` is a host path for bind mounts."""

    destination: str
    source: str
    type: str
    options: tuple[str, ...] = ()

    @staticmethod
    def bind(source: str, destination: str, *, readonly: bool = True) -> Mount:
        """A (read-only by default) bind mount of a host file or directory."""
        options = ("rbind", "ro" if readonly else "rw", "nosuid", "nodev")
        return Mount(destination=destination, source=source, type="bind", options=options)

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "type": self.type,
            "source": self.source,
            "options": list(self.options),
        }


# The same mounts Docker sets up; runc fills /dev with the standard nodes
# (null, zero, full, random, urandom, tty) and links /dev/ptmx to pts.
DEFAULT_MOUNTS: tuple[Mount, ...] = (
    Mount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
    Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    Mount(
        "/dev/pts",
        "devpts",
        "devpts",
        ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
    ),
    Mount("/dev/shm", "shm", "tmpfs", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),
    Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    Mount("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
    Mount("/sys/fs/cgroup", "cgroup", "cgroup", ("nosuid", "noexec", "nodev", "relatime", "ro")),
)


def check_network(network: str) -> Network:
    """Return ``network`` as a :data:`Network`, or raise ``ValueError``."""
    for known in NETWORKS:
        if network == known:
            return known
    raise ValueError(f"unsupported network mode {network!r} (expected one of {', '.join(NETWORKS)})")


def make_spec(
    process: ProcessSpec,
    *,
    rootfs: str,
    hostname: str,
    network: Network,
    extra_mounts: tuple[Mount, ...] = (),
    readonly_rootfs: bool = False,
    annotations: tuple[tuple[str, str], ...] = (),
    cgroups_path: str | None = None,
    nofile: int = NOFILE_LIMIT,
) -> dict[str, Any]:
    """Return an OCI runtime ``config.json`` as a dictionary.

    ``extra_mounts`` come after the defaults so they can cover them.
    ``nofile`` is the open-files limit (soft and hard); Docker's is
    :data:`NOFILE_LIMIT`, which only a runtime with ``CAP_SYS_RESOURCE`` can grant.
    ``network="host"`` shares the host's network namespace (what ``docker
    build`` does by default); ``"none"`` gives a fresh one holding only ``lo``.
    """
    linux: dict[str, Any] = {
        "namespaces": [{"type": kind} for kind in _namespaces(check_network(network))],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        # Deny every device; runc appends the standard allowed ones.
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
    }
    if cgroups_path is not None:
        linux["cgroupsPath"] = cgroups_path
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": _process_json(process, nofile),
        "root": {"path": rootfs, "readonly": readonly_rootfs},
        "hostname": hostname,
        "mounts": [m.to_json() for m in DEFAULT_MOUNTS + extra_mounts],
        "linux": linux,
    }
    if annotations:
        spec["annotations"] = dict(annotations)
    return spec


def _namespaces(network: Network) -> tuple[str, ...]:
    base = ("pid", "ipc", "uts", "mount")
    return base + ("network",) if network == "none" else base


def _process_json(process: ProcessSpec, nofile: int) -> dict[str, Any]:
    if not process.args:
        raise ValueError("a process needs at least one argument")
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "terminal": process.terminal,
        "user": {
            "uid": process.uid,
            "gid": process.gid,
            "additionalGids": list(process.additional_gids),
        },
        "args": list(process.args),
        "env": list(process.env),
        "cwd": process.cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        # docker build leaves this off so setuid tools (sudo, su) keep working.
        "noNewPrivileges": False,
    }


def hosts_file(hostname: str, network: Network, host_hosts: str = "") -> str:
    """Render a container's ``/etc/hosts``.

    Localhost and the container's ``hostname`` always resolve to loopback.
    With host networking the host's own entries follow (minus comments and
    the loopback names we already wrote), as Docker does for ``--network host``.
    """
    lines = [
        f"127.0.0.1\tlocalhost {hostname}",
        f"::1\tlocalhost ip6-localhost ip6-loopback {hostname}",
    ]
    if network == "host":
        lines.extend(_host_entries(host_hosts))
    return "\n".join(lines) + "\n"


_LOOPBACK_NAMES = frozenset(("localhost", "ip6-localhost", "ip6-loopback"))


def _host_entries(text: str) -> list[str]:
    kept = []
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        if fields[0] in ("127.0.0.1", "::1") and set(fields[1:]) <= _LOOPBACK_NAMES:
            continue
        kept.append("\t".join((fields[0], " ".join(fields[1:]))))
    return kept


def resolv_conf(host_resolv: str) -> str:
    """Render ``/etc/resolv.conf``: the host's, kept even for ``--network none`` like Docker."""
    if host_resolv and not host_resolv.endswith("\n"):
        return host_resolv + "\n"
    return host_resolv


def hostname_file(hostname: str) -> str:
    return hostname + "\n"


__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_MOUNTS",
    "MASKED_PATHS",
    "NETWORKS",
    "NOFILE_LIMIT",
    "READONLY_PATHS",
    "Mount",
    "Network",
    "ProcessSpec",
    "check_network",
    "hosts_file",
    "hostname_file",
    "make_spec",
    "resolv_conf",
]
