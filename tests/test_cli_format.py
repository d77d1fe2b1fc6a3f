"""Docker's renderings of sizes, ages and tables (go-units HumanSizeWithPrecision(…, 3), HumanDuration)."""

from __future__ import annotations

import pytest

from lamina.cli import format as fmt

SIZES = [
    (0, "0B"),
    (1, "1B"),
    (999, "999B"),
    (1000, "1kB"),
    (1023, "1.02kB"),
    (1024, "1.02kB"),
    (12_345, "12.3kB"),
    (999_499, "999kB"),
    (999_999, "1e+03kB"),  # Go's %.3g, as docker prints it
    (1_000_000, "1MB"),
    (4_260_000, "4.26MB"),
    (12_345_678, "12.3MB"),
    (123_456_789, "123MB"),
    (1_500_000_000, "1.5GB"),
    (7_000_000_000_000, "7TB"),
    (1e15, "1PB"),
    (12.5, "12.5B"),
    (2e18, "2EB"),
]


@pytest.mark.parametrize(("size", "expected"), SIZES)
def test_human_size(size: float, expected: str) -> None:
    assert fmt.human_size(size) == expected


MIN, HOUR, DAY = 60, 3600, 86400

DURATIONS = [
    (0, "Less than a second"),
    (0.999, "Less than a second"),
    (1, "1 second"),
    (1.9, "1 second"),
    (2, "2 seconds"),
    (59, "59 seconds"),
    (60, "About a minute"),
    (119, "About a minute"),
    (120, "2 minutes"),
    (59 * MIN + 59, "59 minutes"),
    (HOUR, "About an hour"),
    (HOUR + 29 * MIN, "About an hour"),
    (HOUR + 30 * MIN, "2 hours"),  # hours are rounded half up
    (3 * HOUR + 30 * MIN, "4 hours"),
    (47 * HOUR, "47 hours"),
    (47 * HOUR + 30 * MIN, "2 days"),
    (13 * DAY, "13 days"),
    (14 * DAY, "2 weeks"),
    (59 * DAY, "8 weeks"),
    (60 * DAY, "2 months"),
    (729 * DAY, "24 months"),
    (730 * DAY, "2 years"),
    (3650 * DAY, "10 years"),
    (2 * HOUR + 30 * MIN, "3 hours"),
    (730 * DAY - 24 * MIN, "1 years"),
]


@pytest.mark.parametrize(("seconds", "expected"), DURATIONS)
def test_human_duration(seconds: float, expected: str) -> None:
    assert fmt.human_duration(seconds) == expected


TIMES = [
    (None, None),
    ("", None),
    ("garbage", None),
    ("1970-01-01T00:00:00Z", 0.0),
    ("2024-01-02T03:04:05Z", 1_704_164_645.0),
    ("2024-01-02T03:04:05.5Z", 1_704_164_645.5),
    ("2024-01-02T03:04:05.123456789Z", 1_704_164_645.123456789),
    ("2024-01-02T04:04:05+01:00", 1_704_164_645.0),
    ("2024-01-02T04:04:05.5+01:00", 1_704_164_645.5),
]


@pytest.mark.parametrize(("text", "expected"), TIMES)
def test_parse_time(text: str | None, expected: float | None) -> None:
    result = fmt.parse_time(text)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("created", "now", "expected"), [
    ("2024-01-02T03:04:05Z", 1_704_164_645 + 3 * HOUR, "3 hours ago"),
    ("2024-01-02T03:04:05Z", 1_704_164_645 - 100, "Less than a second ago"),  # clock skew
    (None, 0, "N/A"),
    ("not a time", 0, "N/A"),
])
def test_ago(monkeypatch: pytest.MonkeyPatch, created: str | None, now: float, expected: str) -> None:
    monkeypatch.setattr(fmt.time, "time", lambda: now)
    assert fmt.ago(created) == expected


def test_table() -> None:
    rows = [["REPOSITORY", "TAG", "SIZE"], ["busybox", "latest", "4.26MB"], ["a", "", "0B"]]
    assert fmt.table(rows) == ("REPOSITORY   TAG      SIZE\n"
                               "busybox      latest   4.26MB\n"
                               "a                     0B")


# -- --format templates (docker's Go template subset) ------------------------------------------------

DOC = {"Id": "sha256:ab", "RepoTags": ["a:1", "b:2"], "Size": 1234, "Empty": None, "Flag": True,
       "Config": {"Env": ["PATH=/bin", "A=<&>"], "Labels": {"z": "1", "a": "2"}, "Cmd": ["sh"]}}

TEMPLATES = [
    ("{{.Id}}", "sha256:ab"),
    ("{{ .Id }}:{{.Size}}", "sha256:ab:1234"),
    ("{{.Config.Env}}", "[PATH=/bin A=<&>]"),
    ("{{.Config.Labels}}", "map[a:2 z:1]"),  # Go prints maps sorted by key
    ("{{json .Config.Env}}", '["PATH=/bin","A=\\u003c\\u0026\\u003e"]'),  # compact, HTML-escaped like Go
    ("{{json .Config.Labels}}", '{"z":"1","a":"2"}'),
    ("{{.Config.Env | json}}", '["PATH=/bin","A=\\u003c\\u0026\\u003e"]'),
    ('{{join .RepoTags ", "}}', "a:1, b:2"),
    ('{{index .Config.Labels "a"}}', "2"),
    ('{{index .Config.Labels "nope"}}', "<no value>"),
    ("{{index .RepoTags 1}}", "b:2"),
    ("{{len .RepoTags}}", "2"),
    ("{{upper .Id}} {{lower `X`}}", "SHA256:AB x"),
    ("{{.Empty}} {{.Flag}}", "<nil> true"),
    ("{{json .Size}}", "1234"),
    ("no actions", "no actions"),
    ("{{- .Id -}}", "sha256:ab"),
]


@pytest.mark.parametrize(("template", "expected"), TEMPLATES)
def test_render(template: str, expected: str) -> None:
    assert fmt.render(template, DOC) == expected


@pytest.mark.parametrize(("template", "message"), [
    ("{{.Nope}}", "can't evaluate field Nope"),
    ("{{.Config.Nope}}", "can't evaluate field Nope"),
    ("{{frobnicate .Id}}", 'function "frobnicate" not defined'),
    ("{{.Id", "unclosed action"),
    ("{{}}", "missing command"),
    ("{{join .Id}}", "join"),
])
def test_render_errors(template: str, message: str) -> None:
    with pytest.raises(fmt.TemplateError, match=message):
        fmt.render(template, DOC)


def test_json_of_everything_is_compact() -> None:
    assert fmt.render("{{json .}}", {"B": "<none>", "A": 1}) == '{"B":"\\u003cnone\\u003e","A":1}'


def test_table_templates_and_headers() -> None:
    assert fmt.split_table("table {{.Repository}}\\t{{.Tag}}") == (True, "{{.Repository}}\t{{.Tag}}")
    assert fmt.split_table("{{.ID}}\\n") == (False, "{{.ID}}\n")
    assert fmt.split_table("table") == (True, "")
    titles = {"Repository": "REPOSITORY", "ID": "IMAGE ID"}
    assert fmt.header("{{.Repository}}\t{{.ID}}\t{{json .Size}}", titles) == "REPOSITORY\tIMAGE ID\tSIZE"
