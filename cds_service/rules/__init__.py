"""Guideline rules: pure functions from typed facts and the guideline profile to findings.

One module per clinical question; each has `evaluate(facts, guideline) -> list[Finding]`, reads
no FHIR JSON and does no I/O, and declares the topics it raises in `TOPICS` (topic.py). `RULES`
is the order cards appear in.
"""

from __future__ import annotations

from collections.abc import Callable

from ..facts.model import Facts
from ..guideline import Guideline
from . import (
    analogs,
    calcium,
    dosing,
    empiric,
    monitoring,
    osteoporosis,
    prevention,
    testing,
    vitamin_d_status,
    vka_vitamin_k,
)
from .findings import Finding
from .topic import Topic

# The rule modules, in the order their cards appear: prescribing safety first.
MODULES = (
    vka_vitamin_k,
    dosing,
    calcium,
    vitamin_d_status,
    analogs,
    monitoring,
    testing,
    osteoporosis,
    prevention,
    empiric,
)
RULES = tuple(module.evaluate for module in MODULES)
# Every topic, declared once in its rule module (`TOPICS`): cards, profiles and tests read these.
TOPICS: tuple[Topic, ...] = tuple(t for module in MODULES for t in module.TOPICS)
TOPIC_IDS: tuple[str, ...] = tuple(t.id for t in TOPICS)
SAFETY_TOPICS: tuple[str, ...] = tuple(t.id for t in TOPICS if t.safety)


def evaluate(
    facts: Facts,
    guideline: Guideline,
    on_error: Callable[[Callable, Exception], None] | None = None,
) -> list[Finding]:
    """Every finding for these facts. A deceased patient gets none (contract §5).

    With `on_error`, a rule that raises is reported to it and the other rules still run (the
    service: one broken rule must not take every card down); without, the error propagates
    (tests)."""
    if facts.patient is not None and facts.patient.deceased:
        return []
    found: list[Finding] = []
    for rule in RULES:
        try:
            found.extend(rule(facts, guideline))
        except Exception as exc:
            if on_error is None:
                raise
            on_error(rule, exc)
    return found
