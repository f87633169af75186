"""The framework floor: a bare Flask app that parses the posted JSON and answers a small card list.

Served by the same gunicorn setup as the service (`gunicorn bench.echo_app:app`, gthread,
2 workers, the service's worker class), it measures what Flask + gunicorn + JSON cost before
any CDS work. It does not echo the body (the service does not either): it reads one field of
the parsed request and answers a small JSON card list of about the service's answer size.
"""

from __future__ import annotations

import uuid

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/cds-services/<service_id>")
def echo(service_id: str):
    parsed = request.get_json()
    hook = parsed.get("hook", "") if isinstance(parsed, dict) else ""
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": f"{service_id}: floor answer for {hook}",
        "indicator": "info",
        "source": {"label": "floor"},
    }
    return jsonify({"cards": [card]})


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
