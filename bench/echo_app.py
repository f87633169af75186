"""The framework floor: a bare Flask app that parses the posted JSON and sends it back.

Served by the same gunicorn setup as the service (`gunicorn bench.echo_app:app`, gthread,
2 workers), it measures what Flask + gunicorn + JSON cost before any CDS work.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/cds-services/<service_id>")
def echo(service_id: str):
    return jsonify(request.get_json())


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
