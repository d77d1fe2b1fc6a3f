"""Drivers for the tools compared: lamina, docker build with BuildKit, and buildah.

A driver owns its tool's state under one work folder (a store, a private dockerd, a
containers/storage root), loads the same base docker-archives into it, and answers the
command lines the harness times: ``build``, ``push`` and ``pull``. Untimed preparation
(``before_push``, ``before_pull``, ``after_pull``) is kept apart, so a timing holds only the
tool's own command. Every tool pushes to and pulls from the same loopback registry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from services import DOCKER_CLIENT, REPO, Dockerd, dockerd_available, start_dockerd


def unmount_under(path: Path) -> None:
    """Detach every mount at or below ``path`` (deepest first); tools can leave their storage mounted."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    prefix = str(path.resolve())
    points = [line.split()[4].encode().decode("unicode_escape") for line in lines]
    for point in sorted({p for p in points if p == prefix or p.startswith(prefix + "/")}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}…: {done.stderr.decode(errors='replace').strip()[-400:]}")


class Peer:
    """One tool under test. ``env`` is the environment every timed command runs with."""

    name = ""
    label = ""

    def __init__(self, work: Path) -> None:
        self.work = work / self.name
        self.env = dict(os.environ)

    def available(self) -> bool:
        return True

    def setup(self, bases: dict[str, Path]) -> None:
        raise NotImplementedError

    def build(self, context: Path, tag: str, no_cache: bool) -> list[str]:
        raise NotImplementedError

    def before_push(self, tag: str, dest: str) -> None:
        """Untimed: make ``tag`` known under ``dest`` where the tool needs that to push."""

    def push(self, tag: str, dest: str) -> list[str]:
        raise NotImplementedError

    def before_pull(self) -> None:
        """Untimed: give the next pull an empty store."""

    def pull(self, dest: str) -> list[str]:
        raise NotImplementedError

    def after_pull(self) -> None:
        """Untimed: put back what the next run's builds need."""

    def teardown(self, keep: bool) -> None:
        unmount_under(self.work)
        if not keep:
            shutil.rmtree(self.work, ignore_errors=True)


# Imports every lamina module and its heavy dependencies once, untimed, so their bytecode is cached
# before the first timed command (an installed package ships it compiled).
_WARM_BYTECODE = """
import importlib, pkgutil, lamina
for module in pkgutil.walk_packages(lamina.__path__, "lamina."):
    if module.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(module.name)
    except Exception:
        pass
for name in ("argparse", "rich.console", "rich.progress", "isal.isal_zlib", "zstandard"):
    importlib.import_module(name)
"""


class Lamina(Peer):
    name, label = "lamina", "lamina"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO / "src"), os.environ.get("PYTHONPATH"))))
        # measure lamina as installed, with bytecode cached (kept outside the checkout), never recompiling
        # every module on every command as PYTHONDONTWRITEBYTECODE would make it
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(work.parent / "pycache")

    def _cli(self, root: Path) -> list[str]:
        return [str(self.work / "lamina"), "--root", str(root)]

    def setup(self, bases: dict[str, Path]) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        # the `lamina` command as scripts/setup installs it (python -S; lamina.launcher), for this checkout
        _run([sys.executable, "-c", "import sys; from lamina.launcher import install_launcher; "
              "install_launcher(*sys.argv[1:])", str(self.work / "lamina"), sys.executable, str(REPO / "src")],
             self.env)
        _run([sys.executable, "-c", _WARM_BYTECODE], self.env)
        for name, base in bases.items():
            _run([*self._cli(self.work / "store"), "load", "-q", "-i", str(base)], self.env)
            # docker load and buildah pull unpack a base as they store it; lamina unpacks a layer into its
            # snapshot when a RUN first needs it. Doing that here, untimed, keeps it out of the first cold build.
            context = self.work / "warm-up"
            context.mkdir(exist_ok=True)
            (context / "Dockerfile").write_text(f"FROM {name}\nRUN true\n")
            _run([*self._cli(self.work / "store"), "build", "-q", "--network", "host", str(context)], self.env)

    def build(self, context: Path, tag: str, no_cache: bool) -> list[str]:
        return [*self._cli(self.work / "store"), "build", "-q", "--network", "host", "-t", tag, *(["--no-cache"] if no_cache else []),
                str(context)]

    def push(self, tag: str, dest: str) -> list[str]:
        return [*self._cli(self.work / "store"), "push", "-q", tag, dest]

    def before_pull(self) -> None:
        shutil.rmtree(self.work / "pulled", ignore_errors=True)

    def pull(self, dest: str) -> list[str]:
        return [*self._cli(self.work / "pulled"), "pull", "-q", dest]

    def after_pull(self) -> None:
        shutil.rmtree(self.work / "pulled", ignore_errors=True)


class BuildKit(Peer):
    """``docker build`` with BuildKit against a private dockerd (started here, stopped in teardown)."""

    name, label = "buildkit", "BuildKit"

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.env["DOCKER_BUILDKIT"] = "1"
        self.daemon: Dockerd | None = None
        self.bases: dict[str, Path] = {}

    def available(self) -> bool:
        return dockerd_available()

    @property
    def docker(self) -> list[str]:
        return self.daemon.argv if self.daemon else [DOCKER_CLIENT]

    def setup(self, bases: dict[str, Path]) -> None:
        self.daemon = start_dockerd(self.work)
        self.bases = bases
        self.after_pull()

    def build(self, context: Path, tag: str, no_cache: bool) -> list[str]:
        return [*self.docker, "build", "-q", "--network", "host", "-t", tag, *(["--no-cache"] if no_cache else []), str(context)]

    def before_push(self, tag: str, dest: str) -> None:
        _run([*self.docker, "tag", tag, dest])

    def push(self, tag: str, dest: str) -> list[str]:
        return [*self.docker, "push", "-q", dest]

    def before_pull(self) -> None:
        # one daemon, one store: emptying it is the only way to pull "into an empty store"
        ids = subprocess.run([*self.docker, "image", "ls", "-aq"], capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run([*self.docker, "image", "rm", "-f", *sorted(set(ids))], capture_output=True)
        subprocess.run([*self.docker, "builder", "prune", "-af"], capture_output=True, env=self.env)

    def pull(self, dest: str) -> list[str]:
        return [*self.docker, "pull", "-q", dest]

    def after_pull(self) -> None:
        for base in self.bases.values():
            _run([*self.docker, "load", "-q", "-i", str(base)])

    def teardown(self, keep: bool) -> None:
        if self.daemon:
            self.daemon.stop()
        super().teardown(keep)


class Buildah(Peer):
    """``buildah bud --layers`` with its own storage root (overlay driver)."""

    name, label = "buildah", "buildah"

    def available(self) -> bool:
        return shutil.which("buildah") is not None and os.geteuid() == 0

    def _cli(self, which: str) -> list[str]:
        return ["buildah", "--root", str(self.work / which / "root"), "--runroot", str(self.work / which / "run"),
                "--storage-driver", "overlay"]

    def setup(self, bases: dict[str, Path]) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        for base in bases.values():
            _run([*self._cli("store"), "pull", "-q", f"docker-archive:{base}"])

    def build(self, context: Path, tag: str, no_cache: bool) -> list[str]:
        return [*self._cli("store"), "bud", "--runtime", "runc", "--layers", "--jobs", "2",
                "--network", "host", "-q", "-t", tag,
                *(["--no-cache"] if no_cache else []), "-f", str(context / "Dockerfile"), str(context)]

    def push(self, tag: str, dest: str) -> list[str]:
        return [*self._cli("store"), "push", "-q", "--tls-verify=false", tag, f"docker://{dest}"]

    def before_pull(self) -> None:
        self.after_pull()

    def pull(self, dest: str) -> list[str]:
        return [*self._cli("pulled"), "pull", "-q", "--tls-verify=false", f"docker://{dest}"]

    def after_pull(self) -> None:
        unmount_under(self.work / "pulled")
        shutil.rmtree(self.work / "pulled", ignore_errors=True)


PEERS: dict[str, type[Peer]] = {"lamina": Lamina, "buildkit": BuildKit, "buildah": Buildah}
