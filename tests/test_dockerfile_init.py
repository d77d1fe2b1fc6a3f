"""The package's public names are a deliberate list."""

from __future__ import annotations

import lamina.dockerfile as package


def test_all_is_pinned() -> None:
    assert sorted(package.__all__) == sorted(
        [
            "Add", "Arg", "Cmd", "Copy", "Directives", "Dockerfile", "Entrypoint", "Env", "Expansion",
            "Expose", "From", "Healthcheck", "Heredoc", "Instruction", "Label", "Lexer", "Maintainer",
            "Node", "Onbuild", "ParsedFile", "Run", "Shell", "Stage", "StopSignal", "User", "Volume",
            "Workdir", "expand", "expand_tracking", "find_stage", "parse", "parse_dockerfile",
            "parse_duration", "stage_index", "to_instruction",
        ]
    )  # fmt: skip


def test_every_public_name_exists() -> None:
    for name in package.__all__:
        assert hasattr(package, name), name


def test_imports_nothing_of_lamina_but_errors_and_model() -> None:
    import ast
    from pathlib import Path

    folder = Path(package.__file__).parent
    for source in folder.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert not node.module.startswith("lamina.") or node.module in ("lamina.errors", "lamina.model"), \
                    source.name
