"""`cds-service serve` as a newcomer starts it: the discovery URLs to register, several public
base URLs accepted as JWT `aud` (localhost and 127.0.0.1), a refused `aud` explained in the log,
each start-up warning once, no Alembic chatter, a taken port in one line, and the environment
in `serve --help`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cds_service.cli import SERVE_ENVIRONMENT, main
from cds_service.config import ConfigError, Settings

from .builders import hook_request, null_prefetch
from .jwt_helpers import SERVICE, signer
from .server_process import ServerProcess, free_port

PATH = f"/cds-services/{SERVICE}"
LOCAL = "http://localhost:8080"
LOOPBACK = "http://127.0.0.1:8080"


def test_public_base_url_may_list_several():
    settings = Settings.from_env({"CDS_PUBLIC_BASE_URL": f"{LOCAL}/, {LOOPBACK}"})
    assert settings.public_base_url == LOCAL  # the first one builds links
    assert settings.public_base_urls == (LOCAL, LOOPBACK)
    with pytest.raises(ConfigError, match="comma-separated"):
        Settings.from_env({"CDS_PUBLIC_BASE_URL": f"{LOCAL},127.0.0.1:8080"})


@pytest.fixture
def two_bases_client(make_app, auth_settings):
    settings = auth_settings.with_overrides(public_base_url=LOCAL, alternate_base_urls=(LOOPBACK,))
    return make_app(settings).test_client()


def _call(client, token):
    return client.post(
        PATH,
        json=hook_request(prefetch=null_prefetch()),
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.mark.parametrize("base", [LOCAL, LOOPBACK])
def test_each_public_base_url_is_an_accepted_aud(two_bases_client, base):
    assert _call(two_bases_client, signer().sign(aud=f"{base}{PATH}")).status_code == 200


def test_a_refused_aud_is_logged_with_the_expected_ones(two_bases_client, caplog):
    token = signer().sign(aud=f"http://elsewhere:8080{PATH}")
    assert _call(two_bases_client, token).status_code == 401
    (record,) = [
        r
        for r in caplog.records
        if r.getMessage() == "refused a call" and getattr(r, "auth_rejection", None) == "aud_mismatch"
    ]
    assert record.aud_received == [f"http://elsewhere:8080{PATH}"]
    assert record.aud_expected == [f"{LOCAL}{PATH}", f"{LOOPBACK}{PATH}"]
    assert token not in caplog.text and token.split(".")[2] not in caplog.text


def test_serve_help_lists_the_environment():
    result = CliRunner().invoke(main, ["serve", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    for name, _text in SERVE_ENVIRONMENT:
        for part in filter(None, name.split(", ")):
            assert part in result.output
    for must in ("DATABASE_URL", "CDS_TRUSTED_ISSUERS_FILE", "CDS_PUBLIC_BASE_URL", "REDIS_URL"):
        assert must in result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80


@pytest.mark.slow
def test_serve_announces_discovery_and_warns_once(tmp_path):
    """Two workers, no trusted issuers: the 401 warning once; the URLs to register; no
    Alembic plugin chatter."""
    port = free_port()
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 's.sqlite3'}",
        "CDS_PUBLIC_BASE_URL": f"http://localhost:{port},http://127.0.0.1:{port}",
        "CDS_AUTH_DISABLED": "",
        "CDS_TRUSTED_ISSUERS_FILE": "",
    }
    with ServerProcess(env=env, workers=2, port=port) as server:
        pass
    out = server.output
    assert server.returncode == 0, out[-3000:]
    assert out.count("every service and feedback call will be refused with 401") == 1, out
    assert f"CDS Hooks discovery: http://localhost:{port}/cds-services" in out
    assert f"CDS Hooks discovery: http://127.0.0.1:{port}/cds-services" in out
    assert "setup plugin" not in out and "Context impl" not in out
    warnings = [
        json.loads(line)["message"]
        for line in out.splitlines()
        if line.startswith("{") and json.loads(line)["level"] == "warning"
    ]
    assert len(warnings) == len(set(warnings)), warnings


def test_serve_on_a_taken_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run(
            [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(port)],
            env={"DATABASE_URL": f"sqlite:///{tmp_path / 's.sqlite3'}", "CDS_AUTH_DISABLED": "1",
                 "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert run.returncode == 1
    assert f"Error: cannot listen on 127.0.0.1:{port}: the address is already in use" in run.stderr
    assert "Traceback" not in run.stderr and "Connection in use" not in run.stderr
