"""Settings: every environment variable the service reads, in one place, validated at start.

`Settings.from_env()` is the only reader of `os.environ`; the app and the CLI pass the object
around. A bad value stops the service with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DATABASE_URL = "sqlite:///" + str(Path("var") / "vitd-cds.sqlite3")


class ConfigError(ValueError):
    """A setting has a value the service cannot run with."""


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be 0 or 1, not {raw!r}")


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not value >= minimum:  # also rejects NaN
        raise ConfigError(f"{name} must be at least {minimum}, not {raw!r}")
    return value


def _loopback_http(parts) -> bool:
    return parts.scheme == "http" and parts.hostname in {"127.0.0.1", "localhost", "::1"}


def _issuers(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma- or space-separated FHIR base URLs: https, or http on loopback only."""
    out = []
    for item in (env.get(name) or "").replace(",", " ").split():
        parts = urlsplit(item)
        if not parts.hostname or not (parts.scheme == "https" or _loopback_http(parts)):
            raise ConfigError(f"{name}: {item!r} must be an https URL (http only on loopback)")
        out.append(item.rstrip("/"))
    return tuple(out)


def _smart(env: Mapping[str, str], public_base_url: str | None) -> dict:
    """SMART launch settings; configured means a client id, and then everything it needs."""
    client_id = (env.get("CDS_SMART_CLIENT_ID") or "").strip() or None
    issuers = _issuers(env, "CDS_SMART_ALLOWED_ISSUERS")
    secret = env.get("CDS_SECRET_KEY") or None
    if client_id:
        if not issuers:
            raise ConfigError("CDS_SMART_CLIENT_ID is set: CDS_SMART_ALLOWED_ISSUERS is required")
        if not public_base_url:
            raise ConfigError("CDS_SMART_CLIENT_ID is set: CDS_PUBLIC_BASE_URL is required")
        if secret is None:
            raise ConfigError("CDS_SMART_CLIENT_ID is set: CDS_SECRET_KEY is required")
    if secret is not None and len(secret) < 32:
        raise ConfigError("CDS_SECRET_KEY must be at least 32 characters")
    return {"smart_client_id": client_id, "smart_allowed_issuers": issuers, "secret_key": secret}

def _url(env: Mapping[str, str], name: str) -> str | None:
    urls = _urls(env, name)
    return urls[0] if urls else None


def _urls(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """One http(s) URL without a query, or several separated by commas."""
    out = []
    for item in (env.get(name) or "").split(","):
        raw = item.strip()
        if not raw:
            continue
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ConfigError(
                f"{name} must be an http(s) URL without a query (or several, comma-separated), "
                f"not {raw!r}"
            )
        out.append(raw.rstrip("/"))
    return tuple(dict.fromkeys(out))


def _prefixes(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma- or space-separated http(s) URL prefixes, each with a host."""
    out = []
    for item in (env.get(name) or "").replace(",", " ").split():
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{name} entries must be http(s) URL prefixes, not {item!r}")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ConfigError(f"{name} entries hold no credentials, query or fragment: {item!r}")
        out.append(item)
    return tuple(out)


def _redis_url(env: Mapping[str, str]) -> str | None:
    raw = (env.get("REDIS_URL") or "").strip()
    if raw and urlsplit(raw).scheme not in ("redis", "rediss", "unix"):
        # not echoed: it may hold a password
        raise ConfigError("REDIS_URL must be a redis://, rediss:// or unix:// URL")
    return raw or None


def _token(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip()
    if raw and len(raw) < 16:
        raise ConfigError(f"{name} must be at least 16 characters")  # not echoed: a secret
    return raw or None


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _number(env, name, default, minimum=0)
    if value != int(value) or value > 65535:
        raise ConfigError(f"{name} must be a TCP port (0-65535), not {env.get(name)!r}")
    return int(value)


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    migrate_on_start: bool = True
    auth_disabled: bool = False
    allow_insecure_bind: bool = False
    trusted_issuers_file: str | None = None
    public_base_url: str | None = None
    # Further base URLs of CDS_PUBLIC_BASE_URL (comma-separated) the service is also reached
    # by, e.g. http://127.0.0.1:8080 beside http://localhost:8080: each is a JWT `aud` accepted.
    alternate_base_urls: tuple[str, ...] = ()
    max_body_bytes: int = 5 * 1024 * 1024
    fhir_budget_s: float = 3.0
    fhir_connect_timeout_s: float = 1.0
    fhir_max_pages: int = 10
    fhir_max_response_bytes: int = 10 * 1024 * 1024
    fhir_max_workers: int = 8
    cors_origin: str = "*"
    guideline_profile: str = "default"
    # SMART on FHIR launch of the history page (off without a client id).
    smart_client_id: str | None = None
    smart_allowed_issuers: tuple[str, ...] = ()
    secret_key: str | None = None  # signs the session cookie and encrypts session data
    # prometheus-client's multiprocess directory (gunicorn workers); None: in-process metrics.
    metrics_multiproc_dir: str | None = None
    # `cds-service serve` (gunicorn); for 2 cores: 2 processes x 16 threads. Calls are
    # I/O-bound while they wait for FHIR: with 4 threads, 16 callers of a 3 s FHIR server
    # made prefetch-only calls wait 4.5 s; with 16, 7 ms (bench/faults.py, README).
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    threads: int = 16
    graceful_timeout_s: float = 20.0
    # `cds-service serve` switches this on in its workers (not an environment setting):
    # issued-card records are written in batches by a background thread (store.py).
    record_cards_in_background: bool = False
    # `cds-service serve` switches this off in its workers: start-up warnings (authentication)
    # are said once, by the master, not once per worker.
    startup_notices: bool = True
    redis_url: str | None = None  # JWT replay store shared by workers; the database if unset
    fhir_allowlist: tuple[str, ...] = ()  # fhirServer URL prefixes; () = the default guard
    max_json_depth: int = 64
    max_draft_orders: int = 100
    max_prefetch_entries: int = 5000
    # Bounded waits on the stores (contract §6): database connect, statement and pool wait,
    # Redis connect/read; request threads per worker that may wait on the database at once;
    # issued-card rows kept in memory while the database is away.
    db_connect_timeout_s: float = 2.0
    db_statement_timeout_s: float = 2.0
    db_pool_timeout_s: float = 0.5
    store_max_waiters: int = 4
    redis_timeout_s: float = 1.0
    card_queue_rows: int = 50_000
    # FHIR isolation: calls per worker gathering from one fhirServer host at once, GETs in
    # flight per host, the DNS/SSRF check's pool and time limit, and the FHIR response bytes
    # one worker holds at once.
    fhir_max_calls_per_host: int = 8
    fhir_max_gets_per_host: int = 8
    fhir_dns_timeout_s: float = 1.0
    fhir_max_held_bytes: int = 32 * 1024 * 1024
    # The /preview page: None = on exactly when authentication is disabled.
    preview: bool | None = None
    # Tests switch this on: every response is checked against the CDS Hooks response schema.
    validate_responses: bool = False
    # Living with it (contract §7): client profiles, snooze window, analytics page token.
    clients_file: str | None = None
    snooze_days: int = 30
    analytics_token: str | None = None

    @property
    def public_base_urls(self) -> tuple[str, ...]:
        """Every configured public base URL, the first one (used in links) first."""
        return (self.public_base_url, *self.alternate_base_urls) if self.public_base_url else ()

    @property
    def smart_enabled(self) -> bool:
        return self.smart_client_id is not None

    def __post_init__(self) -> None:
        from .guideline import PROFILES

        if self.guideline_profile not in PROFILES:
            raise ConfigError(
                f"CDS_GUIDELINE_PROFILE must be one of {', '.join(PROFILES)}, "
                f"not {self.guideline_profile!r}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            **_smart(env, _url(env, "CDS_PUBLIC_BASE_URL")),
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            migrate_on_start=_flag(env, "CDS_DB_MIGRATE", True),
            auth_disabled=_flag(env, "CDS_AUTH_DISABLED", False),
            allow_insecure_bind=_flag(env, "CDS_ALLOW_INSECURE_BIND", False),
            trusted_issuers_file=env.get("CDS_TRUSTED_ISSUERS_FILE") or None,
            public_base_url=_url(env, "CDS_PUBLIC_BASE_URL"),
            alternate_base_urls=_urls(env, "CDS_PUBLIC_BASE_URL")[1:],
            max_body_bytes=int(_number(env, "CDS_MAX_BODY_BYTES", 5 * 1024 * 1024, minimum=1024)),
            fhir_budget_s=_number(env, "CDS_FHIR_BUDGET_S", 3.0, minimum=0.05),
            fhir_connect_timeout_s=_number(env, "CDS_FHIR_CONNECT_TIMEOUT_S", 1.0, minimum=0.01),
            fhir_max_pages=int(_number(env, "CDS_FHIR_MAX_PAGES", 10, minimum=1)),
            fhir_max_response_bytes=int(
                _number(env, "CDS_FHIR_MAX_RESPONSE_BYTES", 10 * 1024 * 1024, minimum=1024)
            ),
            fhir_max_workers=int(_number(env, "CDS_FHIR_MAX_WORKERS", 8, minimum=1)),
            cors_origin=env.get("CDS_CORS_ORIGIN") or "*",
            guideline_profile=env.get("CDS_GUIDELINE_PROFILE") or "default",
            metrics_multiproc_dir=(env.get("PROMETHEUS_MULTIPROC_DIR") or "").strip() or None,
            host=env.get("HOST") or "127.0.0.1",
            port=_port(env, "PORT", 8080),
            workers=int(_number(env, "WEB_CONCURRENCY", 2, minimum=1)),
            threads=int(_number(env, "WEB_THREADS", 16, minimum=1)),
            graceful_timeout_s=_number(env, "CDS_GRACEFUL_TIMEOUT_S", 20.0, minimum=1),
            redis_url=_redis_url(env),
            fhir_allowlist=_prefixes(env, "CDS_FHIR_ALLOWLIST"),
            max_json_depth=int(_number(env, "CDS_MAX_JSON_DEPTH", 64, minimum=8)),
            max_draft_orders=int(_number(env, "CDS_MAX_DRAFT_ORDERS", 100, minimum=1)),
            max_prefetch_entries=int(_number(env, "CDS_MAX_PREFETCH_ENTRIES", 5000, minimum=1)),
            preview=_flag(env, "CDS_PREVIEW", None),  # type: ignore[arg-type]
            db_connect_timeout_s=_number(env, "CDS_DB_CONNECT_TIMEOUT_S", 2.0, minimum=0.1),
            db_statement_timeout_s=_number(env, "CDS_DB_STATEMENT_TIMEOUT_S", 2.0, minimum=0.1),
            db_pool_timeout_s=_number(env, "CDS_DB_POOL_TIMEOUT_S", 0.5, minimum=0.01),
            store_max_waiters=int(_number(env, "CDS_STORE_MAX_WAITERS", 4, minimum=1)),
            redis_timeout_s=_number(env, "CDS_REDIS_TIMEOUT_S", 1.0, minimum=0.05),
            card_queue_rows=int(_number(env, "CDS_CARD_QUEUE_ROWS", 50_000, minimum=0)),
            fhir_max_calls_per_host=int(
                _number(env, "CDS_FHIR_MAX_CALLS_PER_HOST", 8, minimum=1)
            ),
            fhir_max_gets_per_host=int(_number(env, "CDS_FHIR_MAX_GETS_PER_HOST", 8, minimum=1)),
            fhir_dns_timeout_s=_number(env, "CDS_FHIR_DNS_TIMEOUT_S", 1.0, minimum=0.01),
            fhir_max_held_bytes=int(
                _number(env, "CDS_FHIR_MAX_HELD_BYTES", 32 * 1024 * 1024, minimum=1024)
            ),
            clients_file=env.get("CDS_CLIENTS_FILE") or None,
            snooze_days=int(_number(env, "CDS_SNOOZE_DAYS", 30, minimum=1)),
            analytics_token=_token(env, "CDS_ANALYTICS_TOKEN"),
        )

    @property
    def preview_enabled(self) -> bool:
        """The card preview page is a development surface: on by default only without auth."""
        return self.auth_disabled if self.preview is None else self.preview

    @property
    def store_limits(self):  # -> store.StoreLimits (imported late: store imports SQLAlchemy)
        from .store import StoreLimits

        return StoreLimits(
            connect_timeout_s=self.db_connect_timeout_s,
            statement_timeout_s=self.db_statement_timeout_s,
            pool_timeout_s=self.db_pool_timeout_s,
            # never more than half the request threads: the rest keep answering
            max_waiters=min(self.store_max_waiters, max(1, self.threads // 2)),
            card_queue_rows=self.card_queue_rows,
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)
