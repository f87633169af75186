"""One service call, start to end, with no Flask in sight:
gather (prefetch first, then FHIR) → typed facts → guideline rules → cards.

The guideline rules and card templates arrive with the guideline issues; until then no rule
exists and every call answers `{"cards": []}` (no placeholder cards).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import BadRequest, PreconditionFailed
from .facts import Facts, build_facts
from .fhir_client import FhirClient
from .gather import DataUnavailable, GatherSettings, ServerRefused, gather
from .registry import ServiceSpec
from .store import Store

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a call needs besides the request: built once per process by `create_app`."""

    store: Store
    fhir: FhirClient
    gather_settings: GatherSettings


@dataclass(frozen=True)
class Outcome:
    response: dict[str, Any]
    facts: Facts


def cards_for(facts: Facts) -> list[dict[str, Any]]:
    """Cards for these facts. A deceased patient gets none (contract §5)."""
    if facts.patient is not None and facts.patient.deceased:
        return []
    return []  # no guideline rule is implemented yet (issues 4 and 5)


def respond(
    spec: ServiceSpec,
    request: dict[str, Any],
    runtime: Runtime,
    now: datetime,
    tenant: str | None = None,
) -> Outcome:
    try:
        gathered = gather(request, spec.prefetch, runtime.gather_settings, runtime.fhir)
    except ServerRefused as exc:
        raise BadRequest("fhirServer refused", [exc.reason]) from None
    except DataUnavailable as exc:
        raise PreconditionFailed(
            details=[f"{key}: {reason}" for key, reason in sorted(exc.missing.items())]
        ) from None
    facts = build_facts(request, gathered, service_id=spec.id, now=now, tenant=tenant)
    cards = cards_for(facts)
    if cards:
        try:
            runtime.store.record_cards(spec.id, cards, issued_at=now)
        except Exception:  # analytics must never switch decision support off
            log.exception("could not record issued cards")
    return Outcome(response={"cards": cards}, facts=facts)
