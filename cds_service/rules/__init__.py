"""Guideline rules: pure functions from typed facts and the guideline profile to findings.

One module per clinical question; each has `evaluate(facts, guideline) -> list[Finding]`, reads
no FHIR JSON and does no I/O. `RULES` is the order cards appear in.
"""

from __future__ import annotations

from ..facts.model import Facts
from ..guideline import Guideline
from . import (
    calcium,
    dosing,
    empiric,
    monitoring,
    osteoporosis,
    prevention,
    vitamin_d_status,
    vka_vitamin_k,
)
from .findings import Finding

RULES = (
    vka_vitamin_k.evaluate,  # prescribing safety first: interactions, ceilings, calcium
    dosing.evaluate,
    calcium.evaluate,
    vitamin_d_status.evaluate,
    monitoring.evaluate,
    osteoporosis.evaluate,
    prevention.evaluate,
    empiric.evaluate,
)


def evaluate(facts: Facts, guideline: Guideline) -> list[Finding]:
    """Every finding for these facts. A deceased patient gets none (contract §5)."""
    if facts.patient is not None and facts.patient.deceased:
        return []
    return [finding for rule in RULES for finding in rule(facts, guideline)]
