"""One service call, start to end, with no Flask in sight:
gather (prefetch first, then FHIR) → typed facts → guideline rules → cards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import cards, rules
from .errors import BadRequest, PreconditionFailed
from .facts import Facts, build_facts
from .fhir_client import FhirClient
from .gather import DataUnavailable, GatherSettings, ServerRefused, gather
from .guideline import Guideline
from .registry import ServiceSpec
from .store import Store, describe_error

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a call needs besides the request: built once per process by `create_app`."""

    store: Store
    fhir: FhirClient
    gather_settings: GatherSettings
    guideline: Guideline
    history_link: dict[str, str] | None = None  # CDS Hooks link to the history app, if public


@dataclass(frozen=True)
class Outcome:
    response: dict[str, Any]
    facts: Facts


def cards_for(facts: Facts, guideline: Guideline, patient_id: str) -> list[dict[str, Any]]:
    """Cards for these facts: the rules' findings rendered with `cards/` and `orders`."""
    return [
        cards.render(finding, guideline, patient_id, facts.now)
        for finding in rules.evaluate(facts, guideline)
    ]


def respond(
    spec: ServiceSpec,
    request: dict[str, Any],
    runtime: Runtime,
    now: datetime,
    tenant: str | None = None,
    arrived: float | None = None,
) -> Outcome:
    """`arrived`: `time.monotonic()` when the request arrived; the FHIR budget counts from it."""
    try:
        gathered = gather(
            request, spec.prefetch, runtime.gather_settings, runtime.fhir, arrived=arrived
        )
    except ServerRefused as exc:
        raise BadRequest("fhirServer refused", [exc.reason]) from None
    except DataUnavailable as exc:
        raise PreconditionFailed(
            details=[f"{key}: {reason}" for key, reason in sorted(exc.missing.items())]
        ) from None
    facts = build_facts(request, gathered, service_id=spec.id, now=now, tenant=tenant)
    issued = [
        cards.with_history_link(card, runtime.history_link)
        for card in cards_for(facts, runtime.guideline, request["context"]["patientId"])
    ]
    if issued:
        try:
            runtime.store.record_cards(spec.id, issued, issued_at=now)
        except Exception as exc:  # analytics must never switch decision support off
            log.warning("could not record issued cards", extra={"cause": describe_error(exc)})
    return Outcome(response={"cards": issued}, facts=facts)
