"""`vka-vitamin-k-interaction`: a vitamin K antagonist together with a vitamin K product.

VKAs: warfarin, acenocoumarol, phenprocoumon, fluindione, phenindione. Vitamin K products: K2
(MK-7, MK-4), K1 supplements, D3 + K2 and calcium/multivitamin combinations with vitamin K.
DOACs and heparins are not VKAs and never count (contract §4).

- Order hooks: a drafted vitamin K product (the selected drafts on order-select) with a VKA on
  file or drafted, or a drafted VKA with a vitamin K product on file or drafted.
- patient-view: both on file.

Warning: remove each drafted vitamin K product (one suggestion; where the product also carried
vitamin D, plain cholecalciferol at the same dose and schedule is created in its place), or go
ahead with an INR check within a week. Phytonadione (K1 alone) at a reversal dose is the VKA
antidote: an info card about INR monitoring, never a suggestion to remove it.
"""

from __future__ import annotations

import re
from functools import cache

from ..facts.model import DrugClass, Facts, Ingredient, Medication, MedicationSource
from ..guideline import Guideline
from ..knowledge import load
from . import common
from .findings import Action, Create, Delete, Finding, LabOrder, Proposal
from .topic import Topic

TOPIC = "vka-vitamin-k-interaction"
TOPICS = (Topic(TOPIC, safety=True),)


@cache
def _reversal_names() -> re.Pattern[str]:
    return re.compile(load("medications")["vitamin_k1_reversal_names"]["regex"], re.IGNORECASE)


def is_reversal(med: Medication, g: Guideline) -> bool:
    """Phytonadione alone at a VKA-reversal dose (>= 1 mg per administration by default).

    The dose is taken from the order, else from the product strength per unit; with neither,
    a product named or coded as the antidote (phytonadione, Mephyton ..., ATC B02BA01) counts
    as reversal, so it is never offered for removal.
    """
    if med.ingredients != frozenset({Ingredient.VITAMIN_K1}) or med.classes:
        return False
    minimum_ug = g.safety_value("phytonadione_reversal_min_mg") * 1000
    if med.vitamin_k_ug_per_dose is not None:
        return med.vitamin_k_ug_per_dose >= minimum_ug
    per_unit = [s.amount for s in med.strengths if s.ingredient.is_vitamin_k]
    if per_unit:
        return sum(per_unit) >= minimum_ug
    knowledge = load("medications")
    atc = knowledge["systems"]["atc"]
    antidote_atc = set(knowledge["vitamin_k1_reversal_names"]["atc"])
    if any(system == atc and code.upper() in antidote_atc for system, code in med.codes):
        return True
    return bool(_reversal_names().search(med.name))


def _involved(facts: Facts) -> tuple[list[Medication], list[Medication]] | None:
    """(VKA products, vitamin K products) when the topic applies to this call, else None."""
    meds = common.unique((*facts.medications, *facts.drafts))
    vkas = [m for m in meds if m.has(DrugClass.VKA)]
    vitamin_k = [m for m in meds if m.has_vitamin_k and not m.has(DrugClass.VKA)]
    if not vkas or not vitamin_k:
        return None
    if facts.hook == "patient-view":
        return vkas, vitamin_k
    focus = {(d.resource_type, d.id) for d in common.focus_drafts(facts)}
    in_focus = [
        m
        for m in (*vkas, *vitamin_k)
        if m.source is MedicationSource.DRAFT and (m.resource_type, m.id) in focus
    ]
    return (vkas, vitamin_k) if in_focus else None


def _remove(
    facts: Facts, g: Guideline, drafted: list[Medication]
) -> tuple[Proposal | None, list[dict]]:
    """Delete each drafted vitamin K product; re-create its vitamin D as plain cholecalciferol
    where a product gives that dose exactly. Creates come first, deletes last: the official
    sandbox applies only a suggestion's first action."""
    creates: list[Action] = []
    deletes: list[Action] = []
    not_replaced = []
    replaced = []
    for med in drafted:
        if med.id is None:
            continue
        deletes.append(Delete(med.resource_type, med.id, med.name))
        if med.has_vitamin_d:
            schedule = common.same_schedule(med, "replace")
            order = common.order_for(facts, g, schedule) if schedule is not None else None
            if order is None:
                not_replaced.append({"name": med.name})
            else:
                creates.append(Create(order))
                replaced.append({"name": med.name, "dose": schedule})
    if not deletes:
        return None, not_replaced
    data = {"replaced": replaced, "count": len(deletes)}
    return Proposal("remove", (*creates, *deletes), data), not_replaced


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    if not g.enabled(TOPIC):
        return []
    found = _involved(facts)
    if found is None:
        return []
    vkas, vitamin_k = found
    reversal = [m for m in vitamin_k if is_reversal(m, g)]
    supplements = [m for m in vitamin_k if not is_reversal(m, g)]
    days = int(g.safety_value("inr_check_within_days"))
    base = {
        "vkas": [common.describe(m) for m in vkas],
        "vka_drafted": any(m.source is MedicationSource.DRAFT for m in vkas),
        "inr_days": days,
        "reversal_min_mg": g.safety_value("phytonadione_reversal_min_mg"),
        "reversal_max_mg": g.safety_value("phytonadione_reversal_max_mg"),
    }
    findings = []
    if supplements:
        drafted = [m for m in supplements if m.source is MedicationSource.DRAFT]
        remove, not_replaced = _remove(facts, g, drafted)
        inr = Proposal("inr", (Create(LabOrder("inr", 0, within_days=days)),), {"days": days})
        proposals = (remove, inr) if remove else (inr,)
        data = {
            **base,
            "products": [common.describe(m) for m in supplements],
            "k_drafted": bool(drafted),
            "not_replaced": not_replaced,
            "calcium_dropped": any(m.has(Ingredient.CALCIUM) for m in drafted),
        }
        findings.append(Finding(TOPIC, "warning", g.topics[TOPIC].cite, data, proposals))
    if reversal:
        data = {**base, "products": [common.describe(m) for m in reversal]}
        cite = g.safety["phytonadione_reversal_min_mg"].cite
        findings.append(Finding(TOPIC, "info", cite, data))
    return findings
