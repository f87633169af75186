"""vitd-cds: a CDS Hooks 2.0 service for vitamin D, calcium and vitamin K / VKA safety.

`create_app()` is the application factory (gunicorn: `cds_service:create_app()`).
"""

from __future__ import annotations

from flask import Flask

from .config import Settings

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app from `settings` (default: the environment), with its store and FHIR client."""
    from . import api, engine, history
    from .cards import check_templates
    from .fhir_client import FhirClient
    from .gather import GatherSettings
    from .guideline import TOPICS, load_guideline
    from .history.links import history_link
    from .store import Store

    settings = settings or Settings.from_env()
    guideline = load_guideline(settings.guideline_profile)  # a bad profile stops the start
    check_templates(TOPICS)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]

    store = Store(settings.database_url)
    if settings.migrate_on_start:
        store.migrate()
    gather_settings = GatherSettings(
        budget_s=settings.fhir_budget_s,
        connect_timeout_s=settings.fhir_connect_timeout_s,
        max_pages=settings.fhir_max_pages,
        max_response_bytes=settings.fhir_max_response_bytes,
        max_workers=settings.fhir_max_workers,
    )
    runtime = engine.Runtime(
        store=store,
        fhir=FhirClient(max_workers=settings.fhir_max_workers),
        gather_settings=gather_settings,
        guideline=guideline,
        history_link=history_link(settings),
    )
    app.extensions["vitd.settings"] = settings
    app.extensions["vitd.runtime"] = runtime
    api.register(app)
    history.register(app, settings, runtime)
    return app
