"""`cds-service`: help, invoke (in-process and against a URL), serve checks, real serving."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from werkzeug.serving import make_server

from cds_service.cli import main

from .builders import hook_request, null_prefetch
from .server_process import ServerProcess

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "fixtures" / "requests" / "patient-view-null-prefetch.json"


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.sqlite3'}")
    monkeypatch.delenv("CDS_AUTH_DISABLED", raising=False)
    return tmp_path


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["invoke", "--help"]])
def test_help_everywhere(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0 and "Usage:" in result.output


def test_invoke_in_process_prints_cards(cli_env):
    result = CliRunner().invoke(main, ["invoke", "vitamin-d-patient-view", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "No cards." in result.output


def test_invoke_json(cli_env):
    result = CliRunner().invoke(main, ["invoke", "vitamin-d-patient-view", str(EXAMPLE), "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == {"cards": []}


def test_invoke_reports_http_errors(cli_env, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(hook_request("vitamin-d-order-sign", prefetch=null_prefetch())))
    result = CliRunner().invoke(main, ["invoke", "vitamin-d-patient-view", str(bad)])
    assert result.exit_code == 1
    assert "HTTP 400" in result.output and "hook does not match" in result.output


def test_invoke_against_a_url(app, tmp_path):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        result = CliRunner().invoke(
            main, ["invoke", "vitamin-d-patient-view", str(EXAMPLE), "--url", url]
        )
        assert result.exit_code == 0, result.output
        assert "No cards." in result.output
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_invoke_unreachable_url(cli_env):
    result = CliRunner().invoke(
        main, ["invoke", "vitamin-d-patient-view", str(EXAMPLE), "--url", "http://127.0.0.1:1"]
    )
    assert result.exit_code != 0 and "could not reach" in result.output


def test_serve_refuses_public_bind_without_auth(cli_env, monkeypatch):
    monkeypatch.setenv("CDS_AUTH_DISABLED", "1")
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code != 0
    assert "refusing to serve 0.0.0.0 without authentication" in str(
        result.exception or result.output
    )


def test_serve_rejects_bad_configuration(cli_env, monkeypatch):
    monkeypatch.setenv("CDS_FHIR_BUDGET_S", "soon")
    result = CliRunner().invoke(main, ["serve", "--port", "1"])
    assert result.exit_code != 0 and "CDS_FHIR_BUDGET_S" in result.output


def test_serve_runs_gunicorn_workers_and_answers(tmp_path):
    env = {"CDS_AUTH_DISABLED": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 's.sqlite3'}"}
    with ServerProcess(env=env, workers=2) as server:
        base = server.base_url
        reply = requests.get(f"{base}/cds-services", timeout=5)
        assert len(reply.json()["services"]) == 3
        call = requests.post(
            f"{base}/cds-services/vitamin-d-patient-view",
            json=json.loads(EXAMPLE.read_text()),
            timeout=5,
        )
        assert call.status_code == 200 and call.json() == {"cards": []}
        assert requests.get(f"{base}/readyz", timeout=2).status_code == 200
        assert len(server.worker_pids()) == 2
    assert "AUTHENTICATION IS DISABLED" in server.output
    assert server.returncode == 0, server.output
