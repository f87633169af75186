"""What a rule returns: plain values naming the topic, the data used, the guideline applied and
any orders to propose. No text and no FHIR here: card text comes from `cards/`, FHIR resources
from `cds_service/orders.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..guideline import Schedule

Indicator = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class MedicationOrder:
    """A cholecalciferol order to create; `starts_after_weeks` delays a maintenance dose.
    `form`: "solid" (tablets, capsules) or "liquid" (oral drops, children under 4). Rules
    propose one only when `products.for_dose` finds a product that gives the dose exactly."""

    schedule: Schedule
    starts_after_weeks: int | None = None
    form: str = "solid"


@dataclass(frozen=True)
class LabOrder:
    """A laboratory test to order; `lab` is a key of knowledge/orderables.json `labs`.

    Due on or after `due_in_days`; with `within_days`, due between today and that many days on
    (an INR check "within a week").
    """

    lab: str
    due_in_days: int
    within_days: int | None = None


@dataclass(frozen=True)
class Create:
    order: MedicationOrder | LabOrder


@dataclass(frozen=True)
class Delete:
    """Remove a draft order (order-select / order-sign) by its id."""

    resource_type: str
    resource_id: str
    name: str


Action = Create | Delete


@dataclass(frozen=True)
class Proposal:
    """One suggestion: its actions are applied together; `key` picks the label template."""

    key: str
    actions: tuple[Action, ...]
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    topic: str
    indicator: Indicator
    cite: str  # key of the guideline's [citations]: the card's source
    data: Mapping[str, Any]  # the values the card text names
    proposals: tuple[Proposal, ...] = ()
