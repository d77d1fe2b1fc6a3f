"""The benchmark loop: bases, contexts, servers, then every scenario for every tool, alternating.

Per run and workload the scenarios go in order — cold (``--no-cache``), warm (nothing
changed), push (to a fresh repository), incremental (one copied file changed), push-incr
(the same repository after that rebuild), pull (into an empty store) — and within each
scenario the tools take turns, their order rotated run by run so none always goes first.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import astuple
from pathlib import Path

import workloads as wl
from peers import PEERS, Lamina, Peer
from report import Results, Sample, load_average, machine, markdown, versions, write_readme
from services import REPO, image_size, start_registry

SCENARIOS = ("cold", "warm", "push", "incremental", "push-incr", "pull")
TIMEOUT = 1800.0
TIME = "/usr/bin/time"


def measure(argv: list[str], env: dict[str, str], log: Path) -> Sample:
    """Run ``argv`` to completion; its wall time and the peak RSS of it and its children.

    The command runs under GNU time when present: a child's ``ru_maxrss`` starts from its
    forking parent's, and this harness is far bigger than the ~2 MB of ``time``.
    """
    rss_file = log.with_name("rss")
    timed = [TIME, "-f", "%M", "-o", str(rss_file), *argv] if os.path.exists(TIME) else argv
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(timed, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        timer = threading.Timer(TIMEOUT, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.write(f"# exit {proc.returncode} in {seconds:.3f} s\n".encode())
    rss_kb = usage.ru_maxrss
    if timed is not argv:
        with contextlib.suppress(OSError, ValueError, IndexError):
            rss_kb = int(rss_file.read_text().split()[-1])
    return Sample(seconds, rss_kb / 1024, proc.returncode == 0)


def physical_reference(files: list[Path]) -> tuple[int, float]:
    """Bytes and seconds to read, sha256 and gzip (isal, level 1) ``files`` as one stream."""
    from isal import isal_zlib

    start = time.perf_counter()
    total = 0
    hasher = hashlib.sha256()
    compressor = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    for path in files:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                hasher.update(chunk)
                compressor.compress(chunk)
                total += len(chunk)
    compressor.flush()
    return total, time.perf_counter() - start


def runc_startup(work: Path, busybox_rootfs: Path, runs: int = 5) -> float | None:
    """Median seconds of a bare ``runc run`` of /bin/true in busybox: the floor under every RUN."""
    runc = shutil.which("runc")
    if runc is None:
        return None
    bundle, state = work / "runc-bundle", work / "runc-state"
    (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xf", str(busybox_rootfs), "-C", str(bundle / "rootfs")], check=True)
    subprocess.run([runc, "spec", "-b", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"].update(terminal=False, args=["/bin/true"])
    config["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    times = []
    for i in range(runs):
        start = time.perf_counter()
        done = subprocess.run([runc, "--root", str(state), "run", "-b", str(bundle), f"bench-{os.getpid()}-{i}"],
                              capture_output=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            return None
        times.append(time.perf_counter() - start)
    shutil.rmtree(bundle, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    return statistics.median(times)


def base_archives(letters: list[str], all_workloads: dict[str, wl.Workload]) -> dict[str, Path]:
    """The docker-archives of the bases the chosen workloads use (made once, cached)."""
    wanted = {all_workloads[x].base for x in letters}
    out = {}
    lamina_env = Lamina(Path("/nonexistent")).env
    for name, make, changes in (
            (wl.BUSYBOX_BASE, lambda p: wl.busybox_rootfs(p), ("ENV PATH=/bin", 'CMD ["/bin/sh"]')),
            (wl.DEBIAN_BASE, lambda p: shutil.copyfile(wl.debian_rootfs(), p),
             ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["bash"]'))):
        if name not in wanted:
            continue
        archive = wl.CACHE / (name.replace("/", "-").replace(":", "-") + ".docker.tar")
        if not archive.exists():
            wl.CACHE.mkdir(parents=True, exist_ok=True)
            tmp = wl.CACHE / "make-base"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            rootfs = tmp / "rootfs.tar"
            make(rootfs)
            cli = [sys.executable, "-m", "lamina", "--root", str(tmp / "store")]
            flags = [arg for change in changes for arg in ("-c", change)]
            subprocess.run([*cli, "import", *flags, str(rootfs), name], env=lamina_env, check=True,
                           capture_output=True)
            subprocess.run([*cli, "save", "-o", str(tmp / "out.tar"), name], env=lamina_env, check=True,
                           capture_output=True)
            (tmp / "out.tar").rename(archive)
            shutil.rmtree(tmp, ignore_errors=True)
        out[name] = archive
    return out


def run_benchmark(args: argparse.Namespace) -> Results:
    scale = wl.QUICK if args.quick else wl.FULL
    all_workloads = wl.workloads(scale)
    letters = [x for x in (args.only or "abcde").replace(",", "") if x in all_workloads]
    work = Path(args.workdir)
    state = work / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    log = state / "commands.log"

    runs = args.runs or (1 if args.quick else 5)
    scenarios = [s for s in SCENARIOS if s in args.scenarios.split(",")]
    results = Results([], scenarios, [(x, all_workloads[x].title) for x in letters])

    print(f"bench: generating workloads {','.join(letters)} ({scale.name}) under {work}", file=sys.stderr)
    contexts = {x: wl.generate(all_workloads[x], work / "contexts" / scale.name / x) for x in letters}
    for x in letters:
        files = list(wl.copied_files(all_workloads[x], contexts[x]))
        timings = [physical_reference(files) for _ in range(max(3, runs))]
        results.reference[x] = (timings[0][0], statistics.median(t for _, t in timings))
    bases = base_archives(letters, all_workloads)
    rootfs = wl.busybox_rootfs(state / "busybox-rootfs.tar")
    results.runc_seconds = runc_startup(state, rootfs)
    rootfs.unlink()
    results.run_counts = {x: all_workloads[x].dockerfile.count("\nRUN ") for x in letters}

    peers: list[Peer] = []
    try:
        _start_peers(peers, args.tools.split(","), state, bases, args.keep)
        results.tools = [(p.name, p.label) for p in peers]
        for r in range(runs):
            order = peers[r % len(peers):] + peers[:r % len(peers)] if peers else []
            for x in letters:
                # an empty registry for each workload and run: "push to a fresh repository" finds no blob
                # there, not even the base's, and no tool can mount one from an earlier push
                registry = start_registry(state / "registry")
                try:
                    _one_workload(results, all_workloads[x], contexts[x], order, r,
                                  registry.host, log)  # type: ignore[attr-defined]
                finally:
                    registry.stop()  # type: ignore[attr-defined]
                    shutil.rmtree(state / "registry", ignore_errors=True)
    finally:
        for x in letters:
            wl.mutate(all_workloads[x], contexts[x], 0)
        for peer in peers:
            peer.teardown(args.keep)

    results.header = _header(scale.name, runs, peers, statistics.median(results.loads or [0.0]))
    dump = {"header": results.header, "reference": results.reference,
            "sizes": {f"{x}/{tool}": size for (x, tool), size in results.sizes.items()},
            "samples": {f"{x}/{scenario}/{tool}": [list(astuple(s)) for s in samples]
                        for (x, scenario, tool), samples in results.samples.items()}}
    (work / "results.json").write_text(json.dumps(dump, indent=1) + "\n")
    return results


def _start_peers(peers: list[Peer], names: list[str], state: Path, bases: dict[str, Path], keep: bool) -> None:
    """Append to ``peers`` the tools installed and set up here; one that fails to set up is left out."""
    for name in names:
        peer = PEERS[name](state)
        if not peer.available():
            print(f"bench: {name} is not available here; skipped", file=sys.stderr)
            continue
        print(f"bench: setting up {peer.label}", file=sys.stderr)
        try:
            peer.setup(bases)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            peer.teardown(keep)
            if name == "lamina":
                raise
            print(f"bench: {name} could not be set up, skipped: {exc}", file=sys.stderr)
            continue
        peers.append(peer)


def _one_workload(results: Results, w: wl.Workload, context: Path, order: list[Peer], r: int, host: str,
                  log: Path) -> None:
    tag = f"bench-{w.letter}:latest"
    for scenario in results.scenarios:
        if scenario == "incremental":
            wl.mutate(w, context, r + 1)
        for peer in order:
            repository = f"bench/{peer.name}-{w.letter}-r{r}"
            dest = f"{host}/{repository}:latest"
            try:
                if scenario in ("cold", "warm", "incremental"):
                    argv = peer.build(context, tag, scenario == "cold")
                elif scenario in ("push", "push-incr"):
                    peer.before_push(tag, dest)
                    argv = peer.push(tag, dest)
                else:
                    peer.before_pull()
                    argv = peer.pull(dest)
                results.loads.append(load_average())
                sample = measure(argv, peer.env, log)
                if scenario == "pull":
                    peer.after_pull()
            except RuntimeError as exc:  # an untimed preparation failed: the scenario counts as failed
                with open(log, "a") as out:
                    out.write(f"\n# {peer.name} {scenario}: {exc}\n")
                sample = Sample(0.0, 0.0, False)
            results.add(w.letter, scenario, peer.name, sample)
            if scenario == "push" and sample.ok:
                results.sizes[(w.letter, peer.name)] = image_size(host, repository, "latest")
            status = "" if sample.ok else f"  FAILED (see {log})"
            print(f"bench: run {r + 1} ({w.letter}) {scenario:<11} {peer.label:<8} {sample.seconds:7.2f} s"
                  f"  {sample.rss_mb:6.0f} MB{status}", file=sys.stderr)


def _header(scale: str, runs: int, peers: list[Peer], load: float) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    tools = {"lamina": [sys.executable, "-m", "lamina", "--version"],
             "docker": ["/usr/bin/docker", "--version"], "buildah": ["buildah", "--version"]}
    names = {p.name for p in peers}
    wanted = {k: v for k, v in tools.items() if k == "lamina" or {"docker": "buildkit"}.get(k, k) in names}
    env_versions = versions(wanted, Lamina(Path("/nonexistent")).env)
    quiet = "" if load < 1.5 else " — **a busy machine: timings are noisy**"
    return (f"**{now}** — {machine()}; {scale} workloads, {runs} run(s), medians; "
            f"median load average {load:.1f}{quiet}.\n"
            f"Tools: {env_versions}.")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description="lamina vs BuildKit vs buildah, side by side.")
    parser.add_argument("--quick", action="store_true", help="smaller workloads, 1 run (to check the harness)")
    parser.add_argument("--runs", type=int, default=0, help="runs per scenario (default 5, --quick 1)")
    parser.add_argument("--only", default="", help="workloads to run, e.g. a,c (default all: a,b,c,d,e)")
    parser.add_argument("--tools", default="lamina,buildkit,buildah", help="tools to compare")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="scenarios to run")
    parser.add_argument("--workdir", default="/tmp/lamina-bench", help="contexts and tool state live here")
    parser.add_argument("--write", action="store_true", help="also put the table into bench/README.md")
    parser.add_argument("--keep", action="store_true", help="keep the tools' stores afterwards")
    args = parser.parse_args(argv)
    unknown = set(args.tools.split(",")) - set(PEERS)
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if "lamina" not in args.tools.split(","):
        parser.error("lamina must be among the tools")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/run needs root (runc, overlayfs, dockerd, buildah)", file=sys.stderr)
        return 2
    try:
        results = run_benchmark(args)
    except KeyboardInterrupt:  # the tools were torn down on the way out
        print("bench: interrupted", file=sys.stderr)
        return 130
    report = markdown(results)
    print(report)
    if args.write:
        write_readme(REPO / "bench" / "README.md", report)
    return 0
