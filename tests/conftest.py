from __future__ import annotations

import logging
from pathlib import Path

import prometheus_client  # noqa: F401 - before any test sets PROMETHEUS_MULTIPROC_DIR: in-process metrics
import pytest

from cds_service import Settings, create_app, logs

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"../shared/data is missing beside the checkout (looked in {SHARED_DATA})")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _process_logging_put_back():
    """`cds-service` commands run in-process (test_cli.py) configure the process's logging:
    the root logger at INFO with the JSON handler. Put the level back and take that handler
    away after each test, so what a later test's caplog sees does not depend on test order
    (test_auth.py counted the INFO "request" record's auth_rejection too after test_cli.py)."""
    root = logging.getLogger()
    level = root.level
    yield
    logs.stop_background_writer()
    root.setLevel(level)
    for handler in root.handlers[:]:
        if isinstance(handler.formatter, logs.JsonFormatter):
            root.removeHandler(handler)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'store.sqlite3'}",
        auth_disabled=True,
        validate_responses=True,
        fhir_budget_s=2.0,
    )


@pytest.fixture
def make_app():
    built = []

    def _make(settings: Settings):
        app = create_app(settings)
        built.append(app)
        return app

    yield _make
    for app in built:
        runtime = app.extensions["vitd.runtime"]
        app.extensions["vitd.readiness"].close()
        runtime.fhir.close()
        runtime.store.dispose()


@pytest.fixture
def app(make_app, settings):
    return make_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


# --- authenticated apps (JWT on): keys are generated at run time -------------------------


@pytest.fixture
def trusted_signers():
    """The keys the default trusted issuer signs with (ES384 and RS384 are the spec's)."""
    from .jwt_helpers import signer

    return [signer(alg) for alg in ("ES384", "RS384", "ES256", "RS256", "PS256", "PS384")]


@pytest.fixture
def auth_settings(settings, tmp_path, trusted_signers) -> Settings:
    """JWT required; one trusted issuer with an inline JWK Set; public base URL behind a proxy."""
    from .jwt_helpers import ISS, PUBLIC_BASE, jwks, write_issuers

    path = write_issuers(tmp_path / "issuers.json", [{"iss": ISS, "jwks": jwks(*trusted_signers)}])
    return settings.with_overrides(
        auth_disabled=False, trusted_issuers_file=path, public_base_url=PUBLIC_BASE
    )


@pytest.fixture
def auth_app(make_app, auth_settings):
    return make_app(auth_settings)


@pytest.fixture
def auth_client(auth_app):
    return auth_app.test_client()


PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url():
    """A URL of the PostgreSQL at 127.0.0.1:5432 (database test) in a fresh schema, dropped after."""
    import uuid

    import sqlalchemy as sa

    from cds_service.store import normalise_url

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(PG_URL))
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 (database test) is needed: {type(exc).__name__}")
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
