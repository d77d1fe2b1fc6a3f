"""Unit tests for lamina.runtime.spec: the produced config.json, as data."""

from __future__ import annotations

import json

import pytest

from lamina.runtime.spec import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    NOFILE_LIMIT,
    READONLY_PATHS,
    Mount,
    ProcessSpec,
    check_network,
    hostname_file,
    hosts_file,
    make_spec,
    resolv_conf,
)

PROCESS = ProcessSpec(
    args=("/bin/sh", "-c", "echo hi"),
    env=("PATH=/usr/bin:/bin", "HOME=/root"),
    cwd="/work",
    uid=1000,
    gid=100,
    additional_gids=(10, 20),
)


def spec(**overrides: object) -> dict[str, object]:
    options: dict[str, object] = {"rootfs": "/r", "hostname": "box", "network": "host"}
    options.update(overrides)
    return make_spec(PROCESS, **options)  # type: ignore[arg-type]


def namespaces(config: dict[str, object]) -> set[str]:
    return {ns["type"] for ns in config["linux"]["namespaces"]}  # type: ignore[index]


def mount_map(config: dict[str, object]) -> dict[str, dict[str, object]]:
    return {m["destination"]: m for m in config["mounts"]}  # type: ignore[attr-defined]


def test_top_level_fields() -> None:
    config = spec()
    assert config["ociVersion"] == "1.0.2"
    assert config["root"] == {"path": "/r", "readonly": False}
    assert config["hostname"] == "box"
    assert "annotations" not in config
    json.dumps(config)  # must serialise as-is


def test_process_fields() -> None:
    process = spec()["process"]
    assert process == {
        "terminal": False,
        "user": {"uid": 1000, "gid": 100, "additionalGids": [10, 20]},
        "args": ["/bin/sh", "-c", "echo hi"],
        "env": ["PATH=/usr/bin:/bin", "HOME=/root"],
        "cwd": "/work",
        "capabilities": {
            "bounding": list(DEFAULT_CAPABILITIES),
            "effective": list(DEFAULT_CAPABILITIES),
            "permitted": list(DEFAULT_CAPABILITIES),
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": NOFILE_LIMIT, "soft": NOFILE_LIMIT}],
        "noNewPrivileges": False,
    }


def test_docker_default_capabilities() -> None:
    assert len(DEFAULT_CAPABILITIES) == 14
    assert {"CAP_CHOWN", "CAP_NET_RAW", "CAP_AUDIT_WRITE", "CAP_SYS_CHROOT"} <= set(DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in DEFAULT_CAPABILITIES


def test_host_network_shares_host_namespace() -> None:
    assert namespaces(spec(network="host")) == {"pid", "ipc", "uts", "mount"}


def test_network_none_gets_own_namespace() -> None:
    assert namespaces(spec(network="none")) == {"pid", "ipc", "uts", "mount", "network"}


@pytest.mark.parametrize("network", ["bridge", "", "HOST"])
def test_unknown_network_is_rejected(network: str) -> None:
    with pytest.raises(ValueError, match="network"):
        spec(network=network)
    with pytest.raises(ValueError):
        check_network(network)


def test_default_mounts() -> None:
    mounts = mount_map(spec())
    assert list(mounts)[:7] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]
    assert mounts["/proc"]["type"] == "proc"
    assert mounts["/dev"]["type"] == "tmpfs"
    assert "newinstance" in mounts["/dev/pts"]["options"]  # type: ignore[operator]
    assert "ro" in mounts["/sys"]["options"]  # type: ignore[operator]
    assert "ro" in mounts["/sys/fs/cgroup"]["options"]  # type: ignore[operator]


def test_extra_mounts_come_last_and_in_order() -> None:
    extra = (
        Mount.bind("/host/hosts", "/etc/hosts"),
        Mount("/cache", "/host/cache", "bind", ("rbind", "rw")),
    )
    mounts = spec(extra_mounts=extra)["mounts"]
    assert mounts[-2:] == [  # type: ignore[index]
        {
            "destination": "/etc/hosts",
            "type": "bind",
            "source": "/host/hosts",
            "options": ["rbind", "ro", "nosuid", "nodev"],
        },
        {"destination": "/cache", "type": "bind", "source": "/host/cache", "options": ["rbind", "rw"]},
    ]


def test_masked_and_readonly_paths_like_docker() -> None:
    linux = spec()["linux"]
    assert linux["maskedPaths"] == list(MASKED_PATHS)  # type: ignore[index]
    assert linux["readonlyPaths"] == list(READONLY_PATHS)  # type: ignore[index]
    assert "/proc/kcore" in MASKED_PATHS
    assert "/proc/sys" in READONLY_PATHS


def test_devices_denied_by_default() -> None:
    assert spec()["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}  # type: ignore[index]


def test_options() -> None:
    config = spec(
        readonly_rootfs=True,
        annotations=(("org.lamina.owner", "1:2"),),
        cgroups_path="lamina/x",
        nofile=4096,
    )
    assert config["root"] == {"path": "/r", "readonly": True}
    assert config["annotations"] == {"org.lamina.owner": "1:2"}
    assert config["linux"]["cgroupsPath"] == "lamina/x"  # type: ignore[index]
    assert config["process"]["rlimits"][0]["hard"] == 4096  # type: ignore[index]


def test_terminal_flag() -> None:
    process = ProcessSpec(("sh",), (), "/", 0, 0, terminal=True)
    assert make_spec(process, rootfs="/r", hostname="h", network="none")["process"]["terminal"] is True


def test_empty_args_rejected() -> None:
    with pytest.raises(ValueError, match="argument"):
        make_spec(ProcessSpec((), (), "/", 0, 0), rootfs="/r", hostname="h", network="host")


def test_values_are_frozen() -> None:
    with pytest.raises(AttributeError):
        PROCESS.uid = 0  # type: ignore[misc]


HOST_HOSTS = """\
# comment
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
10.0.0.5  registry.internal  registry   # trailing comment
127.0.1.1 myhost
"""


def test_hosts_file_network_none() -> None:
    assert hosts_file("box", "none", HOST_HOSTS) == (
        "127.0.0.1\tlocalhost box\n::1\tlocalhost ip6-localhost ip6-loopback box\n"
    )


def test_hosts_file_host_network_copies_host_entries() -> None:
    text = hosts_file("box", "host", HOST_HOSTS)
    assert text.splitlines() == [
        "127.0.0.1\tlocalhost box",
        "::1\tlocalhost ip6-localhost ip6-loopback box",
        "10.0.0.5\tregistry.internal registry",
        "127.0.1.1\tmyhost",
    ]


def test_resolv_conf_and_hostname() -> None:
    assert resolv_conf("nameserver 1.1.1.1") == "nameserver 1.1.1.1\n"
    assert resolv_conf("nameserver 1.1.1.1\n") == "nameserver 1.1.1.1\n"
    assert resolv_conf("") == ""
    assert hostname_file("box") == "box\n"
