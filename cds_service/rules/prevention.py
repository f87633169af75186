"""`uspstf-primary-prevention`: low-dose vitamin D / calcium drafted for primary prevention.

USPSTF 2018: Grade D against daily <= 400 IU vitamin D and <= 1,000 mg calcium to prevent
fractures in community-dwelling postmenopausal women (taken here as women >= 50), and Grade D
against vitamin D to prevent falls in community-dwelling adults >= 65. Neither applies with
osteoporosis/osteopenia, a fragility fracture, an active systemic glucocorticoid, a deficiency
level or diagnosis, or a fall history (contract §4).
Men >= 65 are covered by the falls statement only, which is about vitamin D: a calcium-only
draft for a man gets no card (USPSTF: insufficient evidence, I).
"""

from __future__ import annotations

from ..facts.model import VITAMIN_D_INGREDIENTS, DrugClass, Facts, Ingredient, Medication
from ..facts.model import ConditionCategory as C
from ..guideline import Guideline
from . import common
from .findings import Delete, Finding, Proposal
from .topic import Topic

TOPIC = "uspstf-primary-prevention"
TOPICS = (Topic(TOPIC),)


def _low_dose(med: Medication, g: Guideline) -> tuple[bool, bool]:
    """(low-dose vitamin D, low-dose calcium) for a draft whose doses are known."""
    vit_d = (
        med.has_vitamin_d
        and med.vitamin_d_iu_per_day is not None
        and med.vitamin_d_iu_per_day <= g.dose("uspstf_max_daily_iu")
    )
    calcium = (
        med.has(Ingredient.CALCIUM)
        and med.calcium_mg_per_day is not None
        and med.calcium_mg_per_day <= g.dose("uspstf_max_calcium_mg")
    )
    return vit_d, calcium


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    if not g.enabled(TOPIC) or facts.hook == "patient-view" or facts.patient is None:
        return []
    age = facts.patient.age_years
    if age is None:
        return []
    woman = facts.patient.sex == "female" and age >= g.age("uspstf_women_from_years")
    older = age >= g.age("uspstf_anyone_from_years")
    if not (woman or older):
        return []
    if common.has(
        facts, C.OSTEOPOROSIS, C.OSTEOPENIA, C.VITAMIN_D_DEFICIENCY, C.FALLS, C.FRAGILITY_FRACTURE
    ):
        return []
    if any(m.has(DrugClass.SYSTEMIC_GLUCOCORTICOID) for m in facts.medications):
        return []  # long-term glucocorticoids: a secondary-prevention question, not USPSTF's
    if common.deficient(facts, g):
        return []
    # A product that carries anything else (vitamin K, a drug) is not a plain supplement here.
    plain = [
        d
        for d in common.focus_drafts(facts)
        if d.ingredients
        and not d.classes
        and d.ingredients <= {Ingredient.CALCIUM, *VITAMIN_D_INGREDIENTS}
    ]
    flagged = []
    for draft in plain:
        vit_d, calcium = _low_dose(draft, g)
        if draft.has_vitamin_d and draft.vitamin_d_iu_per_day is not None and not vit_d:
            continue  # more than 400 IU/day: USPSTF I, not D
        if draft.has(Ingredient.CALCIUM) and draft.calcium_mg_per_day is not None and not calcium:
            continue
        if vit_d or (calcium and woman):
            flagged.append(draft)
    if not flagged:
        return []
    data = {
        "woman": woman,
        "older": older,
        "age": age,
        "drafts": [
            {"name": d.name, "daily_iu": d.vitamin_d_iu_per_day, "calcium_mg": d.calcium_mg_per_day}
            for d in flagged
        ],
        "max_iu": g.dose("uspstf_max_daily_iu"),
        "max_calcium": g.dose("uspstf_max_calcium_mg"),
    }
    deletes = tuple(Delete(d.resource_type, d.id, d.name) for d in flagged if d.id is not None)
    proposals = (Proposal("remove", deletes),) if deletes else ()
    cite = "uspstf2018-fractures" if woman else "uspstf2018-falls"
    return [Finding(TOPIC, "info", cite, data, proposals)]
