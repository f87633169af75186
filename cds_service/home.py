"""`GET /`: a small page listing the endpoints, so a browser pointed at the service finds its
way (discovery, the services, the API description, health, and /preview when it is on)."""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, url_for
from markupsafe import Markup, escape

from .config import Settings
from .registry import SERVICES

bp = Blueprint("home", __name__)

HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


def _row(method: str, path: str, text: str, link: bool = True) -> Markup:
    target = Markup('<a href="{0}">{0}</a>').format(path) if link else escape(path)
    return Markup("<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>").format(
        method, target, text
    )


@bp.get("/")
def home() -> Response:
    settings: Settings = current_app.extensions["vitd.settings"]
    rows = [_row("GET", url_for("cds.discovery"), "CDS Hooks discovery: register this URL")]
    rows += [
        _row(
            "POST",
            url_for("cds.call_service", service_id=spec.id),
            f"{spec.hook}: {spec.title}",
            link=False,
        )
        for spec in SERVICES.values()
    ]
    rows.append(
        _row("POST", url_for("cds.discovery") + "/{id}/feedback", "card feedback", link=False)
    )
    if settings.preview_enabled:
        rows.append(_row("GET", url_for("preview.page"), "card preview on synthetic patients"))
    if settings.smart_enabled:
        rows.append(_row("GET", "/launch", "SMART launch of the vitamin D history", link=False))
    rows += [
        _row("GET", url_for("cds.openapi_document"), "OpenAPI description"),
        _row("GET", url_for("cds.healthz"), "liveness"),
        _row("GET", url_for("cds.readyz"), "readiness (store reachable)"),
        _row("GET", "/metrics", "Prometheus metrics"),
    ]
    auth = (
        "Authentication is OFF (development)."
        if settings.auth_disabled
        else "Service and feedback calls need a JWT (CDS Hooks 2.0) from a trusted issuer."
    )
    page = Markup(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        "<title>vitd-cds</title><style>body{{font:15px/1.45 system-ui,sans-serif;margin:1.5rem;"
        "max-width:60rem}}td{{padding:.2rem .8rem .2rem 0;vertical-align:top}}"
        "code{{overflow-wrap:anywhere}}</style></head><body><h1>vitd-cds</h1>"
        "<p>CDS Hooks 2.0 service: vitamin D, calcium, vitamin K and vitamin K antagonists. "
        "{}</p><table>{}</table></body></html>"
    ).format(auth, Markup("").join(rows))
    return Response(page, mimetype="text/html", headers=HEADERS)


def register(app: Flask) -> None:
    app.register_blueprint(bp)
