"""`cds-service` as a newcomer meets it in a terminal 80 columns wide: the cards in full,
`check` on one line per patient, --version, --url in the forms people type, --token,
--profile, and errors on one line."""

from __future__ import annotations

import json
import re
import threading

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from cds_service import fixtures, guideline
from cds_service.cli import main, service_base

BOX = "│╭╮╰╯─"


@pytest.fixture
def cli80(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.delenv("CDS_AUTH_DISABLED", raising=False)
    monkeypatch.delenv("CDS_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    return tmp_path


def _widest(output: str) -> int:
    return max(len(line.rstrip()) for line in output.splitlines())


def _flat(output: str) -> str:
    """The words of the output, box lines and wrapping removed."""
    return " ".join(re.sub(f"[{BOX}]", " ", output).split())


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output


def test_invoke_help_lists_the_service_ids():
    result = CliRunner().invoke(main, ["invoke", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    for service in fixtures.SERVICE_IDS:
        assert service in result.output
    assert _widest(result.output) <= 80


@pytest.mark.parametrize("extra", [["--patient", "adult-deficient"], ["fixtures/requests/patient-view-null-prefetch.json"]])
def test_an_unknown_service_lists_the_valid_ids(cli80, extra):
    result = CliRunner().invoke(main, ["invoke", "vitamin-d-patient", *extra])
    assert result.exit_code == 2
    assert "unknown service 'vitamin-d-patient'" in result.output
    assert all(s in result.output for s in fixtures.SERVICE_IDS)


def test_invoke_prints_the_full_summary_and_the_rendered_detail_at_80_columns(cli80):
    raw = CliRunner().invoke(
        main, ["invoke", "vitamin-d-order-sign", "--patient", "warfarin-d3k2-draft", "--json"]
    )
    (card,) = [c for c in json.loads(raw.output)["cards"] if c["source"]["topic"]["code"] == "vka-vitamin-k-interaction"]
    result = CliRunner().invoke(
        main, ["invoke", "vitamin-d-order-sign", "--patient", "warfarin-d3k2-draft"]
    )
    assert result.exit_code == 0, result.output
    assert _widest(result.output) <= 80
    flat = _flat(result.output)
    assert " ".join(card["summary"].split()) in flat  # not cut at the panel's edge
    assert "**" not in result.output and "•" in result.output  # markdown rendered
    # every sentence of the detail is there, markup aside
    for line in card["detail"].splitlines():
        words = re.sub(r"[*_`#]|^\s*[-*] ", "", line).split()
        if words:
            assert " ".join(words) in flat, line


def test_check_reads_at_80_columns_one_line_per_patient(cli80):
    patients = ["warfarin-d3k2-draft", "hypercalcemia-calcium-normal-d3-draft", "adult-deficient"]
    args = ["check", "--profile", "default"]
    for p in patients:
        args += ["--patient", p]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert _widest(result.output) <= 80
    rows = [line for line in result.output.splitlines() if line.startswith(("✓", "✗"))]
    assert [row.split()[1] for row in rows] == patients
    assert "vka-vitamin-k-interaction SG" in rows[0]
    assert "vitd-deficiency VSG" in rows[2]


@pytest.mark.parametrize(
    "typed",
    ["http://h:1", "http://h:1/", "http://h:1/cds-services", "http://h:1/cds-services/",
     "http://h:1/cds-services/vitamin-d-patient-view"],
)
def test_url_forms_people_type(typed):
    assert service_base(typed) == "http://h:1"
    assert service_base(typed.replace("h:1", "h:1/prefix")) == "http://h:1/prefix"


def test_url_without_scheme_says_what_to_type(cli80):
    result = CliRunner().invoke(
        main, ["invoke", "vitamin-d-patient-view", "--patient", "adult-deficient",
               "--url", "127.0.0.1:8080"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "no scheme: did you mean http://127.0.0.1:8080 ?" in result.output


class _Recorder:
    """A stand-in service that records what reaches it."""

    def __init__(self):
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, environ, start_response):
        self.seen.append((environ["PATH_INFO"], environ.get("HTTP_AUTHORIZATION")))
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"cards": []}']


@pytest.fixture
def recorder():
    app = _Recorder()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_url_with_cds_services_and_a_token(cli80, recorder):
    app, base = recorder
    result = CliRunner().invoke(
        main, ["invoke", "vitamin-d-patient-view", "--patient", "adult-deficient",
               "--url", f"{base}/cds-services/", "--token", "abc.def.ghi"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert app.seen == [("/cds-services/vitamin-d-patient-view", "Bearer abc.def.ghi")]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--token", "t"], "--token goes with --url"),
        (["--url", "http://127.0.0.1:1", "--profile", "es2024"], "--profile is for in-process calls"),
    ],
)
def test_token_and_profile_go_where_they_apply(cli80, extra, message):
    result = CliRunner().invoke(
        main, ["invoke", "vitamin-d-patient-view", "--patient", "adult-deficient", *extra]
    )
    assert result.exit_code == 2 and message in result.output


def test_invoke_profile_in_process(cli80):
    """A patient whose patient-view cards differ between the profiles (per expected.json)
    gets each profile's own cards."""
    pv = "vitamin-d-patient-view"
    expected = fixtures.expectations()
    name = next(
        n
        for n, e in sorted(expected.items())
        if "es2024" in e and sorted(e["default"][pv]) != sorted(e["es2024"][pv])
    )

    def topics(profile):
        result = CliRunner().invoke(
            main, ["invoke", pv, "--patient", name, "--json", "--profile", profile]
        )
        assert result.exit_code == 0, result.output
        return sorted(c["source"]["topic"]["code"] for c in json.loads(result.output)["cards"])

    assert topics("default") == sorted(expected[name]["default"][pv])
    assert topics("es2024") == sorted(expected[name]["es2024"][pv])


def test_history_profile(cli80, monkeypatch):
    asked = []
    real = guideline.load_guideline
    monkeypatch.setattr(guideline, "load_guideline", lambda name: asked.append(name) or real(name))
    out = cli80 / "h.svg"
    result = CliRunner().invoke(
        main, ["history", "--patient", "adult-deficient", "--out", str(out), "--profile", "es2024"]
    )
    assert result.exit_code == 0, result.output
    assert asked == ["es2024"] and "<svg" in out.read_text()


@pytest.mark.parametrize(
    "out,message",
    [
        ("missing/dir/h.svg", "the folder"),
        ("h.png", "cannot write .png; give .svg or .html"),
        ("h", "cannot write a file without extension"),
    ],
)
def test_history_out_errors_are_one_line(cli80, out, message):
    result = CliRunner().invoke(
        main, ["history", "--patient", "adult-deficient", "--out", str(cli80 / out)]
    )
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    assert message in result.output
    assert not (cli80 / out).exists()


def test_fixtures_list_reads_at_80_columns(cli80):
    result = CliRunner().invoke(main, ["fixtures", "list"])
    assert result.exit_code == 0
    assert _widest(result.output) <= 80
    starts = [line for line in result.output.splitlines() if line and not line.startswith(" ")]
    assert starts[1:] == fixtures.names()  # one block per patient, its name first
    assert "draft: Cholecalciferol 1000 UNT / Vitamin K 2" in _flat(result.output)
