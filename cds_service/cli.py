"""`cds-service`: serve the service, or run one hook request and print the cards."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

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
@click.option(
    "--host", default=lambda: os.environ.get("HOST", "127.0.0.1"), show_default="$HOST or 127.0.0.1"
)
@click.option(
    "--port",
    type=int,
    default=lambda: int(os.environ.get("PORT", "8080")),
    show_default="$PORT or 8080",
)
@click.option(
    "--workers",
    type=int,
    default=lambda: int(os.environ.get("WEB_CONCURRENCY", "2")),
    show_default="$WEB_CONCURRENCY or 2",
)
@click.option("--threads", type=int, default=4, show_default=True, help="Threads per worker.")
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve under gunicorn (several workers), after migrating the store once."""
    from gunicorn.app.base import BaseApplication

    from . import create_app
    from .auth import check_bind
    from .store import Store

    configure_logging()
    settings = _settings()
    check_bind(host, settings)
    store = Store(settings.database_url)
    store.migrate()  # once, in the master, so workers never race on the schema
    store.dispose()
    worker_settings = settings.with_overrides(migrate_on_start=False)

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("accesslog", None)

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
