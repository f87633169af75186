"""`vitd-active-analog`: an active vitamin D analog drafted for a patient whose latest valid
25(OH)D is deficient (contract §4).

Calcitriol, alfacalcidol, paricalcitol and doxercalciferol act without renal activation and do
not raise 25(OH)D, whatever the analog is for (CKD, dialysis, hypoparathyroidism): the low level
is corrected with cholecalciferol as well (KDIGO 2017: nutritional vitamin D for low 25(OH)D in
CKD G3a-G5D too). Information: the deficiency regimen for the patient's age as a create; the
analog draft is never deleted. order-select / order-sign only.
"""

from __future__ import annotations

from ..facts.model import DrugClass, Facts
from ..guideline import Guideline
from . import common, vitamin_d_status
from .findings import Finding, Proposal
from .topic import Topic

TOPIC = "vitd-active-analog"
TOPICS = (Topic(TOPIC),)


def evaluate(facts: Facts, g: Guideline) -> list[Finding]:
    if not g.enabled(TOPIC) or facts.hook == "patient-view":
        return []
    analogs = [d for d in common.focus_drafts(facts) if d.has(DrugClass.ACTIVE_VITAMIN_D_ANALOG)]
    if not analogs:
        return []
    level = common.latest_valid(facts, within_days=g.window_days("status_level_months"))
    if level is None or not common.below(level, g.level("deficiency_below_ng_ml")):
        return []
    regimen = common.regimen(facts, g)
    calcium_watch = common.needs_calcium_watch(facts, g)
    proposals: tuple[Proposal, ...] = ()
    if regimen is not None and regimen.offered and not calcium_watch:
        proposals = vitamin_d_status.regimen_proposals(facts, regimen, g)
    cited = g.levels["deficiency_below_ng_ml"]
    data = {
        "analogs": common.describe_all(analogs),
        "level": vitamin_d_status.level_data(level),
        "threshold": cited.value,
        "threshold_source": g.citation(cited.cite).short,
        "regimen": regimen,
        "band": common.band(facts, g),
        "form": common.dose_form(facts, g),
        "calcium_watch": calcium_watch,
        "on_file": common.describe_all(common.vitamin_d_products(facts.medications)),
    }
    return [Finding(TOPIC, "info", g.topics[TOPIC].cite, data, proposals)]
