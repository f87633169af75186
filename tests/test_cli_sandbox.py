"""`cds-service` for people trying the service: invoke --patient/--draft/--no-prefetch,
fixtures list/serve/readme, check."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner

from cds_service import fixtures
from cds_service.cli import main


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.delenv("CDS_AUTH_DISABLED", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path


def _topics(output: str) -> list[str]:
    return [c["source"]["topic"]["code"] for c in json.loads(output)["cards"]]


@pytest.mark.parametrize(
    "args",
    [
        ["fixtures", "--help"],
        ["fixtures", "list", "--help"],
        ["fixtures", "serve", "--help"],
        ["fixtures", "readme", "--help"],
        ["check", "--help"],
    ],
)
def test_help_everywhere(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "Usage:" in result.output


def test_invoke_patient_prints_cards_readably(cli_env):
    result = CliRunner().invoke(
        main, ["invoke", "vitamin-d-patient-view", "--patient", "adult-deficient"]
    )
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.output
    assert "Vitamin D deficiency" in result.output
    assert "topic: vitd-deficiency" in result.output
    assert "suggestion:" in result.output and "create MedicationRequest" in result.output
    assert "override reasons:" in result.output


def test_invoke_patient_json(cli_env):
    result = CliRunner().invoke(
        main, ["invoke", "vitamin-d-order-sign", "--patient", "uspstf-woman", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert _topics(result.output) == ["uspstf-primary-prevention"]


def test_invoke_no_prefetch_uses_the_fixture_fhir_server(cli_env):
    args = ["invoke", "vitamin-d-patient-view", "--patient", "ckd-no-level", "--json"]
    with_prefetch = CliRunner().invoke(main, args)
    without = CliRunner().invoke(main, [*args, "--no-prefetch"])
    assert without.exit_code == 0, without.output
    assert _topics(without.output) == _topics(with_prefetch.output) == ["vitd-no-recent-level"]


def test_invoke_draft_replaces_the_patients_drafts(cli_env, tmp_path):
    # uspstf-woman drafts 400 IU daily (USPSTF Grade D); 1,000 IU daily is not such a dose.
    order = json.loads(json.dumps(fixtures.load("adult-sufficient").drafts[0]))
    draft = tmp_path / "order.json"
    draft.write_text(json.dumps(order))
    base = ["invoke", "vitamin-d-order-sign", "--patient", "uspstf-woman", "--json"]
    assert _topics(CliRunner().invoke(main, base).output) == ["uspstf-primary-prevention"]
    result = CliRunner().invoke(main, [*base, "--draft", str(draft)])
    assert result.exit_code == 0, result.output
    assert _topics(result.output) == []


def test_invoke_draft_must_be_a_resource(cli_env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = CliRunner().invoke(
        main,
        ["invoke", "vitamin-d-order-sign", "--patient", "uspstf-woman", "--draft", str(bad)],
    )
    assert result.exit_code == 2 and "expected a FHIR resource" in result.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["invoke", "vitamin-d-patient-view"], "either REQUEST_FILE or --patient"),
        (
            ["invoke", "vitamin-d-patient-view", "fixtures/requests/patient-view-null-prefetch.json",
             "--patient", "adult-deficient"],
            "either REQUEST_FILE or --patient",
        ),
        (["invoke", "vitamin-d-patient-view", "--patient", "nobody"], "no fixture named"),
        (["invoke", "nope", "--patient", "adult-deficient"], "unknown service"),
        (
            ["invoke", "vitamin-d-patient-view", "fixtures/requests/patient-view-null-prefetch.json",
             "--no-prefetch"],
            "go with --patient",
        ),
    ],
)
def test_invoke_usage_errors(cli_env, args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and message in result.output


def test_fixtures_list(cli_env):
    result = CliRunner().invoke(main, ["fixtures", "list", "--json"])
    assert result.exit_code == 0
    listed = json.loads(result.output)
    assert [p["name"] for p in listed] == fixtures.names()
    by_name = {p["name"]: p for p in listed}
    assert by_name["warfarin-d3k2-draft"]["drafts"] == [
        "Cholecalciferol 1000 UNT / Vitamin K 2 0.09 MG Disintegrating Oral Tablet (RxNorm 804617)"
    ]
    table = CliRunner().invoke(main, ["fixtures", "list"])
    assert table.exit_code == 0 and "warfarin-d3k2-draft" in table.output


def test_fixtures_readme_prints_the_generated_readme(cli_env):
    result = CliRunner().invoke(main, ["fixtures", "readme"])
    assert result.exit_code == 0 and result.output == fixtures.readme()


def test_check_one_patient_all_green(cli_env):
    result = CliRunner().invoke(main, ["check", "--patient", "osteoporosis-stale-level"])
    assert result.exit_code == 0, result.output
    assert "osteoporosis-stale-level" in result.output and "✓" in result.output
    assert "as expected" in result.output


def test_check_no_prefetch(cli_env):
    result = CliRunner().invoke(
        main, ["check", "--patient", "ckd-dihydroxy-only", "--no-prefetch"]
    )
    assert result.exit_code == 0, result.output


def test_check_exits_1_on_a_mismatch(cli_env, monkeypatch):
    real = fixtures.expectations()
    wrong = json.loads(json.dumps(real))
    wrong["healthy-no-level"]["default"]["vitamin-d-patient-view"] = ["vitd-deficiency"]
    monkeypatch.setattr(fixtures, "expectations", lambda: wrong)
    result = CliRunner().invoke(main, ["check", "--patient", "healthy-no-level"])
    assert result.exit_code == 1
    assert "MISMATCH healthy-no-level vitamin-d-patient-view (default)" in result.output
    assert "✗" in result.output


def test_check_unknown_patient(cli_env):
    result = CliRunner().invoke(main, ["check", "--patient", "nobody"])
    assert result.exit_code == 2 and "no fixture named nobody" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fixtures_serve_answers_fhir_reads():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cds_service.cli", "fixtures", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = requests.get(f"http://127.0.0.1:{port}/Patient/teen-no-level", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("fixture FHIR server did not start")
                time.sleep(0.1)
        assert reply.status_code == 200 and reply.json()["id"] == "teen-no-level"
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}" in output


def test_check_is_all_green_on_the_whole_library(cli_env):
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output[-3000:]
    assert "profile default" in result.output and "profile es2024" in result.output
    assert "✗" not in result.output and "as expected" in result.output


def test_invoke_patient_against_a_running_service_without_prefetch(make_app, settings):
    from .live_server import LiveServer

    with LiveServer() as live:
        live.serve(make_app(settings))
        result = CliRunner().invoke(
            main,
            ["invoke", "vitamin-d-order-sign", "--patient", "warfarin-d3k2-draft",
             "--url", live.url, "--no-prefetch", "--json"],
        )
    assert result.exit_code == 0, result.output
    assert _topics(result.output) == ["vka-vitamin-k-interaction"]


def test_in_process_calls_do_not_warn_about_auth(cli_env, caplog):
    """No network caller in-process: the 'authentication is disabled' warning would mislead."""
    caplog.set_level("WARNING")
    result = CliRunner().invoke(main, ["invoke", "vitamin-d-patient-view", "--patient", "adult-insufficient"])
    assert result.exit_code == 0
    assert not [r for r in caplog.records if "AUTHENTICATION IS DISABLED" in r.getMessage()]
    assert "AUTHENTICATION IS DISABLED" not in result.output
