"""RUN --mount and build --secret flags parsed as BuildKit does (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lamina.build.mounts import Redactor, RunMount, SecretSource, parse_mount, parse_mounts, parse_secret_flag
from lamina.errors import BuildError, DockerfileError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("target=/src", RunMount("bind", "/src", readonly=True)),
        ("type=bind,source=app,target=/src,rw", RunMount("bind", "/src", source="app")),
        ("type=bind,src=app,dst=/src,readwrite=true", RunMount("bind", "/src", source="app")),
        ("type=bind,from=build,source=/out,destination=/in", RunMount("bind", "/in", "/out", "build", True)),
        ("type=cache,target=/root/.cache", RunMount("cache", "/root/.cache", id="/root/.cache")),
        ("type=cache,id=pip,target=/c,sharing=locked,mode=0700,uid=1000,gid=100,ro",
         RunMount("cache", "/c", readonly=True, id="pip", sharing="locked", mode=0o700, uid=1000, gid=100)),
        ("type=cache,target=c,sharing=PRIVATE", RunMount("cache", "/work/c", id="/work/c", sharing="private")),
        ("type=secret,id=tok", RunMount("secret", "/run/secrets/tok", readonly=True, id="tok")),
        ("type=secret,target=/etc/key", RunMount("secret", "/etc/key", readonly=True, id="key")),
        ("type=secret,id=tok,env=TOKEN", RunMount("secret", "", readonly=True, id="tok", env="TOKEN")),
        ("type=secret,id=tok,env=T,target=/t,required,mode=0444",
         RunMount("secret", "/t", readonly=True, id="tok", env="T", required=True, mode=0o444)),
        ("type=secret,source=tok,required=false", RunMount("secret", "/run/secrets/tok", readonly=True, id="tok")),
        ("type=tmpfs,target=/scratch", RunMount("tmpfs", "/scratch")),
        ("type=tmpfs,target=/scratch,size=64m", RunMount("tmpfs", "/scratch", size=64 << 20)),
        ("type=tmpfs,target=/t,size=512kb", RunMount("tmpfs", "/t", size=512 << 10)),
        ("TYPE=Cache,Target=/x/../y/", RunMount("cache", "/y", id="/y")),
    ],
)
def test_parse_mount_defaults(text: str, expected: RunMount) -> None:
    assert parse_mount(text, workdir="/work") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=ssh", "--mount=type=ssh is not supported"),
        ("type=volume,target=/x", 'unsupported mount type "volume"'),
        ("type=bind,target=/x,bogus=1", "unexpected key 'bogus'"),
        ("type=bind,target", "invalid field 'target' must be a key=value pair"),
        ("type=bind,target=/x,mode=0700", 'mode not allowed for "bind" type mounts'),
        ("type=tmpfs,target=/x,uid=1", 'uid not allowed for "tmpfs" type mounts'),
        ("type=cache,target=/x,required", "unexpected key 'required' for mount type 'cache'"),
        ("type=cache,target=/x,size=1m", "unexpected key 'size'"),
        ("type=bind,target=/x,sharing=locked", "invalid cache sharing set for bind mount"),
        ("type=cache,target=/x,sharing=sometimes", 'unsupported sharing value "sometimes"'),
        ("type=cache,target=/x,mode=9", "invalid value 9 for mode"),
        ("type=cache,target=/x,uid=-1", "invalid value -1 for uid"),
        ("type=tmpfs,target=/x,size=lots", "invalid value for size: lots"),
        ("type=bind,target=/x,ro=maybe", "invalid value for ro: maybe"),
        ("type=cache", "mount type cache requires a target"),
        ("type=secret", "one of source, target required"),
        ("type=secret,id=a,source=b", "both source and id can't be set"),
        ("type=secret,id=a,from=x", "secret mount should not have a from"),
        ("type=bind,target=/x,env=A", "unexpected key 'env'"),
        ('type=bind,target="/x', "failed to parse csv mounts"),
    ],
)
def test_parse_mount_errors(text: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=None) as info:
        parse_mount(text)
    assert message in info.value.message


def test_values_are_expanded_and_csv_quoting_is_honoured() -> None:
    env = {"CACHE": "pip", "DIR": "/root/.cache"}
    mount = parse_mount('type=cache,id=$CACHE,"target=${DIR}/pip"', expand=lambda w: w.replace("$CACHE", env["CACHE"])
                        .replace("${DIR}", env["DIR"]))
    assert (mount.id, mount.target) == ("pip", "/root/.cache/pip")


def test_two_mounts_on_one_target_are_an_error() -> None:
    with pytest.raises(DockerfileError, match="duplicate mount target /x"):
        parse_mounts(("type=cache,target=/x", "type=tmpfs,target=/x"))
    assert len(parse_mounts(("type=secret,id=a,env=A", "type=secret,id=b,env=B"))) == 2


def test_key_inputs_hold_the_spec_only() -> None:
    secret = parse_mount("type=secret,id=tok,env=T")
    assert secret.key_inputs() == {"type": "secret", "target": "", "readonly": True, "id": "tok", "env": "T",
                                   "required": False}
    cache = parse_mount("type=cache,target=/c")
    assert cache.key_inputs() == {"type": "cache", "target": "/c", "readonly": False, "id": "/c",
                                  "sharing": "shared"}
    assert parse_mount("type=cache,target=/c,sharing=locked").key_inputs() != cache.key_inputs()
    assert parse_mount("type=tmpfs,target=/t,size=1k").key_inputs()["size"] == 1024


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("id=tok,src=/run/tok", {}, ("tok", SecretSource(path=Path("/run/tok")))),
        ("id=tok,source=f", {}, ("tok", SecretSource(path=Path("f")))),
        ("id=tok,env=TOKEN", {}, ("tok", SecretSource(env="TOKEN"))),
        ("id=tok,type=env,src=TOKEN", {}, ("tok", SecretSource(env="TOKEN"))),
        ("id=tok,type=env", {}, ("tok", SecretSource(env="tok"))),
        ("id=TOKEN", {"TOKEN": "x"}, ("TOKEN", SecretSource(env="TOKEN"))),
        ("id=TOKEN", {}, ("TOKEN", SecretSource(path=Path("TOKEN")))),
        ("id=TOKEN,type=file", {"TOKEN": "x"}, ("TOKEN", SecretSource(path=Path("TOKEN")))),
    ],
)
def test_secret_flag_forms(text: str, environ: dict[str, str], expected: tuple[str, SecretSource]) -> None:
    assert parse_secret_flag(text, environ) == expected


@pytest.mark.parametrize("text", ["src=/x", "id=a,bogus=1", "id=a,type=ssh", "id=a,src"])
def test_secret_flag_errors(text: str) -> None:
    with pytest.raises(BuildError):
        parse_secret_flag(text, {})


def test_secret_source_reads_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "s").write_bytes(b"value\n")
    assert SecretSource(path=tmp_path / "s").read() == b"value\n"
    monkeypatch.setenv("LAMINA_TEST_SECRET", "from-env")
    assert SecretSource(env="LAMINA_TEST_SECRET").read() == b"from-env"
    with pytest.raises(BuildError, match="is not set"):
        SecretSource(env="LAMINA_TEST_NO_SUCH_VARIABLE").read()
    with pytest.raises(BuildError, match="reading secret file"):
        SecretSource(path=tmp_path / "missing").read()


def test_redactor_hides_secrets_cut_across_chunks() -> None:
    out: list[bytes] = []
    redactor = Redactor(out.append, (b"hunter22\n", b"abc"))
    for chunk in (b"pass=hun", b"ter22 and ", b"abc stays\n", b"end hunte"):
        redactor.feed(chunk)
    redactor.flush()
    assert b"".join(out) == b"pass=**** and abc stays\nend hunte"
