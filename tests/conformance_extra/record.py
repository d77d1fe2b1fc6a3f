"""Record expected-view.json for the cases here from a real Docker (BuildKit) daemon.

Builds each case with ``docker build`` (BuildKit, or the classic builder for
``oracle = "docker-classic"``) through ../shared/conformance/check.py's own
staging, pre-step and archive-reducing code, so a recording is exactly what
check.py later compares a candidate with. Cases with ``oracle = "expected"``
carry hand-written assertions and are skipped. Usage (see README.md):

    python3 tests/conformance_extra/record.py --host unix:///tmp/dc/docker.sock [--only PATTERN]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHECK_DIR = HERE.parents[2] / "shared" / "conformance"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True, help="the docker daemon, e.g. unix:///tmp/dc/docker.sock")
    ap.add_argument("--docker", default="/usr/bin/docker", help="the docker client (default /usr/bin/docker)")
    ap.add_argument("--only", default=None, help="glob or regular expression on case names")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(CHECK_DIR))
    import check  # type: ignore[import-not-found]  # ../shared/conformance/check.py

    check.CASES_DIR = str(HERE / "cases")
    docker = f"{args.docker} -H {args.host}"
    server = subprocess.run([*docker.split(), "version", "-f", "{{.Server.Version}}"],
                            capture_output=True, text=True, check=True).stdout.strip()

    def record(case: Any) -> str:
        buildkit = case.oracle == "docker-buildkit"
        build = (f"DOCKER_BUILDKIT={int(buildkit)} {docker} build {'--progress plain ' if buildkit else ''}"
                 "--network none -t {tag} -f {dockerfile} {buildargs} {target} {context}")
        builder = check.Builder(build, f"{docker} save -o {{out}} {{tag}}",
                                f"{docker} rmi -f {{tag}} >/dev/null 2>&1", name="docker")
        work = Path(tempfile.mkdtemp(prefix="record-"))
        try:
            case.stage(str(work / "ctx"))
            result = check.build_case(builder, case, str(work / "ctx"), "record-" + case.name.lower()[:40], str(work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        out: dict[str, Any] = {"case": case.name, "oracle": case.oracle, "docker_server": server,
                               "case_hash": case.case_hash(), "status": result["status"]}
        if result["status"] == "success":
            out["view"] = result["view"]
        elif result["status"] == "failure":
            lines = [line for line in result.get("build_output", "").splitlines() if line.strip()]
            out["docker_error"] = lines[-1] if lines else ""
        else:
            return f"ERROR {case.name}: {result.get('message')}"
        if out["status"] != case.expect:
            return f"MISMATCH {case.name}: docker {out['status']}, case.toml expects {case.expect}"
        wanted = case.error_substring.lower()
        if case.expect == "failure" and wanted and wanted not in result.get("build_output", "").lower():
            return f"MISMATCH {case.name}: {case.error_substring!r} not in {out['docker_error']!r}"
        text = json.dumps(out, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (Path(case.path) / check.RECORD_FILE).write_text(text, encoding="utf-8")
        return f"OK {case.name} {out['status']} {out.get('docker_error', '')}"

    cases = [c for c in check.load_cases(args.only) if c.oracle != "expected"]
    bad = 0
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for line in pool.map(record, cases):
            print(line, flush=True)
            bad += not line.startswith("OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
