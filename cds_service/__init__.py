"""vitd-cds: a CDS Hooks 2.0 service for vitamin D, calcium and vitamin K / VKA safety.

`create_app()` is the application factory (gunicorn: `cds_service:create_app()`).
"""

from __future__ import annotations

from flask import Flask

from .config import Settings

__all__ = ["Settings", "create_app"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app from `settings` (default: the environment), with its store and FHIR client."""
    from . import api, engine, history, metrics
    from .auth import Authenticator, RedisReplayStore
    from .body_drain import DrainRequestBody
    from .cards import check_templates
    from .fhir_client import FhirClient
    from .gather import GatherSettings
    from .guideline import TOPICS, load_guideline
    from .history.links import history_link
    from .ssrf import UrlPolicy
    from .store import Store
    from .validation import OrjsonProvider

    settings = settings or Settings.from_env()
    guideline = load_guideline(settings.guideline_profile)  # a bad profile stops the start
    check_templates(TOPICS)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Unread body discarded before any answer goes out (no lost keep-alive call); a body
    # up to twice the limit is discarded, past that the connection closes after the answer.
    app.wsgi_app = DrainRequestBody(app.wsgi_app, cap=2 * settings.max_body_bytes)
    app.json = OrjsonProvider(app)

    store = Store(settings.database_url)
    if settings.migrate_on_start:
        store.migrate()
    if settings.record_cards_in_background:
        store.record_in_background()
    gather_settings = GatherSettings(
        budget_s=settings.fhir_budget_s,
        connect_timeout_s=settings.fhir_connect_timeout_s,
        max_pages=settings.fhir_max_pages,
        max_response_bytes=settings.fhir_max_response_bytes,
        max_workers=settings.fhir_max_workers,
        max_json_depth=settings.max_json_depth,
    )
    app_metrics = metrics.Metrics(settings.metrics_multiproc_dir)
    runtime = engine.Runtime(
        store=store,
        fhir=FhirClient(
            max_workers=settings.fhir_max_workers,
            policy=UrlPolicy(allowlist=settings.fhir_allowlist),
            observe=app_metrics.observe_fhir,
        ),
        gather_settings=gather_settings,
        guideline=guideline,
        history_link=history_link(settings),
    )
    replay = RedisReplayStore(settings.redis_url) if settings.redis_url else store
    app.extensions["vitd.auth"] = Authenticator(settings, replay)
    app.extensions["vitd.settings"] = settings
    app.extensions["vitd.runtime"] = runtime
    api.register(app)
    history.register(app, settings, runtime)
    metrics.install(app, app_metrics)
    from . import preview

    preview.register(app, settings)
    return app
