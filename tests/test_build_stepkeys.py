"""What identifies a step, and how history names it (instructions parsed from Dockerfile text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamina.build.metadata import apply
from lamina.build.stepkeys import PrefetchedStatCache, StatCacheAdapter, canonical_instruction, history_text
from lamina.dockerfile import Instruction, Lexer, expand, parse_dockerfile
from lamina.oci.config import ContainerConfig
from lamina.store.db import Metadata


def instr(line: str, env: dict[str, str] | None = None) -> Instruction:
    """One instruction, parsed and expanded as the planner would."""
    (parsed,) = parse_dockerfile(f"FROM base\n{line}\n").stages[0].instructions
    return expand(parsed, env or {}, Lexer())


# Same meaning, different spelling or place: the same canonical form.
SAME = [
    ("ENV A=1", "\n\nENV A=1"),
    ("ENV A=1", "env A=1"),
    ("ENV A=1", "ENV A 1"),
    ("ENV A=1", "ENV A=$ONE"),
    ('CMD ["a", "b"]', 'CMD ["a","b"]'),
    ("COPY a b /d/", "COPY  a  b  /d/"),
    ("RUN make", "run make"),
    ("RUN make", "RUN  make"),
    ("LABEL a=b", 'LABEL "a"="b"'),
]

# Different meaning: different canonical forms.
DIFFERENT = [
    ("ENV A=1", "ENV A=2"),
    ("ENV A=1", "LABEL A=1"),
    ("CMD echo hi", 'CMD ["echo", "hi"]'),
    ("CMD echo hi", "ENTRYPOINT echo hi"),
    ("COPY a /d/", "ADD a /d/"),
    ("COPY a /d/", "COPY --chown=1:1 a /d/"),
    ("COPY a /d/", "COPY --link a /d/"),
    ("RUN make", "RUN --network=none make"),
    ("RUN make all", "RUN make  all"),  # a RUN's text is its command: inner spaces matter
    ("ONBUILD RUN a", "ONBUILD RUN b"),
    ("HEALTHCHECK NONE", "HEALTHCHECK CMD true"),
    ("HEALTHCHECK --retries=1 CMD true", "HEALTHCHECK --retries=2 CMD true"),
    ("EXPOSE 80", "EXPOSE 80/udp"),
]


@pytest.mark.parametrize(("left", "right"), SAME)
def test_canonical_same(left: str, right: str) -> None:
    env = {"ONE": "1"}
    assert canonical_instruction(instr(left, env)) == canonical_instruction(instr(right, env))


@pytest.mark.parametrize(("left", "right"), DIFFERENT)
def test_canonical_different(left: str, right: str) -> None:
    assert canonical_instruction(instr(left)) != canonical_instruction(instr(right))


def test_canonical_golden() -> None:
    assert canonical_instruction(instr("ENV A=1 B=2")) == {"kind": "ENV", "pairs": [["A", "1"], ["B", "2"]]}
    assert canonical_instruction(instr("ONBUILD RUN make")) == {
        "kind": "ONBUILD", "trigger": "RUN make", "expression": "RUN make"}
    heredoc = canonical_instruction(instr("COPY <<EOF /x\nhi\nEOF"))
    assert heredoc["kind"] == "COPY" and heredoc["sources"] == [] and heredoc["dest"] == "/x"
    assert heredoc["heredocs"] == [{"name": "EOF", "content": "hi\n", "expand": True, "chomp": False, "fd": 0}]


@pytest.mark.parametrize("line", ["ENV A=1", "RUN <<EOF\necho\nEOF", "COPY --from=b a /d", "HEALTHCHECK NONE",
                                  "ONBUILD COPY . /app", 'VOLUME ["/a"]', "EXPOSE 80 443"])
def test_canonical_is_json(line: str) -> None:
    canon = canonical_instruction(instr(line))
    assert json.loads(json.dumps(canon)) == canon
    assert "line" not in canon and "original" not in canon


BASE = ContainerConfig(working_dir="/srv")

# Dockerfile line → created_by (the config after the instruction supplies CMD, ENTRYPOINT, WORKDIR)
HISTORY = [
    ('ENV A=1 B="two words"', "ENV A=1 B=two words"),
    ('LABEL a=b "c d"=e', "LABEL a=b c d=e"),
    ("ARG X", "ARG X"),
    ("ARG X=1 Y", "ARG X=1 Y"),
    ('CMD ["sh"]', 'CMD ["sh"]'),
    ('ENTRYPOINT ["/init"]', 'ENTRYPOINT ["/init"]'),
    ("USER app", "USER app"),
    ("WORKDIR app", "WORKDIR /srv/app"),
    ("STOPSIGNAL SIGQUIT", "STOPSIGNAL SIGQUIT"),
    ("MAINTAINER Jane", "MAINTAINER Jane"),
    ("ONBUILD RUN make", "ONBUILD RUN make"),
    ("HEALTHCHECK NONE", "HEALTHCHECK NONE"),
    ("COPY a b /d/", "COPY a b /d/"),
    ("COPY --from=b --chown=1:1 --chmod=644 a /d/", "COPY --from=b --chown=1:1 --chmod=644 a /d/"),
    ("ADD https://example.com/x /z", "ADD https://example.com/x /z"),
    ("COPY <<EOF /x\nhi\nEOF", "COPY <<EOF /x"),
    # normalized on purpose (issue 9): JSON lists and plain port lists, never Go's %q/%v syntax
    ("CMD echo hi", 'CMD ["/bin/sh", "-c", "echo hi"]'),
    ('ENTRYPOINT ["tini", "--"]', 'ENTRYPOINT ["tini", "--"]'),
    ("EXPOSE 80", "EXPOSE 80"),
    ("VOLUME /data", 'VOLUME ["/data"]'),
]


@pytest.mark.parametrize(("line", "expected"), HISTORY)
def test_history_text(line: str, expected: str) -> None:
    parsed = instr(line)
    assert history_text(parsed, apply(BASE, parsed)) == expected


@pytest.mark.parametrize(("line", "args", "expected"), [
    ("RUN make all", ("/bin/sh", "-c", "make all"), "RUN /bin/sh -c make all"),
    ('RUN ["make", "all"]', ("make", "all"), 'RUN ["make", "all"]'),
])
def test_history_text_run(line: str, args: tuple[str, ...], expected: str) -> None:
    assert history_text(instr(line), BASE, args) == expected


def test_stat_cache_adapter_batches(tmp_path: Path) -> None:
    db = Metadata(tmp_path / "lamina.db")
    try:
        adapter = StatCacheAdapter(db)
        adapter.put("a", 1, 2, 3, 0o100644, "sha256:x")
        assert adapter.get("a", 1, 2, 3, 0o100644) is None  # not written until flushed
        adapter.flush()
        adapter.flush()  # nothing pending
        assert adapter.get("a", 1, 2, 3, 0o100644) == "sha256:x"
        assert adapter.get("a", 1, 2, 4, 0o100644) is None
        assert db.stat_get("a", 1, 2, 3, 0o100644) == "sha256:x"
    finally:
        db.close()


def test_the_stat_cache_reads_the_contexts_rows_at_once(tmp_path: Path) -> None:
    db = Metadata(tmp_path / "lamina.db")
    db.stat_put_many([("/ctx/a", 1, 2, 3, 4, "sha256:a"), ("/ctx/sub/b", 1, 2, 3, 4, "sha256:b"),
                      ("/ctx0/c", 1, 2, 3, 4, "sha256:c"), ("/other/d", 1, 2, 3, 4, "sha256:d")])
    assert set(db.stat_under("/ctx")) == {"/ctx/a", "/ctx/sub/b"}
    cache = PrefetchedStatCache(db, Path("/ctx"))
    assert cache.get("/ctx/a", 1, 2, 3, 4) == "sha256:a"
    assert cache.get("/ctx/a", 1, 9, 3, 4) is None  # modified since: read it again
    assert cache.get("/other/d", 1, 2, 3, 4) == "sha256:d"  # outside the context: asked one by one
    cache.put("/ctx/new", 5, 6, 7, 8, "sha256:n")
    assert cache.get("/ctx/new", 5, 6, 7, 8) == "sha256:n"
    cache.flush()
    assert PrefetchedStatCache(db, Path("/ctx")).get("/ctx/new", 5, 6, 7, 8) == "sha256:n"
    relative = PrefetchedStatCache(db, Path("."))  # paths are relative then: no prefix to scan
    assert relative.get("/ctx/a", 1, 2, 3, 4) == "sha256:a"
