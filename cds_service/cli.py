"""`cds-service`: serve the service, or run one hook request and print the cards."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from . import logs
from .config import ConfigError, Settings
from .logs import configure_logging


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """vitd-cds: CDS Hooks 2.0 service for vitamin D, calcium and vitamin K safety."""


@main.command()
@click.option("--host", help="Address to listen on.  [default: $HOST or 127.0.0.1]")
@click.option("--port", type=int, help="Port.  [default: $PORT or 8080]")
@click.option("--workers", type=int, help="Worker processes.  [default: $WEB_CONCURRENCY or 2]")
@click.option("--threads", type=int, help="Threads per worker.  [default: $WEB_THREADS or 4]")
@click.option("--reload", is_flag=True, help="Restart workers when the code changes (development).")
def serve(
    host: str | None, port: int | None, workers: int | None, threads: int | None, reload: bool
) -> None:
    """Serve under gunicorn (several workers), after migrating the store once.

    SIGTERM (or Ctrl-C) stops gracefully: no new connections, calls in flight are answered
    (up to $CDS_GRACEFUL_TIMEOUT_S), then the process exits 0.
    """
    settings = _settings()
    options = settings.with_overrides(
        host=host or settings.host,
        port=settings.port if port is None else port,
        workers=workers or settings.workers,
        threads=threads or settings.threads,
    )
    # prometheus-client picks its multiprocess mode when it is first imported, from the
    # environment: set it up before anything imports it, so the forked workers inherit it.
    metrics_dir, owned = _metrics_dir(settings.metrics_multiproc_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _run_gunicorn(options.with_overrides(metrics_multiproc_dir=metrics_dir), reload)
    finally:
        if owned:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)


def _metrics_dir(configured: str | None) -> tuple[str, bool]:
    """The multiprocess metrics directory, emptied of a previous run's files; owned if made here."""
    if not configured:
        return tempfile.mkdtemp(prefix="vitd-cds-metrics-"), True
    path = Path(configured)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return str(path), False


def gunicorn_options(settings: Settings, reload: bool) -> dict[str, Any]:
    """The gunicorn settings `serve` runs with."""
    from prometheus_client import multiprocess

    metrics_dir = settings.metrics_multiproc_dir

    def child_exit(_server: Any, worker: Any) -> None:
        multiprocess.mark_process_dead(worker.pid, metrics_dir)

    def post_worker_init(_worker: Any) -> None:
        logs.start_background_writer()

    def worker_exit(_server: Any, worker: Any) -> None:
        app = getattr(worker, "wsgi", None)
        if app is not None:  # write the issued-card records still queued
            app.extensions["vitd.runtime"].store.flush_and_stop()
        logs.stop_background_writer()

    return {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.workers,
        "threads": settings.threads,
        "worker_class": "cds_service.gunicorn_worker.GracefulThreadWorker",
        "graceful_timeout": max(1, round(settings.graceful_timeout_s)),
        "timeout": 30,
        "keepalive": 5,
        "reload": reload,
        "accesslog": None,  # the app logs each request itself, without paths or bodies
        "child_exit": child_exit,
        # Each worker writes its log lines from one background thread (see logs.py).
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
    }


def _run_gunicorn(settings: Settings, reload: bool) -> None:
    from gunicorn.app.base import BaseApplication

    from . import create_app
    from .auth import check_bind
    from .store import Store

    configure_logging()
    check_bind(settings.host, settings)
    if not settings.auth_disabled and settings.trusted_issuers_file:
        from .auth import load_issuers

        try:  # in the master, so a bad file stops the start with its message
            load_issuers(settings.trusted_issuers_file)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    store = Store(settings.database_url)
    store.migrate()  # once, in the master, so workers never race on the schema
    store.dispose()
    worker_settings = settings.with_overrides(
        migrate_on_start=False, record_cards_in_background=True
    )
    options = gunicorn_options(settings, reload)

    class _Server(BaseApplication):
        def load_config(self) -> None:
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self):
            return create_app(worker_settings)

    _Server().run()


def _print_cards(response: dict[str, Any]) -> None:
    cards = response.get("cards", [])
    if not cards:
        click.echo("No cards.")
    for card in cards:
        click.echo(f"[{card.get('indicator', '?').upper()}] {card.get('summary', '')}")
        topic = card.get("source", {}).get("topic", {}).get("code")
        if topic:
            click.echo(f"  topic: {topic}")
        for suggestion in card.get("suggestions", []):
            click.echo(f"  suggestion: {suggestion.get('label')}")
            for action in suggestion.get("actions", []):
                click.echo(f"    - {action.get('type')}: {action.get('description')}")


@main.command()
@click.argument("service_id")
@click.argument("request_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", help="Base URL of a running service (default: run in-process).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON response.")
def invoke(service_id: str, request_file: Path, url: str | None, as_json: bool) -> None:
    """Send REQUEST_FILE (a CDS Hooks request) to SERVICE_ID and print the cards."""
    body = request_file.read_bytes()
    if url:
        import requests

        try:
            reply = requests.post(
                f"{url.rstrip('/')}/cds-services/{service_id}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
        except requests.RequestException as exc:
            raise click.ClickException(f"could not reach {url}: {type(exc).__name__}") from None
        status, payload = reply.status_code, reply.json() if reply.content else {}
    else:
        from . import create_app

        logging.getLogger().setLevel(logging.WARNING)
        settings = _settings().with_overrides(auth_disabled=True)  # in-process: no network caller
        client = create_app(settings).test_client()
        reply = client.post(
            f"/cds-services/{service_id}", data=body, content_type="application/json"
        )
        status, payload = reply.status_code, reply.get_json(silent=True) or {}
    if as_json:
        click.echo(json.dumps(payload, indent=2))
    elif status == 200:
        _print_cards(payload)
    if status != 200:
        if not as_json:
            click.echo(f"HTTP {status}: {payload.get('error')}", err=True)
            for detail in payload.get("details", []):
                click.echo(f"  {detail}", err=True)
        sys.exit(1)


@main.command()
@click.option(
    "--patient",
    required=True,
    help="A FHIR Bundle file (JSON) of one patient's record, or a fixture name "
    "(fixtures/patients/NAME.json, dates moved to today).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Where to write the picture: .svg (the chart) or .html (chart and tables).",
)
def history(patient: str, out: Path) -> None:
    """Draw the vitamin D history picture of one patient from local data (no SMART)."""
    from datetime import UTC, datetime

    from . import fixtures
    from .guideline import load_guideline
    from .history import RecordError, picture_for_bundle, render_page, render_svg

    now = datetime.now(UTC)
    try:
        if Path(patient).is_file():
            bundle = json.loads(Path(patient).read_bytes())
        else:
            bundle = fixtures.load(patient, now).bundle
        guideline = load_guideline(_settings().guideline_profile)
        picture = picture_for_bundle(bundle, guideline, now=now)
    except fixtures.FixtureError as exc:
        raise click.ClickException(f"{exc} (nor is it a file)") from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, RecordError) else "not valid JSON"
        raise click.ClickException(f"{patient}: {reason}") from None
    html = out.suffix.lower() in (".html", ".htm")
    out.write_text(render_page(picture) if html else render_svg(picture), encoding="utf-8")
    click.echo(
        f"wrote {out}: {len(picture.levels)} 25(OH)D result(s), {len(picture.uses)} product "
        f"use(s){f', {len(picture.inr)} INR result(s)' if picture.vka_active else ''}"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
