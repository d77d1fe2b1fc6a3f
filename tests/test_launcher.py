"""The `lamina` launcher: Python without site, dependencies found all the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lamina.launcher import REQUIRED, add_site_packages, install_launcher, launcher

SRC = str(Path(__file__).parents[1] / "src")


def _python_s(code: str) -> object:
    """Run ``code`` in ``python -S`` with only lamina's source on the path; its printed JSON."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {SRC!r})\n{code}"],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.splitlines()[-1])


def test_launcher_starts_python_without_site_and_imports_lamina_from_src() -> None:
    text = launcher("/usr/bin/python3", "/opt/lamina/src")
    assert text.splitlines()[0] == "#!/usr/bin/python3 -S"
    assert "sys.path.insert(0, '/opt/lamina/src')" in text
    assert text.rstrip().endswith("main()")
    compile(text, "lamina", "exec")


def test_installed_launcher_runs_lamina(tmp_path: Path) -> None:
    path = tmp_path / "bin" / "lamina"
    path.parent.mkdir()
    install_launcher(str(path), sys.executable, SRC)
    assert os.access(path, os.X_OK)
    assert not (tmp_path / "bin" / "lamina.new").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(path), "--version"], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert "0.1.0" in out.stdout


def test_importing_lamina_under_python_s_finds_the_dependencies_without_running_site() -> None:
    found = _python_s("import lamina, builtins, json, importlib.util as u\n"
                      "print(json.dumps([hasattr(builtins, 'exit'), "
                      f"all(u.find_spec(m) for m in {REQUIRED!r})]))")
    assert found == [False, True]  # site.main() would have added exit(); every dependency is found


def test_a_dependency_only_a_pth_file_can_reveal_falls_back_to_site() -> None:
    found = _python_s("import lamina, builtins, json\nfrom lamina.launcher import add_site_packages\n"
                      "print(json.dumps([add_site_packages(('no_such_module_anywhere',)), hasattr(builtins, 'exit')]))")
    assert found == [False, True]


def test_a_normal_start_is_left_alone() -> None:
    before = list(sys.path)
    assert add_site_packages(("no_such_module_anywhere",)) is True
    assert sys.path == before
