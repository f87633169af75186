"""Every fixture patient through every service, compared with `fixtures/expected.json`.

One place for the comparison, used by `cds-service check` and by the test suite, so the two
cannot disagree. Calls go through the real HTTP edge of an in-process app (auth off, an
in-memory store, every response checked against the CDS Hooks response schema).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import fixtures
from .config import Settings
from .guideline import PROFILES


@dataclass(frozen=True)
class Result:
    patient: str
    profile: str
    service: str
    expected: tuple[str, ...] | None  # None: expected.json says nothing for this call
    actual: tuple[str, ...] | None  # None: the call failed (see `error`)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.expected is not None
            and self.actual is not None
            and sorted(self.expected) == sorted(self.actual)
        )


def planned(
    names: Iterable[str] | None = None, profiles: Iterable[str] | None = None
) -> list[tuple[str, str, str]]:
    """(patient, profile, service) triples to run: the default profile always, others where
    expected.json states them (or where asked for explicitly)."""
    expected = fixtures.expectations()
    wanted = tuple(profiles) if profiles else None
    out = []
    for name in names or fixtures.names():
        entry = expected.get(name, {})
        for profile in wanted or PROFILES:
            if wanted is None and profile != "default" and profile not in entry:
                continue
            out.extend((name, profile, service) for service in fixtures.SERVICE_IDS)
    return out


def _app(profile: str):
    from . import create_app

    return create_app(
        Settings(
            database_url="sqlite://",
            auth_disabled=True,
            startup_notices=False,  # no network caller: the auth-off warning would mislead
            validate_responses=True,
            guideline_profile=profile,
        )
    )


def run(
    names: Iterable[str] | None = None,
    profiles: Iterable[str] | None = None,
    *,
    mode: str = "prefetch",
    fhir_server: str | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run the planned calls; `mode`/`fhir_server` as in `Fixture.request`."""
    expected = fixtures.expectations()
    apps: dict[str, Any] = {}
    results = []
    try:
        for name, profile, service in planned(names, profiles):
            if profile not in apps:
                apps[profile] = _app(profile)
            client = apps[profile].test_client()
            stated = expected.get(name, {}).get(profile, {}).get(service)
            body = fixtures.load(name).request(service, mode, fhir_server=fhir_server)
            reply = client.post(f"/cds-services/{service}", json=body)
            payload = reply.get_json(silent=True) or {}
            if reply.status_code == 200:
                topics = tuple(
                    card.get("source", {}).get("topic", {}).get("code", "?")
                    for card in payload.get("cards", [])
                )
                result = Result(name, profile, service, _tuple(stated), topics)
            else:
                error = f"HTTP {reply.status_code}: {payload.get('error', '')}"
                result = Result(name, profile, service, _tuple(stated), None, error)
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        for app in apps.values():
            runtime = app.extensions["vitd.runtime"]
            runtime.fhir.close()
            runtime.store.dispose()
    return results


def _tuple(value: Any) -> tuple[str, ...] | None:
    return tuple(value) if isinstance(value, list) else None
