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
from .fixtures import SERVICE_IDS
from .guideline import PROFILES
from .logs import configure_logging


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


PROFILE_CHOICE = click.Choice(PROFILES)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="vitd-cds", prog_name="cds-service")
def main() -> None:
    """vitd-cds: CDS Hooks 2.0 service for vitamin D, calcium and vitamin K safety."""


SERVE_ENVIRONMENT = (
    ("DATABASE_URL", "the store: sqlite:///… or postgresql://…"),
    ("", "[sqlite:///var/vitd-cds.sqlite3]"),
    ("CDS_TRUSTED_ISSUERS_FILE", "trusted JWT issuers (JSON); none: all refused"),
    ("CDS_PUBLIC_BASE_URL", "public base URL(s), comma-separated: the JWT aud"),
    ("CDS_AUTH_DISABLED", "1: no JWT check (development, loopback only)"),
    ("REDIS_URL", "JWT replay store shared by workers [the database]"),
    ("CDS_GUIDELINE_PROFILE", "default | es2024"),
    ("CDS_CORS_ORIGIN", "Access-Control-Allow-Origin [*]"),
    ("CDS_PREVIEW", "1/0: the /preview page [on only without auth]"),
    ("CDS_SMART_CLIENT_ID", "SMART launch of the history page, with"),
    ("", "CDS_SMART_ALLOWED_ISSUERS and CDS_SECRET_KEY"),
    ("CDS_MAX_BODY_BYTES", "largest request body [5242880]"),
    ("CDS_FHIR_BUDGET_S", "time for all FHIR queries of a call [3]"),
    ("HOST, PORT", "address and port [127.0.0.1, 8080]"),
    ("WEB_CONCURRENCY", "worker processes [2]; WEB_THREADS threads [4]"),
)


def _environment_epilog() -> str:
    width = max(len(name) for name, _ in SERVE_ENVIRONMENT)
    rows = [f"  {name:<{width}}  {text}" for name, text in SERVE_ENVIRONMENT]
    return "\b\nEnvironment (README, \"Configuration\", has them all):\n" + "\n".join(rows)


@main.command(epilog=_environment_epilog())
@click.option("--host", help="Address to listen on.  [default: $HOST or 127.0.0.1]")
@click.option("--port", type=int, help="Port.  [default: $PORT or 8080]")
@click.option("--workers", type=int, help="Worker processes.  [default: $WEB_CONCURRENCY or 2]")
@click.option("--threads", type=int, help="Threads per worker.  [default: $WEB_THREADS or 16]")
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


GC_YOUNG_THRESHOLD = 10_000  # container allocations (net) between young collections


def gunicorn_options(settings: Settings, reload: bool) -> dict[str, Any]:
    """The gunicorn settings `serve` runs with."""
    from prometheus_client import multiprocess

    metrics_dir = settings.metrics_multiproc_dir

    def child_exit(_server: Any, worker: Any) -> None:
        multiprocess.mark_process_dead(worker.pid, metrics_dir)

    def post_worker_init(worker: Any) -> None:
        logs.start_background_writer()
        app = getattr(worker, "wsgi", None)
        if app is not None:  # readiness known before the first probe asks
            app.extensions["vitd.readiness"].start()
        # The app is loaded: its ~120,000 long-lived objects (models, schemas, templates) go
        # to the permanent generation, so a full collection no longer walks them all (a 32 ms
        # pause every few thousand calls, measured; about 0.3 ms after).
        gc.freeze()
        # One call holds a few thousand container objects (the parsed request, its facts) until
        # it ends: at the default young-generation threshold (700) about one collection ran
        # inside every call, walking them and promoting them to be walked again. Above a call's
        # own peak, reference counting frees them first and collections become rare.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    def worker_exit(_server: Any, worker: Any) -> None:
        app = getattr(worker, "wsgi", None)
        if app is not None:  # write the issued-card records still queued
            app.extensions["vitd.readiness"].close()
            app.extensions["vitd.runtime"].store.flush_and_stop()
        logs.stop_background_writer()

    return {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.workers,
        "threads": settings.threads,
        # GracefulThreadWorker (gunicorn_worker.py) that stamps each request's arrival
        "worker_class": "cds_service.arrival.ArrivalThreadWorker",
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


def _check_clients(settings: Settings) -> None:
    """CDS_CLIENTS_FILE, in the master: a bad file stops the start naming the file and key."""
    from .clients import load_clients

    try:
        load_clients(settings.clients_file, settings.guideline_profile)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


_NEWER_GUNICORN = {"control_socket_disable"}  # settings only some supported versions have


def _run_gunicorn(settings: Settings, reload: bool) -> None:
    from gunicorn.app.base import BaseApplication

    from . import create_app
    from .auth import check_bind

    configure_logging()
    check_bind(settings.host, settings)
    _check_port_free(settings.host, settings.port)
    if not settings.auth_disabled:
        from .auth import load_issuers, startup_warnings

        issuers = {}
        if settings.trusted_issuers_file:
            try:  # in the master, so a bad file stops the start with its message
                issuers = load_issuers(settings.trusted_issuers_file)
            except ConfigError as exc:
                raise click.ClickException(str(exc)) from None
        for message in startup_warnings(settings, issuers):  # once, here; not per worker
            logging.getLogger("cds_service.auth").warning(message)
    _check_clients(settings)
    _migrate_or_exit(settings)  # once, in the master, so workers never race on the schema
    _few_malloc_arenas()  # inherited by the workers
    _announce(settings)
    worker_settings = settings.with_overrides(
        migrate_on_start=False, record_cards_in_background=True, startup_notices=False
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


def _check_port_free(host: str, port: int) -> None:
    """A port already taken is one line, before anything starts (gunicorn would retry for
    five seconds, then stop with its own log lines)."""
    import errno
    import socket

    if port == 0:
        return
    try:
        probe = socket.create_server((host.strip("[]"), port), reuse_port=False)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: the address is already in use (another "
                "server? stop it, or choose --port / $PORT)"
            ) from None
        if exc.errno == errno.EACCES:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: permission denied (ports below 1024 need "
                "privileges; choose --port / $PORT)"
            ) from None
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    probe.close()


def _announce(settings: Settings) -> None:
    """The URLs a client must register, on stdout (the logs are JSON on stderr)."""
    if settings.public_base_urls:
        bases = list(settings.public_base_urls)
    else:
        host = settings.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
        shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
        port = settings.port or "PORT"  # port 0: gunicorn's "Listening at" line says which
        bases = [f"http://{shown}:{port}"]
    click.echo(f"vitd-cds {_version()} on {settings.host}:{settings.port}")
    for base in bases:
        click.echo(f"  CDS Hooks discovery: {base}/cds-services")
    if not settings.auth_disabled and settings.public_base_urls:
        click.echo(
            "  JWT aud accepted: the URL called under "
            + (" or ".join(settings.public_base_urls))
        )
    if settings.preview_enabled:
        click.echo(f"  card preview: {bases[0]}/preview")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vitd-cds")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "(not installed)"


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _few_malloc_arenas() -> None:
    """At most MALLOC_ARENAS glibc malloc arenas (unless MALLOC_ARENA_MAX says otherwise).

    glibc gives busy threads arenas of their own (up to 8 per core) and keeps what they freed:
    with 16 threads parsing large FHIR responses a worker's peak RSS grew by about 100 MB more
    than with 2 arenas (bench/faults.py, fhir-huge). No-op where there is no glibc.
    """
    import ctypes
    import ctypes.util

    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        pass


MIGRATE_WAIT_S = 60.0  # beyond the connect timeout: DDL may wait for a lock


def _migrate_or_exit(settings: Settings) -> None:
    """Migrate the store, or stop the start with one line naming the database and why.

    Never a silent hang: connecting is bounded by CDS_DB_CONNECT_TIMEOUT_S, and the whole
    migration by MIGRATE_WAIT_S more (it runs on a daemon thread so that a database that
    stops answering halfway cannot hold the process).
    """
    import threading

    import sqlalchemy as sa

    from .store import Store, describe_error

    where = _database_label(settings.database_url)
    outcome: list[BaseException | None] = []

    def migrate() -> None:
        store = None
        try:
            store = Store(settings.database_url, settings.store_limits)
            store.migrate()
            outcome.append(None)
        except BaseException as exc:  # reported by the caller, in one line
            outcome.append(exc)
        finally:
            if store is not None:
                store.dispose()

    worker = threading.Thread(target=migrate, name="migrate", daemon=True)
    worker.start()
    worker.join(settings.db_connect_timeout_s + MIGRATE_WAIT_S)
    if not outcome:
        raise click.ClickException(f"database {where} did not answer: migration timed out")
    error = outcome[0]
    if isinstance(error, OSError | sa.exc.SQLAlchemyError):
        raise click.ClickException(f"database {where} unusable: {describe_error(error)}")
    if error is not None:
        raise error


def _database_label(url: str) -> str:
    """The database URL without its password (it goes to the terminal and the logs)."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(DATABASE_URL)"


def _print_cards(response: dict[str, Any]) -> None:
    """Each card in a panel: the full summary, the detail (markdown rendered for the terminal),
    then topic, source, suggestions and override reasons; readable at 80 columns."""
    from rich.console import Console, Group
    from rich.markdown import Markdown
    from rich.markup import escape
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.text import Text

    console = Console(highlight=False)
    cards = response.get("cards", [])
    if not cards:
        console.print("No cards.")
    colours = {"critical": "red", "warning": "yellow", "info": "blue"}
    for card in cards:
        indicator = str(card.get("indicator", "?"))
        colour = colours.get(indicator, "white")
        parts: list[Any] = [Text(str(card.get("summary", "")), style="bold")]
        if card.get("detail"):
            parts.append(Text(""))
            parts.append(Markdown(str(card["detail"]), hyperlinks=False))
        source = card.get("source", {})
        topic = source.get("topic", {}).get("code")
        # (markup, indent): continuation lines wrap under their own text, not at the border
        lines: list[tuple[str, int]] = [
            (f"[dim]topic:[/] {escape(str(topic or '-'))}", 0),
            (
                f"[dim]source:[/] {escape(str(source.get('label', '')))} "
                f"{escape(str(source.get('url', '')))}".rstrip(),
                0,
            ),
        ]
        for suggestion in card.get("suggestions", []):
            lines.append((f"[bold]suggestion:[/] {escape(str(suggestion.get('label')))}", 0))
            for action in suggestion.get("actions", []):
                target = action.get("resourceId") or (action.get("resource") or {}).get(
                    "resourceType", ""
                )
                lines.append(
                    (
                        f"- {escape(str(action.get('type')))} {escape(str(target))}: "
                        f"{escape(str(action.get('description')))}",
                        2,
                    )
                )
        for link in card.get("links", []):
            lines.append(
                (
                    f"[dim]link:[/] {escape(str(link.get('label', '')))} "
                    f"{escape(str(link.get('url', '')))}",
                    0,
                )
            )
        reasons = [r.get("display", "") for r in card.get("overrideReasons", [])]
        if reasons:
            lines.append(("[dim]override reasons:[/] " + escape("; ".join(reasons)), 0))
        parts.append(Text(""))
        parts.extend(Padding(Text.from_markup(m), (0, 0, 0, n)) for m, n in lines)
        console.print(
            Panel(
                Group(*parts),
                title=f"[bold {colour}]{indicator.upper()}[/]",
                title_align="left",
                border_style=colour,
            )
        )


def service_base(url: str) -> str:
    """The service's base URL from what a user may type: the base, `…/cds-services` or
    `…/cds-services/<id>`; a URL without http(s) scheme is refused with the fix."""
    from urllib.parse import urlsplit, urlunsplit

    raw = url.strip()
    if "://" not in raw:
        raise click.BadParameter(
            f"{url!r} has no scheme: did you mean http://{raw.lstrip('/')} ?", param_hint="--url"
        )
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(
            f"{url!r} is not an http(s) URL (e.g. http://127.0.0.1:8080)", param_hint="--url"
        )
    path = parts.path.rstrip("/")
    head, marker, tail = path.rpartition("/cds-services")
    if marker and "/" not in tail.strip("/"):
        path = head
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _post(
    url: str | None,
    path: str,
    body: bytes,
    *,
    token: str | None = None,
    profile: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST `body` to `path` of the service at `url` (with `token` as bearer), or of an
    in-process app (under guideline `profile`)."""
    if url:
        import requests

        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            reply = requests.post(f"{url}{path}", data=body, headers=headers, timeout=30)
        except requests.RequestException as exc:
            raise click.ClickException(f"could not reach {url}: {type(exc).__name__}") from None
        try:
            return reply.status_code, reply.json() if reply.content else {}
        except ValueError:
            return reply.status_code, {"error": "the answer was not JSON"}
    from . import create_app

    # In-process: no network caller, so auth is off by design and its start-up warning
    # would only mislead (other warnings still show).
    settings = _settings().with_overrides(auth_disabled=True, startup_notices=False)
    if profile:
        settings = settings.with_overrides(guideline_profile=profile)
    app = create_app(settings)
    try:
        reply = app.test_client().post(path, data=body, content_type="application/json")
        return reply.status_code, reply.get_json(silent=True) or {}
    finally:
        app.extensions["vitd.runtime"].fhir.close()
        app.extensions["vitd.runtime"].store.dispose()


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


@main.command(
    epilog="\b\nSERVICE_ID is one of:\n" + "\n".join(f"  {s}" for s in SERVICE_IDS)
)
@click.argument("service_id", metavar="SERVICE_ID")
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
@click.option(
    "--url",
    help="A running service: its base URL (http://host:port) or …/cds-services "
    "(default: run in-process).",
)
@click.option(
    "--token",
    envvar="CDS_TOKEN",
    help="With --url: a JWT sent as 'Authorization: Bearer' (or $CDS_TOKEN).",
)
@click.option(
    "--profile",
    type=PROFILE_CHOICE,
    help="In-process: the guideline profile.  [default: $CDS_GUIDELINE_PROFILE or default]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON response.")
def invoke(
    service_id: str,
    request_file: Path | None,
    patient: str | None,
    draft_file: Path | None,
    no_prefetch: bool,
    url: str | None,
    token: str | None,
    profile: str | None,
    as_json: bool,
) -> None:
    """Send a CDS Hooks request to SERVICE_ID and print the cards.

    The request is REQUEST_FILE, or one built for a fixture patient with --patient.
    """
    from contextlib import nullcontext

    from . import fixtures

    if service_id not in SERVICE_IDS:
        raise click.BadParameter(
            f"unknown service {service_id!r}; the services are: {', '.join(SERVICE_IDS)}",
            param_hint="SERVICE_ID",
        )
    if (request_file is None) == (patient is None):
        raise click.UsageError("give either REQUEST_FILE or --patient FIXTURE")
    if patient is None and (draft_file or no_prefetch):
        raise click.UsageError("--draft and --no-prefetch go with --patient")
    if url:
        url = service_base(url)
        if profile:
            raise click.UsageError(
                "--profile is for in-process calls; a running service uses its own "
                "CDS_GUIDELINE_PROFILE"
            )
    elif token:
        raise click.UsageError("--token goes with --url (in-process calls need no token)")
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
        status, payload = _post(
            url, f"/cds-services/{service_id}", body, token=token, profile=profile
        )
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
    console = Console(highlight=False)
    if console.width < 120:  # a terminal of 80 columns: one block per patient, not a table
        from rich.padding import Padding
        from rich.text import Text

        console.print(f"{len(rows)} fixture patients", style="bold")
        for name, about, drafts in rows:
            console.print(Text(name, style="bold"))
            console.print(Padding(Text(about), (0, 0, 0, 2)))
            for draft in drafts:
                console.print(Padding(Text(f"draft: {draft}", style="dim"), (0, 0, 0, 2)))
        return
    table = Table(title=f"{len(rows)} fixture patients")
    table.add_column("patient", style="bold", no_wrap=True)
    table.add_column("what it exercises")
    table.add_column("draft orders")
    for name, about, drafts in rows:
        table.add_row(name, escape(about), escape("\n".join(drafts)) or "-")
    console.print(table)


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
    type=click.Choice(list(PROFILES)),
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

    One line per patient and profile: ✓ or ✗, then each topic with the hooks whose answer
    held it (V patient-view, S order-select, G order-sign); red differs from expected.json.
    """
    from contextlib import nullcontext

    from rich.console import Console
    from rich.progress import Progress

    from . import fixture_check, fixtures

    unknown = sorted(set(patients) - set(fixtures.names()))
    if unknown:
        raise click.BadParameter(f"no fixture named {', '.join(unknown)}", param_hint="--patient")
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
        console.print(f"[bold]profile {profile}[/]: topics per patient (V view, S select, G sign)")
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
    """One row per patient for `profile`: ✓/✗, the patient, then each topic with the hooks
    whose answer held it (V patient-view, S order-select, G order-sign); a topic that differs
    from expected.json shows as red `got≠expected`. Fits 80 columns (the topics wrap)."""
    from rich.table import Table

    table = Table(
        box=None,
        show_header=False,
        padding=(0, 1, 0, 0),
    )
    table.add_column("ok", no_wrap=True)
    table.add_column("patient", no_wrap=True)
    table.add_column("topics", overflow="fold")
    for patient in dict.fromkeys(r.patient for r in results):
        mine = [r for r in results if r.patient == patient]
        topics = sorted({t for r in mine for t in (*(r.expected or ()), *(r.actual or ()))})
        cells = []
        for topic in topics:
            got = "".join(_HOOK_LETTER[r.service] for r in mine if topic in (r.actual or ()))
            want = "".join(_HOOK_LETTER[r.service] for r in mine if topic in (r.expected or ()))
            cells.append(
                f"{topic} [green]{got}[/]"
                if got == want
                else f"[red]{topic} {got or '-'}≠{want or '-'}[/]"
            )
        errors = [r.error for r in mine if r.error]
        if errors:
            cells.append(f"[red]error: {errors[0]}[/]")
        ok = all(r.ok for r in mine)
        table.add_row(
            "[green]✓[/]" if ok else "[red]✗[/]", patient, ", ".join(cells) or "[dim]no cards[/]"
        )
    return table


_PICTURE_SUFFIXES = (".svg", ".html", ".htm")


@main.command()
@click.option(
    "--patient",
    required=True,
    metavar="FIXTURE|FILE",
    help="A fixture patient (see `cds-service fixtures list`; dates moved to today), or a "
    "FHIR Bundle file (JSON) of one patient's record.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the picture: .svg (the chart) or .html (chart and tables).",
)
@click.option(
    "--profile",
    type=PROFILE_CHOICE,
    help="Guideline profile of the bands.  [default: $CDS_GUIDELINE_PROFILE or default]",
)
def history(patient: str, out: Path, profile: str | None) -> None:
    """Draw the vitamin D history picture of one patient from local data (no SMART)."""
    from datetime import UTC, datetime

    from . import fixtures
    from .guideline import load_guideline
    from .history import RecordError, picture_for_bundle, render_page, render_svg

    if out.suffix.lower() not in _PICTURE_SUFFIXES:
        raise click.ClickException(
            f"--out {out}: cannot write {out.suffix or 'a file without extension'}; give .svg "
            "or .html (for a PNG, open the .svg in a browser or convert it)"
        )
    if not out.parent.is_dir():
        raise click.ClickException(f"--out {out}: the folder {out.parent} does not exist")
    now = datetime.now(UTC)
    try:
        if Path(patient).is_file():
            bundle = json.loads(Path(patient).read_bytes())
        else:
            bundle = fixtures.load(patient, now).bundle
        guideline = load_guideline(profile or _settings().guideline_profile)
        picture = picture_for_bundle(bundle, guideline, now=now)
    except fixtures.FixtureError as exc:
        raise click.ClickException(f"{exc} (nor is it a file)") from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if isinstance(exc, RecordError) else "not valid JSON"
        raise click.ClickException(f"{patient}: {reason}") from None
    html = out.suffix.lower() in (".html", ".htm")
    try:
        out.write_text(render_page(picture) if html else render_svg(picture), encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror}") from None
    click.echo(
        f"wrote {out}: {len(picture.levels)} 25(OH)D result(s), {len(picture.uses)} product "
        f"use(s){f', {len(picture.inr)} INR result(s)' if picture.vka_active else ''}"
    )


@main.command()
@click.option(
    "--since",
    default="30d",
    show_default=True,
    help="Start of the period: 30d, 12w, 365d, or a date (2026-01-01, UTC).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "html"]),
    default="text",
    show_default=True,
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the report to this file instead of printing it.",
)
def report(since: str, fmt: str, out: Path | None) -> None:
    """Cards, patients, feedback and rates per topic and client, from the store ($DATABASE_URL)."""
    from datetime import UTC, datetime

    from . import analytics
    from .store import Store

    now = datetime.now(UTC)
    try:
        start = analytics.parse_since(since, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    settings = _settings()
    store = Store(settings.database_url)
    try:
        if settings.migrate_on_start:
            store.migrate()
        text = analytics.RENDERERS[fmt](analytics.build_report(store, start, now))
    except Exception as exc:  # the store: its URL may hold a password, so not echoed
        raise click.ClickException(f"cannot read the store: {type(exc).__name__}") from None
    finally:
        store.dispose()
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out} ({fmt})")


if __name__ == "__main__":  # pragma: no cover
    main()
