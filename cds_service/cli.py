"""`cds-service`: serve the service, or run one hook request and print the cards."""

from __future__ import annotations

import gc
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
        # The app is loaded: its ~120,000 long-lived objects (models, schemas, templates) go
        # to the permanent generation, so a full collection no longer walks them all (a 32 ms
        # pause every few thousand calls, measured; about 0.3 ms after).
        gc.freeze()

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
        # gunicorn 25 opens a control socket at one path per user ($XDG_RUNTIME_DIR or
        # ~/.gunicorn/gunicorn.ctl): side-by-side instances, tests and benchmarks would take
        # over each other's. `serve` needs none (signals do the same), so none is opened.
        "control_socket_disable": True,
        "reload": reload,
        "accesslog": None,  # the app logs each request itself, without paths or bodies
        "child_exit": child_exit,
        # Each worker writes its log lines from one background thread (see logs.py), and
        # freezes what it has loaded out of the garbage collector's way.
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
    }


_NEWER_GUNICORN = {"control_socket_disable"}  # settings only some supported versions have


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
                if name in _NEWER_GUNICORN and name not in self.cfg.settings:
                    continue  # an older gunicorn without that feature
                self.cfg.set(name, value)

        def load(self):
            return create_app(worker_settings)

    _Server().run()


def _print_cards(response: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel

    console = Console(highlight=False, soft_wrap=False)
    cards = response.get("cards", [])
    if not cards:
        console.print("No cards.")
    colours = {"critical": "red", "warning": "yellow", "info": "blue"}
    for card in cards:
        indicator = str(card.get("indicator", "?"))
        colour = colours.get(indicator, "white")
        lines = []
        topic = card.get("source", {}).get("topic", {}).get("code")
        source = card.get("source", {})
        lines.append(
            f"[dim]topic:[/] {escape(str(topic or '-'))}   [dim]source:[/] "
            f"{escape(str(source.get('label', '')))} {escape(str(source.get('url', '')))}"
        )
        for suggestion in card.get("suggestions", []):
            lines.append(f"[bold]suggestion:[/] {escape(str(suggestion.get('label')))}")
            for action in suggestion.get("actions", []):
                target = action.get("resourceId") or (action.get("resource") or {}).get(
                    "resourceType", ""
                )
                lines.append(
                    f"  - {escape(str(action.get('type')))} {escape(str(target))}: "
                    f"{escape(str(action.get('description')))}"
                )
        reasons = [r.get("display", "") for r in card.get("overrideReasons", [])]
        if reasons:
            lines.append("[dim]override reasons:[/] " + escape("; ".join(reasons)))
        console.print(
            Panel(
                "\n".join(lines),
                title=f"[bold {colour}]{indicator.upper()}[/] "
                f"{escape(str(card.get('summary', '')))}",
                title_align="left",
                border_style=colour,
            )
        )


def _post(url: str | None, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST `body` to `path` of the service at `url`, or of an in-process app."""
    if url:
        import requests

        try:
            reply = requests.post(
                f"{url.rstrip('/')}{path}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
        except requests.RequestException as exc:
            raise click.ClickException(f"could not reach {url}: {type(exc).__name__}") from None
        try:
            return reply.status_code, reply.json() if reply.content else {}
        except ValueError:
            return reply.status_code, {"error": "the answer was not JSON"}
    from . import create_app

    _quiet_in_process()
    settings = _settings().with_overrides(auth_disabled=True)  # in-process: no network caller
    app = create_app(settings)
    try:
        reply = app.test_client().post(path, data=body, content_type="application/json")
        return reply.status_code, reply.get_json(silent=True) or {}
    finally:
        app.extensions["vitd.runtime"].fhir.close()
        app.extensions["vitd.runtime"].store.dispose()


def _quiet_in_process() -> None:
    """In-process calls have no network caller: auth is off for them by design, so its
    start-up warning would only mislead; other warnings still show."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("cds_service.auth").setLevel(logging.ERROR)


def _read_drafts(path: Path) -> list[dict[str, Any]]:
    """Draft orders from a file: one resource, a Bundle of them, or a JSON list."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--draft") from None
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        data = [e.get("resource") for e in data.get("entry", [])]
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, dict) and i.get("resourceType") for i in items):
        raise click.BadParameter(
            f"{path}: expected a FHIR resource, a Bundle or a list of resources",
            param_hint="--draft",
        )
    return items


@main.command()
@click.argument("service_id")
@click.argument(
    "request_file",
    required=False,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--patient",
    "patient",
    metavar="FIXTURE",
    help="Build the request for a fixture "
    "patient (see `cds-service fixtures list`) instead of reading REQUEST_FILE.",
)
@click.option(
    "--draft",
    "draft_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --patient: draft order(s) to send instead of the "
    "patient's own (a MedicationRequest, a Bundle or a JSON list).",
)
@click.option(
    "--no-prefetch",
    is_flag=True,
    help="With --patient: send no prefetch; the "
    "service queries the fixture FHIR server, started on loopback for this call.",
)
@click.option("--url", help="Base URL of a running service (default: run in-process).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON response.")
def invoke(
    service_id: str,
    request_file: Path | None,
    patient: str | None,
    draft_file: Path | None,
    no_prefetch: bool,
    url: str | None,
    as_json: bool,
) -> None:
    """Send a CDS Hooks request to SERVICE_ID and print the cards.

    The request is REQUEST_FILE, or one built for a fixture patient with --patient.
    """
    from contextlib import nullcontext

    from . import fixtures

    if (request_file is None) == (patient is None):
        raise click.UsageError("give either REQUEST_FILE or --patient FIXTURE")
    if patient is None and (draft_file or no_prefetch):
        raise click.UsageError("--draft and --no-prefetch go with --patient")
    if patient is not None and service_id not in fixtures.HOOKS:
        raise click.UsageError(f"unknown service {service_id!r}: {', '.join(fixtures.HOOKS)}")
    server = None
    if patient is not None:
        from .fhir_server import FixtureFhirServer

        try:
            fixture = fixtures.load(patient)
        except fixtures.FixtureError as exc:
            raise click.BadParameter(str(exc), param_hint="--patient") from None
        drafts = _read_drafts(draft_file) if draft_file else None
        server = FixtureFhirServer() if no_prefetch else None
    with server or nullcontext() as fhir_url:
        if patient is not None:
            body = json.dumps(
                fixture.request(
                    service_id,
                    "fhir" if no_prefetch else "prefetch",
                    fhir_server=fhir_url,
                    drafts=drafts,
                )
            ).encode()
        else:
            body = request_file.read_bytes()
        status, payload = _post(url, f"/cds-services/{service_id}", body)
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


@main.group("fixtures")
def fixtures_group() -> None:
    """The synthetic patient library in fixtures/patients/."""


@fixtures_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print names and descriptions as JSON.")
def fixtures_list(as_json: bool) -> None:
    """List the fixture patients, what each exercises and its draft orders."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from . import fixtures

    expected = fixtures.expectations()
    rows = []
    for name in fixtures.names():
        fixture = fixtures.load(name)
        drafts = [fixtures.medication_text(d) for d in fixture.drafts]
        rows.append((name, expected.get(name, {}).get("about", ""), drafts))
    if as_json:
        click.echo(
            json.dumps(
                [{"name": n, "about": a, "drafts": d} for n, a, d in rows],
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    table = Table(title=f"{len(rows)} fixture patients")
    table.add_column("patient", style="bold", no_wrap=True)
    table.add_column("what it exercises")
    table.add_column("draft orders")
    for name, about, drafts in rows:
        table.add_row(name, escape(about), escape("\n".join(drafts)) or "-")
    Console().print(table)


@fixtures_group.command("serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (loopback by default: development data only).",
)
@click.option("--port", type=int, default=8081, show_default=True)
def fixtures_serve(host: str, port: int) -> None:
    """Serve the fixtures as a read-only FHIR R4 server (the searches of our prefetch)."""
    from .fhir_server import FixtureFhirServer

    try:
        server = FixtureFhirServer(host, port, access_log=True)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    click.echo(f"FHIR R4 server over the fixtures at {server.url} (Ctrl-C to stop)")
    click.echo(f"  try: curl {server.url}/Patient/adult-deficient")
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        pass


@fixtures_group.command("readme")
@click.option("--write", is_flag=True, help="Write fixtures/README.md instead of printing it.")
def fixtures_readme(write: bool) -> None:
    """Generate fixtures/README.md from the fixture files and expected.json."""
    from . import fixtures

    text = fixtures.readme()
    if write:
        fixtures.README_FILE.write_text(text, encoding="utf-8")
        click.echo(f"wrote {fixtures.README_FILE}")
    else:
        click.echo(text, nl=False)


_HOOK_LETTER = {
    "vitamin-d-patient-view": "V",
    "vitamin-d-order-select": "S",
    "vitamin-d-order-sign": "G",
}


@main.command()
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    type=click.Choice(["default", "es2024"]),
    help="Guideline profile(s) to check (default: 'default', plus each profile a "
    "patient states expectations for).",
)
@click.option(
    "--patient",
    "patients",
    multiple=True,
    metavar="FIXTURE",
    help="Check only these patients (repeatable).",
)
@click.option(
    "--no-prefetch",
    is_flag=True,
    help="Send no prefetch: the service queries the fixture FHIR server.",
)
def check(profiles: tuple[str, ...], patients: tuple[str, ...], no_prefetch: bool) -> None:
    """Run every fixture patient through every service; exit 1 on any mismatch with
    fixtures/expected.json.

    The table shows, per patient and topic, the hooks whose answer held the topic
    (V patient-view, S order-select, G order-sign); red cells differ from expected.json.
    """
    from contextlib import nullcontext

    from rich.console import Console
    from rich.progress import Progress

    from . import fixture_check, fixtures

    unknown = sorted(set(patients) - set(fixtures.names()))
    if unknown:
        raise click.BadParameter(f"no fixture named {', '.join(unknown)}", param_hint="--patient")
    _quiet_in_process()
    planned = fixture_check.planned(patients or None, profiles or None)
    console = Console(highlight=False)
    server = None
    if no_prefetch:
        from .fhir_server import FixtureFhirServer

        server = FixtureFhirServer()
    with (
        server or nullcontext() as fhir_url,
        Progress(
            console=Console(stderr=True), transient=True, disable=len(planned) < 10
        ) as progress,
    ):
        task = progress.add_task("checking", total=len(planned))
        results = fixture_check.run(
            patients or None,
            profiles or None,
            mode="fhir" if no_prefetch else "prefetch",
            fhir_server=fhir_url,
            on_result=lambda _r: progress.advance(task),
        )
    for profile in dict.fromkeys(r.profile for r in results):
        console.print(_check_table(profile, [r for r in results if r.profile == profile]))
    failed = [r for r in results if not r.ok]
    for r in failed:
        console.print(
            f"[red]MISMATCH[/] {r.patient} {r.service} ({r.profile}): expected "
            f"{list(r.expected) if r.expected is not None else 'nothing stated'}, got "
            f"{list(r.actual) if r.actual is not None else r.error}"
        )
    total = len({(r.patient, r.profile) for r in results})
    if failed:
        console.print(f"[red]{len(failed)} of {len(results)} calls differ from expected.json[/]")
        sys.exit(1)
    console.print(f"[green]all {len(results)} calls ({total} patient-profiles) as expected[/]")


def _check_table(profile: str, results: list) -> Any:
    from rich.table import Table

    topics: list[str] = []
    for r in results:
        for t in (*(r.expected or ()), *(r.actual or ())):
            if t not in topics:
                topics.append(t)
    topics.sort()
    table = Table(title=f"profile {profile}: patient x topic (V view, S select, G sign)")
    table.add_column("patient", no_wrap=True)
    for topic in topics:
        table.add_column(topic.replace("-", "-\n"), justify="center")
    table.add_column("ok", justify="center")
    for patient in dict.fromkeys(r.patient for r in results):
        mine = [r for r in results if r.patient == patient]
        cells = []
        for topic in topics:
            got = "".join(_HOOK_LETTER[r.service] for r in mine if topic in (r.actual or ()))
            want = "".join(_HOOK_LETTER[r.service] for r in mine if topic in (r.expected or ()))
            mark = f"[green]{got}[/]" if got == want else f"[red]{got or '-'}≠{want or '-'}[/]"
            cells.append(mark)
        ok = all(r.ok for r in mine)
        table.add_row(patient, *cells, "[green]✓[/]" if ok else "[red]✗[/]")
    return table


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
