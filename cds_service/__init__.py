"""vitd-cds: a CDS Hooks 2.0 service for vitamin D, calcium and vitamin K / VKA safety.

`create_app()` is the application factory (gunicorn: `cds_service:create_app()`).
"""

from __future__ import annotations

import os

from flask import Flask

from .config import Settings

__all__ = ["Settings", "create_app"]

# A blank PROMETHEUS_MULTIPROC_DIR means "not set" (config.py). prometheus-client, imported
# later, reads the variable's mere presence as multiprocess mode and would write its .db files
# into whatever directory the command runs in (`cds-service invoke` did).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR", "unset").strip():
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]

READINESS_WAIT_S = 0.8  # the background database check's own wait (readiness.py)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app from `settings` (default: the environment), with its store and FHIR client."""
    from . import analytics, api, engine, history, home, metrics
    from .auth import Authenticator, RedisReplayStore
    from .body_drain import DrainRequestBody
    from .cards import check_templates
    from .clients import load_clients
    from .fhir_client import FhirClient
    from .gather import GatherSettings
    from .guideline import load_guideline
    from .history.links import history_link
    from .readiness import Readiness
    from .rules import TOPIC_IDS
    from .ssrf import UrlPolicy
    from .store import Store
    from .validation import OrjsonProvider

    settings = settings or Settings.from_env()
    guideline = load_guideline(settings.guideline_profile)  # a bad profile stops the start
    check_templates(TOPIC_IDS)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Unread body discarded before any answer goes out (no lost keep-alive call); a body
    # up to twice the limit is discarded, past that the connection closes after the answer.
    app.wsgi_app = DrainRequestBody(app.wsgi_app, cap=2 * settings.max_body_bytes)
    app.json = OrjsonProvider(app)

    clients = load_clients(settings.clients_file, settings.guideline_profile)  # a bad file too
    guidelines = {name: load_guideline(name) for name in sorted(clients.profiles)}
    store = Store(settings.database_url, settings.store_limits)
    if settings.migrate_on_start:
        store.migrate()
    app_metrics = metrics.Metrics(settings.metrics_multiproc_dir)
    if settings.record_cards_in_background:
        store.record_in_background(observe=app_metrics.observe_card_queue)
    gather_settings = GatherSettings(
        budget_s=settings.fhir_budget_s,
        connect_timeout_s=settings.fhir_connect_timeout_s,
        max_pages=settings.fhir_max_pages,
        max_response_bytes=settings.fhir_max_response_bytes,
        max_workers=settings.fhir_max_workers,
        max_json_depth=settings.max_json_depth,
    )
    runtime = engine.Runtime(
        store=store,
        fhir=FhirClient(
            max_workers=settings.fhir_max_workers,
            policy=UrlPolicy(allowlist=settings.fhir_allowlist),
            observe=app_metrics.observe_fhir,
            max_calls_per_host=settings.fhir_max_calls_per_host,
            max_gets_per_host=settings.fhir_max_gets_per_host,
            dns_timeout_s=settings.fhir_dns_timeout_s,
            max_held_bytes=settings.fhir_max_held_bytes,
        ),
        gather_settings=gather_settings,
        guideline=guideline,
        history_link=history_link(settings),
        clients=clients,
        guidelines=guidelines,
        snooze_days=settings.snooze_days,
    )
    checks = {"database": lambda: store.check(wait_s=READINESS_WAIT_S)}
    replay = store
    if settings.redis_url:
        replay = RedisReplayStore(
            settings.redis_url,
            timeout_s=settings.redis_timeout_s,
            max_connections=settings.threads + 2,
        )
        checks["replay store"] = replay.check
    app.extensions["vitd.auth"] = Authenticator(settings, replay)
    app.extensions["vitd.readiness"] = Readiness(checks)
    app.extensions["vitd.settings"] = settings
    app.extensions["vitd.runtime"] = runtime
    api.register(app)
    home.register(app)
    history.register(app, settings, runtime)
    metrics.install(app, app_metrics)
    analytics.register(app, settings, runtime)
    from . import preview

    preview.register(app, settings)
    return app
