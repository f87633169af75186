"""Several `cds-service serve` instances on one host (issue 15, item 5).

gunicorn 25 opens a control socket at one path per user ($XDG_RUNTIME_DIR/gunicorn.ctl, else
~/.gunicorn/gunicorn.ctl); two instances would share it and take over each other's. `serve`
opens none.
"""

from __future__ import annotations

import requests

from cds_service import cli
from cds_service.config import Settings

from .server_process import ServerProcess


def test_serve_opens_no_gunicorn_control_socket():
    assert cli.gunicorn_options(Settings(), reload=False)["control_socket_disable"] is True


def test_two_instances_side_by_side_share_no_control_socket(tmp_path):
    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir(), runtime.mkdir()
    common = {"CDS_AUTH_DISABLED": "1", "PROMETHEUS_MULTIPROC_DIR": "",
              "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    first = {**common, "DATABASE_URL": f"sqlite:///{tmp_path / 'a.sqlite3'}"}
    second = {**common, "DATABASE_URL": f"sqlite:///{tmp_path / 'b.sqlite3'}"}
    with ServerProcess(env=first, workers=1) as a, ServerProcess(env=second, workers=1) as b:
        sockets = sorted(str(p) for p in tmp_path.rglob("*.ctl"))
        answers = [requests.get(f"{s.base_url}/healthz", timeout=5).status_code for s in (a, b)]
    assert sockets == []
    assert answers == [200, 200]
    assert (a.returncode, b.returncode) == (0, 0), a.output + b.output
