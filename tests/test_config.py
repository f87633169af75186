"""Settings come from the environment, in one place, and bad values stop the service."""

from __future__ import annotations

import pytest

from cds_service.config import DEFAULT_DATABASE_URL, ConfigError, Settings


def test_defaults():
    s = Settings.from_env({})
    assert s.database_url == DEFAULT_DATABASE_URL and s.database_url.startswith("sqlite:///")
    assert s.auth_disabled is False and s.max_body_bytes == 5 * 1024 * 1024
    assert s.fhir_budget_s == 3.0 and s.cors_origin == "*"
    assert (s.host, s.port, s.workers, s.threads) == ("127.0.0.1", 8080, 2, 16)
    assert s.metrics_multiproc_dir is None


@pytest.mark.parametrize(
    "env,field,expected",
    [
        ({"CDS_AUTH_DISABLED": "1"}, "auth_disabled", True),
        ({"CDS_AUTH_DISABLED": "true"}, "auth_disabled", True),
        ({"CDS_AUTH_DISABLED": "0"}, "auth_disabled", False),
        ({"CDS_AUTH_DISABLED": ""}, "auth_disabled", False),
        ({"DATABASE_URL": "postgresql://u@h/db"}, "database_url", "postgresql://u@h/db"),
        ({"CDS_MAX_BODY_BYTES": "2048"}, "max_body_bytes", 2048),
        ({"CDS_FHIR_BUDGET_S": "0.5"}, "fhir_budget_s", 0.5),
        ({"CDS_FHIR_MAX_PAGES": "3"}, "fhir_max_pages", 3),
        ({"CDS_CORS_ORIGIN": "https://ehr.example.org"}, "cors_origin", "https://ehr.example.org"),
        ({"CDS_DB_MIGRATE": "0"}, "migrate_on_start", False),
        ({"HOST": "0.0.0.0"}, "host", "0.0.0.0"),
        ({"PORT": "9090"}, "port", 9090),
        ({"WEB_CONCURRENCY": "3"}, "workers", 3),
        ({"WEB_THREADS": "8"}, "threads", 8),
        ({"CDS_GRACEFUL_TIMEOUT_S": "5"}, "graceful_timeout_s", 5.0),
        ({"PROMETHEUS_MULTIPROC_DIR": "/run/metrics"}, "metrics_multiproc_dir", "/run/metrics"),
    ],
)
def test_environment_overrides(env, field, expected):
    assert getattr(Settings.from_env(env), field) == expected


@pytest.mark.parametrize(
    "env,name",
    [
        ({"CDS_AUTH_DISABLED": "maybe"}, "CDS_AUTH_DISABLED"),
        ({"CDS_MAX_BODY_BYTES": "lots"}, "CDS_MAX_BODY_BYTES"),
        ({"CDS_MAX_BODY_BYTES": "10"}, "CDS_MAX_BODY_BYTES"),
        ({"CDS_FHIR_BUDGET_S": "nan"}, "CDS_FHIR_BUDGET_S"),
        ({"CDS_FHIR_BUDGET_S": "-1"}, "CDS_FHIR_BUDGET_S"),
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"PORT": "80.5"}, "PORT"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"WEB_THREADS": "many"}, "WEB_THREADS"),
    ],
)
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)
