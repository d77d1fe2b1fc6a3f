"""The ``lamina`` launcher, and its dependencies on ``sys.path`` without :mod:`site`.

The ``lamina`` launcher (:func:`launcher`, installed by ``scripts/setup``) runs ``python -S``: processing
site-packages' ``.pth`` files is a third to a half of a short command's start-up (~40 ms on
the reference VM, where one of them imports certifi). lamina then adds the interpreter's
site-packages directories itself, without running their ``.pth`` files. When a dependency is
not found there (installed in editable mode, say, which only a ``.pth`` can reveal), it falls
back to what a normal start does, :func:`site.main`.
"""

from __future__ import annotations

import os
import sys

# the distributions lamina imports, by their import names (pyproject's dependencies)
REQUIRED = ("rich", "isal", "zstandard", "dockerfile")


def launcher(interpreter: str, src: str) -> str:
    """The text of the ``lamina`` command: ``interpreter -S``, lamina imported from ``src``.

    ``scripts/setup`` writes it over pip's console script; the benchmark runs the same text.
    """
    return (f"#!{interpreter} -S\n"
            "# lamina's launcher (lamina.launcher.launcher): Python without site, lamina from this checkout.\n"
            f"import sys\nsys.path.insert(0, {src!r})\nfrom lamina.cli.main import main\nmain()\n")


def install_launcher(path: str, interpreter: str, src: str) -> None:
    """Write :func:`launcher` to ``path`` (executable), atomically: a running ``lamina`` never sees half of it."""
    tmp = f"{path}.new"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(launcher(interpreter, src))
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def add_site_packages(required: tuple[str, ...] = REQUIRED) -> bool:
    """Put site-packages on ``sys.path`` without ``.pth`` files; return whether that sufficed.

    Called on ``import lamina`` when ``sys.flags.no_site`` is set; otherwise a no-op.
    """
    if not sys.flags.no_site:
        return True
    import site
    from importlib.machinery import PathFinder

    dirs = list(site.getsitepackages())
    if site.check_enableusersite():
        dirs.insert(0, site.getusersitepackages())
    for path in dirs:
        if path not in sys.path and os.path.isdir(path):
            sys.path.append(path)
    if all(PathFinder.find_spec(name) is not None for name in required):
        return True
    site.main()  # the .pth files decide where the rest lives
    return False
