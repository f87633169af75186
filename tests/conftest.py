from __future__ import annotations

from pathlib import Path

import prometheus_client  # noqa: F401 - before any test sets PROMETHEUS_MULTIPROC_DIR: in-process metrics
import pytest

from cds_service import Settings, create_app

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"../shared/data is missing beside the checkout (looked in {SHARED_DATA})")
    return SHARED_DATA


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
        runtime.fhir.close()
        runtime.store.dispose()


@pytest.fixture
def app(make_app, settings):
    return make_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()
