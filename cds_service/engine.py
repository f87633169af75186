"""One service call, start to end, with no Flask in sight:
gather (prefetch first, then FHIR) → typed facts → guideline rules → cards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import cards, profiles, rules
from .clients import ClientProfile, Clients, default_clients
from .errors import BadRequest, PreconditionFailed
from .facts import Facts, build_facts
from .fhir_client import FhirClient
from .gather import DataUnavailable, GatherSettings, ServerRefused, gather
from .guideline import Guideline
from .registry import ServiceSpec
from .store import Store, describe_error, patient_key

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What a call needs besides the request: built once per process by `create_app`."""

    store: Store
    fhir: FhirClient
    gather_settings: GatherSettings
    guideline: Guideline
    history_link: dict[str, str] | None = None  # CDS Hooks link to the history app, if public
    clients: Clients = field(default_factory=default_clients)
    guidelines: dict[str, Guideline] = field(default_factory=dict)  # by profile, for clients
    snooze_days: int = 30
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # tests inject their own

    def guideline_for(self, client: ClientProfile) -> Guideline:
        return self.guidelines.get(client.profile, self.guideline)


@dataclass(frozen=True)
class Outcome:
    response: dict[str, Any]
    facts: Facts | None  # None when the client does not take this hook
    withheld: tuple[tuple[str, str], ...] = ()  # (topic, why): silent, suppressed, deduplicated


def cards_for(facts: Facts, guideline: Guideline, patient_id: str) -> list[dict[str, Any]]:
    """Cards for these facts: the rules' findings rendered with `cards/` and `orders`.

    A rule or a card that fails is logged (its name or topic and the exception type only: a
    message could quote the record) and left out; the other cards still go out, never a 500
    for all of them."""

    def rule_failed(rule: Any, exc: Exception) -> None:
        name = f"{getattr(rule, '__module__', '?')}.{getattr(rule, '__name__', '?')}"
        log.error("a rule failed", extra={"rule": name, "cause": type(exc).__name__})

    out = []
    for finding in rules.evaluate(facts, guideline, on_error=rule_failed):
        try:
            out.append(cards.render(finding, guideline, patient_id, facts.now))
        except Exception as exc:
            log.error(
                "a card could not be built",
                extra={"topic": finding.topic, "cause": type(exc).__name__},
            )
    return out


def respond(
    spec: ServiceSpec,
    request: dict[str, Any],
    runtime: Runtime,
    now: datetime,
    tenant: str | None = None,
    arrived: float | None = None,
    client: ClientProfile | None = None,
) -> Outcome:
    """`arrived`: `time.monotonic()` when the request arrived; the FHIR budget counts from it.
    `client`: the caller's profile (contract §7); the default entry when none is given."""
    client = client or runtime.clients.default
    if spec.hook not in client.hooks:
        return Outcome(response={"cards": []}, facts=None)
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
    patient_id = request["context"]["patientId"]
    issued = [
        cards.with_history_link(card, runtime.history_link)
        for card in cards_for(facts, runtime.guideline_for(client), patient_id)
    ]
    if spec.hook == "patient-view":
        issued = [profiles.with_snooze_reasons(card) for card in issued]
    withheld = _withheld(spec, request, runtime, facts, client, issued, now)
    if issued:
        try:
            runtime.store.record_cards(
                spec.id,
                issued,
                issued_at=now,
                client=client.name,
                patient_key=patient_key(patient_id),
                dispositions=withheld,
            )
        except Exception as exc:  # analytics must never switch decision support off
            log.warning("could not record issued cards", extra={"cause": describe_error(exc)})
    shown = [profiles.present(card, client) for card in issued if card["uuid"] not in withheld]
    return Outcome(
        response={"cards": shown},
        facts=facts,
        withheld=tuple(
            (profiles.topic_of(card) or "unknown", withheld[card["uuid"]])
            for card in issued
            if card["uuid"] in withheld
        ),
    )


def _withheld(
    spec: ServiceSpec,
    request: dict[str, Any],
    runtime: Runtime,
    facts: Facts,
    client: ClientProfile,
    issued: list[dict[str, Any]],
    now: datetime,
) -> dict[str, str]:
    """Card uuid -> why it is recorded but not returned (contract §7): a silent topic of the
    client (shadow mode), a patient-view topic snoozed by feedback, or an order-sign card the
    same user saw at order-select for the same drafts. A store that cannot answer withholds
    nothing: a card shown once more is better than decision support switched off."""
    out: dict[str, str] = {}
    for card in issued:
        if profiles.topic_of(card) in client.silent_topics:
            out[card["uuid"]] = "silent"
    candidates = [card for card in issued if card["uuid"] not in out]
    if not candidates:
        return out
    context = request["context"]
    try:
        if spec.hook == "patient-view":
            out.update(_snoozed(runtime, facts, client, context["patientId"], candidates, now))
        elif client.dedupe_order_sign and spec.hook in ("order-select", "order-sign"):
            out.update(_deduplicated(spec.hook, request, runtime, client, candidates, now))
    except Exception as exc:
        log.warning("could not read snoozes or shown cards", extra={"cause": describe_error(exc)})
    return out


def _snoozed(
    runtime: Runtime,
    facts: Facts,
    client: ClientProfile,
    patient_id: str,
    candidates: list[dict[str, Any]],
    now: datetime,
) -> dict[str, str]:
    snoozable = [
        card
        for card in candidates
        if not profiles.never_snoozed(profiles.topic_of(card) or "", card["indicator"])
    ]
    topics = sorted({profiles.topic_of(card) or "" for card in snoozable})
    active = runtime.store.snoozes(client.name, patient_key(patient_id), topics, now)
    if not active:
        return {}
    # A 25(OH)D result dated after the snooze was set lifts it: the situation has changed.
    newest = max((lvl.when for lvl in facts.vitamin_d_levels if lvl.when), default=None)
    return {
        card["uuid"]: "suppressed"
        for card in snoozable
        if (set_at := active.get(profiles.topic_of(card) or "")) is not None
        and (newest is None or newest <= set_at)
    }


def _deduplicated(
    hook: str,
    request: dict[str, Any],
    runtime: Runtime,
    client: ClientProfile,
    candidates: list[dict[str, Any]],
    now: datetime,
) -> dict[str, str]:
    context = request["context"]
    keys = {
        card["uuid"]: profiles.card_key(
            client.name, context["patientId"], str(context.get("userId", "")), card
        )
        for card in candidates
    }
    if hook == "order-select":
        drafts = profiles.draft_digests(request, selected_only=True)
        runtime.store.remember_shown(
            {key: drafts for key in keys.values()},
            shown_at=now,
            keep=timedelta(hours=profiles.DEDUPE_HOURS),
        )
        return {}
    drafts = profiles.draft_digests(request, selected_only=False)
    since = now - timedelta(hours=profiles.DEDUPE_HOURS)
    seen = runtime.store.shown_since(list(keys.values()), since)
    return {
        uuid: "deduplicated"
        for uuid, key in keys.items()
        if key in seen and seen[key] <= drafts
    }
