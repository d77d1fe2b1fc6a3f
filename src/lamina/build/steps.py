"""Executing the steps that change files: RUN, COPY/ADD, WORKDIR.

Each runs against a root directory the caller has mounted (an overlayfs over
the parent's layers); what it writes lands in the mount's upper dir, which
the caller turns into the step's layer.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.build.context import Selected, SourceRoot
from lamina.build.metadata import shell_of
from lamina.build.rootpath import resolve_in_root
from lamina.dockerfile import instructions as ins
from lamina.errors import BuildError, LaminaError
from lamina.model import model
from lamina.oci.config import ContainerConfig

if TYPE_CHECKING:  # copy and the runtime load only when a step runs: a cached build never does
    from lamina.build.copy import Inline
    from lamina.build.mountsetup import RunMounts
    from lamina.build.remote import Remote
    from lamina.runtime.executor import Executor

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LONE_HEREDOC = re.compile(r"<<-?([\"']?)[^\s\"']+\1")
HOSTNAME = "buildkitsandbox"
# Docker's predefined ARGs: usable by RUN without an ARG line, never recorded in the image
PROXY_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                        "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})  # what BuildKit names the RUN container; scripts see it


@model
class RunPlan:
    """Everything that decides what a RUN does, hence its cache key."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    user: str
    cwd: str
    network: str
    stdin: bytes | None = None

    def key_inputs(self) -> dict[str, object]:
        return {"args": list(self.args), "env": list(self.env), "user": self.user, "cwd": self.cwd,
                "network": self.network, "stdin": self.stdin.decode("utf-8", "surrogateescape") if self.stdin else None}


def plan_run(instr: ins.Run, config: ContainerConfig, args: Mapping[str, str], network: str) -> RunPlan:
    """The process a RUN starts: its argv (shell or exec form) and environment."""
    env = dict(config.env_dict())
    env.update(args)  # args in scope; an ENV after an ARG already removed it from ``args``
    env.setdefault("PATH", DEFAULT_PATH)
    argv, stdin = _run_argv(instr, config)
    return RunPlan(argv, tuple(f"{k}={v}" for k, v in env.items()), config.user,
                   config.working_dir or "/", network if instr.network in (None, "default") else instr.network, stdin)


def _run_argv(instr: ins.Run, config: ContainerConfig) -> tuple[tuple[str, ...], bytes | None]:
    if instr.json:
        return instr.command, None
    line = " ".join(instr.command)
    if not instr.heredocs:
        return shell_of(config) + (line,), None
    if len(instr.heredocs) == 1 and _LONE_HEREDOC.fullmatch(line.strip()):
        body = instr.heredocs[0].content  # RUN <<EOF ... EOF: the heredoc is the script
        if body.startswith("#!"):
            return ("/bin/sh", "-c", _shebang_script(body)), None
        return shell_of(config) + (body,), None
    # a command using heredocs: hand the shell the command line followed by the bodies
    script = line + "\n" + "".join(f"{h.content}{h.name}\n" for h in instr.heredocs)
    return shell_of(config) + (script,), None


def _shebang_script(body: str) -> str:
    """Run a heredoc with a shebang line through its interpreter, as BuildKit does."""
    quoted = body.replace("'", "'\\''")
    return f"f=$(mktemp) && printf '%s' '{quoted}' > \"$f\" && chmod +x \"$f\" && \"$f\"; s=$?; rm -f \"$f\"; exit $s"


def execute_run(root: Path, plan: RunPlan, executor: Executor, output: Callable[[bytes], None],
                *, where: str, text: str, mounts: RunMounts | None = None) -> None:
    """Run ``plan`` in a container over ``root``; a non-zero exit is a BuildError.

    ``mounts`` (RUN --mount) are set up around the run and leave nothing in ``root``.
    """
    from lamina.build.copy import mkdir_all
    from lamina.runtime.spec import ProcessSpec

    uid, gid, groups = _user(root, plan.user, where)
    env = list(plan.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={home_of(root, uid)}")
    mkdir_all(root, plan.cwd, (0, 0))
    try:
        with contextlib.ExitStack() as stack:
            prepared = stack.enter_context(mounts.prepared(root)) if mounts is not None else None
            extra_env = prepared.env if prepared is not None else ()  # secrets: never in the plan or key
            process = ProcessSpec(args=plan.args, env=(*env, *extra_env), cwd=plan.cwd, uid=uid, gid=gid,
                                  additional_gids=groups)
            redactor = prepared.redacting(output) if prepared is not None else None
            if redactor is not None:
                stack.callback(redactor.flush)
            code = executor.run(root, process, network=plan.network, hostname=HOSTNAME,
                                output=redactor.feed if redactor is not None else output,
                                mounts=prepared.mounts if prepared is not None else ())
    except LaminaError as exc:
        raise BuildError(f"{where}: RUN {text}: {exc}") from exc
    if code != 0:
        raise BuildError(f"{where}: RUN {text}: returned a non-zero code: {code}")


def _user(root: Path, spec: str, where: str) -> tuple[int, int, tuple[int, ...]]:
    from lamina.build.users import resolve_user  # only when a step runs

    try:
        return resolve_user(root, spec)
    except LaminaError as exc:
        raise BuildError(f"{where}: {exc}") from exc


def home_of(root: Path, uid: int) -> str:
    """HOME for RUN: the user's passwd entry, else ``/`` (Docker's rule)."""
    try:
        text = resolve_in_root(root, "/etc/passwd", follow_final=True).read_text(errors="replace")
    except (LaminaError, OSError):
        return "/"
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2].strip() == str(uid):
            return fields[5] or "/"
    return "/"


def execute_workdir(root: Path, path: str, user: str, where: str) -> None:
    """WORKDIR creates its directory, owned by the current USER (as BuildKit does)."""
    from lamina.build.copy import mkdir_all

    uid, gid, _ = _user(root, user, where) if user else (0, 0, ())
    mkdir_all(root, path, (uid, gid))


def execute_copy(root: Path, instr: ins.Copy | ins.Add, selected: Sequence[Selected | Remote], src: SourceRoot | None,
                 *, workdir: str, where: str) -> None:
    """COPY/ADD the selected sources (and ADD's fetched URLs, then heredocs) into ``root``, in order."""
    from lamina.build.copy import Inline, copy_into
    from lamina.build.users import parse_chown

    try:
        chown = parse_chown(root, instr.chown) if instr.chown else None
        chmod = _chmod(instr.chmod) if instr.chmod else None
        sources: list[Selected | Inline | Remote] = list(selected)
        for doc in instr.heredocs:
            sources.append(Inline(doc.name, doc.content.encode()))
        copy_into(root, sources, instr.dest, src_root=src, workdir=workdir or "/", chown=chown,
                  chmod=chmod, is_add=isinstance(instr, ins.Add),
                  unpack=instr.unpack if isinstance(instr, ins.Add) else None)
    except LaminaError as exc:
        raise BuildError(f"{where}: {exc}") from exc


def _chmod(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise BuildError(f"invalid chmod parameter: {text!r}") from None
    if not 0 <= value <= 0o7777:
        raise BuildError(f"invalid chmod parameter: {text!r}")
    return value
