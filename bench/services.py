"""The servers a benchmark run needs, started and stopped by the harness.

A Debian ``docker-registry`` on 127.0.0.1 (the tests' helper starts it), and a private
``dockerd`` with its own data root, exec root and socket, so the benchmark never touches a
docker installation of the machine. Both are children of the harness and end with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKER_CLIENT = "/usr/bin/docker"  # the daemon's own client: /usr/local/bin/docker may be newer than dockerd

_MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
))


def start_registry(workdir: Path) -> object:
    """A running docker-registry (tests/helpers/registry.py); ``.host`` and ``.stop()``."""
    for path in (str(REPO), str(REPO / "src")):
        if path not in sys.path:
            sys.path.insert(0, path)
    from tests.helpers.registry import start_registry as start

    return start(workdir)


def image_size(host: str, repository: str, tag: str) -> int | None:
    """The compressed size of an image as a registry holds it: config plus layers, from its manifest."""
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{tag}",
                                     headers={"Accept": _MANIFEST_TYPES})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            manifest = json.load(response)
    except OSError:
        return None
    return int(manifest["config"]["size"]) + sum(int(layer["size"]) for layer in manifest["layers"])


@dataclass
class Dockerd:
    """A private dockerd; ``argv`` is the client command line that talks to it."""

    process: subprocess.Popen[bytes]
    exec_root: Path
    log: Path
    argv: list[str]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.exec_root, ignore_errors=True)


def dockerd_available() -> bool:
    return os.path.exists(DOCKER_CLIENT) and shutil.which("dockerd") is not None and os.geteuid() == 0


def start_dockerd(workdir: Path) -> Dockerd:
    """Start dockerd without a bridge or iptables; its data root lives in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    exec_root = Path(tempfile.mkdtemp(prefix="lbd-"))  # short: containerd's socket path lives under it
    sock = exec_root / "docker.sock"
    log = workdir / "dockerd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [shutil.which("dockerd") or "dockerd", "--bridge=none", "--iptables=false",
             "--data-root", str(workdir / "root"), "--exec-root", str(exec_root / "exec"),
             "--pidfile", str(exec_root / "pid"), "-H", f"unix://{sock}"],
            stdout=out, stderr=out, start_new_session=True)
    daemon = Dockerd(process, exec_root, log, [DOCKER_CLIENT, "-H", f"unix://{sock}"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if subprocess.run([*daemon.argv, "info"], capture_output=True).returncode == 0:
            return daemon
        time.sleep(0.5)
    daemon.stop()
    raise RuntimeError("dockerd did not start: " + log.read_text()[-500:])
