"""Contract §5 "Reading the record", rule by rule (issue 15, item 4).

Each table row is FHIR JSON in, through `build_facts` (the service's own path), and the facts
or the topics that come out; `test_*_through_http` tests repeat some rows as whole calls.
"""

from __future__ import annotations

import json

import pytest

from cds_service.engine import cards_for
from cds_service.facts.model import ConditionCategory, DrugClass

from . import builders as b
from .rule_facts import DEFAULT, condition, days_ago, facts, level, warfarin

INTERACTION = "vka-vitamin-k-interaction"
GTS = "http://terminology.hl7.org/CodeSystem/v3-GTSAbbreviation"


def topics(f) -> set[str]:
    return {c["source"]["topic"]["code"] for c in cards_for(f, DEFAULT, b.PATIENT_ID)}


def k2(*, mid: str = "k2", status: str = "active", intent: str = "order") -> dict:
    med = b.medication_request(
        "1234", "Menaquinone-7 100 MCG Oral Capsule", mid=mid, status=status, dose=1, unit="{cap}"
    )
    med["intent"] = intent
    return med


def vka(*, mid: str = "w1", status: str = "active", intent: str = "order") -> dict:
    med = warfarin(mid=mid, status=status)
    med["intent"] = intent
    return med


def statement(order: dict, status: str, **extra) -> dict:
    out = {k: v for k, v in order.items() if k not in ("intent", "dosageInstruction")}
    out.update(resourceType="MedicationStatement", status=status, **extra)
    if "dosageInstruction" in order:
        out["dosage"] = order["dosageInstruction"]
    return out


# --- which MedicationRequests and MedicationStatements count ---------------------------------

@pytest.mark.parametrize(
    ("intent", "counts"),
    [
        ("order", True),
        ("original-order", True),
        ("reflex-order", True),
        ("filler-order", True),
        ("instance-order", True),
        ("plan", False),
        ("proposal", False),
        ("option", False),
    ],
)
def test_a_medication_request_counts_by_its_intent(intent, counts):
    f = facts(meds=[vka(intent=intent), k2()])
    assert bool(f.medications and any(m.has(DrugClass.VKA) for m in f.medications)) is counts
    assert (INTERACTION in topics(f)) is counts


@pytest.mark.parametrize(
    ("status", "counts"),
    [("active", True), ("on-hold", True), ("stopped", False), ("completed", False),
     ("cancelled", False), ("entered-in-error", False), ("draft", False)],
)
def test_a_vka_on_hold_still_meets_a_drafted_vitamin_k(status, counts):
    f = facts(meds=[vka(status=status)], drafts=[k2(mid="dk", status="draft")], hook="order-sign")
    assert (INTERACTION in topics(f)) is counts


def test_a_vka_on_hold_counts_as_on_file_and_keeps_its_status():
    f = facts(meds=[vka(status="on-hold")])
    assert [(m.status, m.has(DrugClass.VKA)) for m in f.medications] == [("on-hold", True)]
    assert f.past_medications == ()


def test_only_a_vka_on_hold_counts_not_other_products_on_hold():
    f = facts(meds=[vka(), k2(status="on-hold")])
    assert INTERACTION not in topics(f)
    assert [m.status for m in f.past_medications] == ["on-hold"]


@pytest.mark.parametrize(
    ("status", "period", "counts"),
    [
        ("active", None, True),
        ("intended", None, True),
        ("active", {"start": days_ago(60), "end": days_ago(-30)}, True),  # ends in the future
        ("active", {"start": days_ago(60), "end": days_ago(0)}, True),  # ends today
        ("active", {"start": days_ago(60), "end": days_ago(2)}, False),  # ended
        ("intended", {"end": days_ago(10)}, False),
        ("completed", None, False),
        ("stopped", None, False),
        ("not-taken", None, False),
        ("entered-in-error", None, False),
    ],
)
def test_a_medication_statement_counts_while_active_or_intended_and_not_ended(status, period, counts):
    extra = {"effectivePeriod": period} if period else {}
    f = facts(meds=[vka()], statements=[statement(k2(), status, **extra)])
    assert any(m.has_vitamin_k for m in f.medications) is counts
    assert (INTERACTION in topics(f)) is counts


# --- drafts ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("subject", "counts"),
    [(f"Patient/{b.PATIENT_ID}", True), (None, True), ("Patient/someone-else", False)],
)
@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_drafts_for_another_patient_are_ignored(hook, subject, counts):
    draft = k2(mid="dk", status="draft")
    if subject:
        draft["subject"] = {"reference": subject}
    else:
        del draft["subject"]
    f = facts(meds=[vka()], drafts=[draft], hook=hook)
    assert bool(f.drafts) is counts
    assert (INTERACTION in topics(f)) is counts


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_a_vka_and_a_vitamin_k_product_drafted_together_interact(hook):
    drafts = [vka(mid="dw", status="draft"), k2(mid="dk", status="draft")]
    assert INTERACTION in topics(facts(drafts=drafts, hook=hook))


def test_order_select_reads_only_the_selected_drafts():
    drafts = [vka(mid="dw", status="draft"), k2(mid="dk", status="draft")]
    f = facts(drafts=drafts, hook="order-select", selections=["MedicationRequest/dk"],
              meds=[k2(mid="k2-on-file")])
    assert INTERACTION in topics(f)  # the selected K2 meets the drafted warfarin
    alone = facts(drafts=[k2(mid="dk", status="draft")], hook="order-select",
                  selections=["MedicationRequest/dk"])
    assert INTERACTION not in topics(alone)


# --- dose and timing -------------------------------------------------------------------------

def d3(dosage: dict) -> dict:
    med = b.medication_request("199362", "Cholecalciferol 1000 UNT Oral Tablet", mid="d3")
    med["dosageInstruction"] = [dosage]
    return med


def qty(value: float, unit: str = "[iU]") -> dict:
    return {"value": value, "unit": unit, "system": b.UCUM, "code": unit}


def daily_iu(dosage: dict) -> float | None:
    (med,) = facts(meds=[d3(dosage)]).medications
    return med.vitamin_d_iu_per_day


@pytest.mark.parametrize(
    ("code", "per_day"),
    [("QD", 1), ("AM", 1), ("PM", 1), ("HS", 1), ("BID", 2), ("TID", 3), ("QID", 4),
     ("QOD", 0.5), ("Q4H", 6), ("Q6H", 4), ("Q8H", 3), ("Q12H", 2), ("WK", 1 / 7), ("MO", 1 / 30)],
)
def test_timing_code_gives_the_administrations_per_day(code, per_day):
    dosage = {"timing": {"code": {"coding": [{"system": GTS, "code": code}]}},
              "doseAndRate": [{"doseQuantity": qty(1000)}]}
    assert daily_iu(dosage) == pytest.approx(1000 * per_day)


def test_timing_repeat_wins_over_timing_code():
    dosage = {"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "wk"},
                         "code": {"coding": [{"system": GTS, "code": "QD"}]}},
              "doseAndRate": [{"doseQuantity": qty(50000)}]}
    assert daily_iu(dosage) == pytest.approx(50000 / 7)


DAILY = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}


@pytest.mark.parametrize(
    ("dosage", "expected"),
    [
        ({"timing": DAILY, "doseAndRate": [{"doseRange": {"low": qty(1000), "high": qty(4000)}}]}, 4000),
        ({"timing": DAILY, "doseQuantity": qty(2000)}, 2000),  # STU3: the dose on the dosage
        ({"timing": DAILY, "doseRange": {"low": qty(1000), "high": qty(3000)}}, 3000),
        ({"timing": DAILY, "doseAndRate": [{"doseQuantity": qty(50, "ug")}]}, 2000),  # 1 µg = 40 IU
        # as needed: at maxDosePerPeriod when given, else at the scheduled dose
        ({"asNeededBoolean": True, "timing": DAILY, "doseAndRate": [{"doseQuantity": qty(1000)}],
          "maxDosePerPeriod": {"numerator": qty(5000), "denominator": {"value": 1, "unit": "d", "system": b.UCUM, "code": "d"}}}, 5000),
        ({"asNeededBoolean": True, "timing": DAILY, "doseAndRate": [{"doseQuantity": qty(1000)}],
          "maxDosePerPeriod": {"numerator": qty(20000), "denominator": {"value": 1, "unit": "wk", "system": b.UCUM, "code": "wk"}}}, 20000 / 7),
        ({"asNeededCodeableConcept": {"text": "when indoors all week"},
          "maxDosePerPeriod": {"numerator": qty(2000), "denominator": {"value": 1, "code": "d"}}}, 2000),
        ({"asNeededBoolean": True, "timing": DAILY, "doseAndRate": [{"doseQuantity": qty(1000)}]}, 1000),
        ({"text": "one tablet daily with food"}, None),  # text only: dose unknown, adds nothing
    ],
    ids=["doseRange-high", "stu3-dose", "stu3-range", "micrograms", "prn-max-per-day",
         "prn-max-per-week", "prn-concept-max", "prn-scheduled", "text-only"],
)
def test_dose_and_timing(dosage, expected):
    got = daily_iu(dosage)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_an_as_needed_ceiling_does_not_become_the_single_dose():
    dosage = {"asNeededBoolean": True, "timing": DAILY, "doseAndRate": [{"doseQuantity": qty(1000)}],
              "maxDosePerPeriod": {"numerator": qty(5000), "denominator": {"value": 1, "code": "d"}}}
    (med,) = facts(meds=[d3(dosage)]).medications
    assert (med.vitamin_d_iu_per_dose, med.vitamin_d_iu_per_day) == (1000, 5000)


def test_a_text_only_dose_still_counts_the_product_as_present():
    k2_text = k2()
    k2_text["dosageInstruction"] = [{"text": "one capsule as directed"}]
    f = facts(meds=[vka(), k2_text])
    (product,) = [m for m in f.medications if m.has_vitamin_k]
    assert product.vitamin_k_ug_per_day is None
    assert INTERACTION in topics(f)


# --- conditions: histories whether resolved or not; states only when current -----------------

def _with_status(cond: dict, clinical: str | None, verification: str | None = None) -> dict:
    if clinical is None:
        cond.pop("clinicalStatus", None)
    else:
        cond["clinicalStatus"]["coding"][0]["code"] = clinical
    if verification:
        cond["verificationStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": verification}]}
    return cond


NEPHROLITHIASIS, FALLS = "95570007", "161898004"
OSTEOPOROSIS, PREGNANCY = "64859006", "77386006"


@pytest.mark.parametrize(
    ("snomed", "category", "clinical", "verification", "counts"),
    [
        (NEPHROLITHIASIS, ConditionCategory.NEPHROLITHIASIS, "active", None, True),
        (NEPHROLITHIASIS, ConditionCategory.NEPHROLITHIASIS, "resolved", None, True),
        (NEPHROLITHIASIS, ConditionCategory.NEPHROLITHIASIS, "inactive", None, True),
        (NEPHROLITHIASIS, ConditionCategory.NEPHROLITHIASIS, "remission", None, True),
        (NEPHROLITHIASIS, ConditionCategory.NEPHROLITHIASIS, "resolved", "refuted", False),
        (NEPHROLITHIASIS, ConditionCategory.NEPHROLITHIASIS, "active", "entered-in-error", False),
        (FALLS, ConditionCategory.FALLS, "resolved", None, True),
        (FALLS, ConditionCategory.FALLS, "inactive", "confirmed", True),
        (OSTEOPOROSIS, ConditionCategory.OSTEOPOROSIS, "active", None, True),
        (OSTEOPOROSIS, ConditionCategory.OSTEOPOROSIS, "recurrence", None, True),
        (OSTEOPOROSIS, ConditionCategory.OSTEOPOROSIS, "relapse", None, True),
        (OSTEOPOROSIS, ConditionCategory.OSTEOPOROSIS, "resolved", None, False),
        (OSTEOPOROSIS, ConditionCategory.OSTEOPOROSIS, "inactive", None, False),
        (PREGNANCY, ConditionCategory.PREGNANCY, "resolved", None, False),
        (PREGNANCY, ConditionCategory.PREGNANCY, "active", "refuted", False),
    ],
)
def test_histories_count_resolved_or_not_and_states_only_while_current(
    snomed, category, clinical, verification, counts
):
    f = facts(conditions=[_with_status(condition(snomed), clinical, verification)])
    assert (category in f.categories) is counts


def test_a_resolved_kidney_stone_history_still_gives_the_stones_warning():
    cond = _with_status(condition(NEPHROLITHIASIS), "resolved")
    calcium = b.medication_request("282465", "Calcium Carbonate 1250 MG Oral Tablet", mid="ca",
                                   status="draft", dose=1, unit="{tbl}")
    f = facts(conditions=[cond], drafts=[calcium], hook="order-sign", levels=[level(35)])
    assert "calcium-kidney-stones" in topics(f)


# --- labs: valueString, components, future results -------------------------------------------

def value_string(text: str, *, days: float = 30) -> dict:
    obs = level(10, days=days, oid=f"vs-{text}")
    del obs["valueQuantity"]
    obs["valueString"] = text
    return obs


@pytest.mark.parametrize(
    ("text", "ng_ml", "comparator", "topic"),
    [
        ("<8 ng/mL", 8.0, "<", "vitd-deficiency"),
        ("< 8 ng/mL", 8.0, "<", "vitd-deficiency"),
        ("12 ng/mL", 12.0, None, "vitd-deficiency"),
        ("> 150 nmol/L", 150 / 2.496, ">", None),
        ("> 150 ng/mL", 150.0, ">", "vitd-high-level"),  # above 150: critical
        (">= 100 ng/mL", 100.0, ">=", None),  # at least 100: not above 100
        ("> 100 ng/mL", 100.0, ">", "vitd-high-level"),  # above 100
        ("12", None, None, "vitd-level-uninterpretable"),  # no unit
        ("low", None, None, "vitd-level-uninterpretable"),
        ("12 furlongs", None, None, "vitd-level-uninterpretable"),
    ],
)
def test_value_string_results(text, ng_ml, comparator, topic):
    f = facts(levels=[value_string(text)])
    (lvl,) = f.vitamin_d_levels
    assert lvl.ng_ml == (pytest.approx(ng_ml) if ng_ml is not None else None)
    assert lvl.comparator == comparator
    found = topics(f)
    if topic:
        assert topic in found
    assert not ({"vitd-deficiency", "vitd-high-level"} - {topic}) & found


def test_the_critical_band_reads_a_greater_than_value_as_above_it():
    cards = cards_for(facts(levels=[value_string("> 150 ng/mL")]), DEFAULT, b.PATIENT_ID)
    assert [c["indicator"] for c in cards if c["source"]["topic"]["code"] == "vitd-high-level"] == ["critical"]


def panel(components: list[dict], *, days: float = 20, status: str = "final") -> dict:
    return {
        "resourceType": "Observation",
        "id": "panel-1",
        "status": status,
        "subject": {"reference": f"Patient/{b.PATIENT_ID}"},
        "code": {"coding": [{"system": b.LOINC, "code": "24331-1", "display": "Lipid panel"}]},
        "effectiveDateTime": days_ago(days),
        "component": components,
    }


def component(code: str, value: float, unit: str = "ng/mL") -> dict:
    return {"code": {"coding": [{"system": b.LOINC, "code": code}]},
            "valueQuantity": {"value": value, "unit": unit, "system": b.UCUM, "code": unit}}


@pytest.mark.parametrize(
    ("components", "status", "expected"),
    [
        ([component("62292-8", 12)], "final", [12.0]),
        ([component("1989-3", 30, "nmol/L")], "amended", [pytest.approx(30 / 2.496)]),
        ([component("2236-8", 12)], "final", []),  # 1,25-dihydroxy: never
        ([component("1990-1", 12)], "final", []),  # D2 only: never
        ([component("62292-8", 12)], "preliminary", []),  # the panel's status counts
        ([component("2093-3", 190, "mg/dL"), component("62292-8", 45)], "final", [45.0]),
        (["junk", {"code": "x"}], "final", []),
    ],
)
def test_a_25ohd_in_a_panel_component_counts_like_its_own_observation(components, status, expected):
    f = facts(levels=[panel(components, status=status)])
    assert [lvl.ng_ml for lvl in f.vitamin_d_levels] == expected
    if expected:
        (lvl,) = f.vitamin_d_levels
        assert lvl.observation_id == "panel-1" and lvl.when is not None


def test_a_deficient_component_gives_the_deficiency_card():
    assert "vitd-deficiency" in topics(facts(levels=[panel([component("62292-8", 12)])]))


@pytest.mark.parametrize(
    ("days_ahead", "counted"),
    [(0, True), (0.5, True), (0.9, True), (1.5, False), (30, False), (400, False)],
)
def test_a_result_dated_after_the_hooks_time_is_ignored_beyond_a_day(days_ahead, counted):
    f = facts(levels=[level(12, days=-days_ahead), level(45, days=200, oid="older")])
    latest = f.vitamin_d_levels[0].ng_ml
    assert latest == (12.0 if counted else 45.0)
    assert ("vitd-deficiency" in topics(f)) is counted


# --- no birthDate ----------------------------------------------------------------------------

def test_no_birth_date_still_gives_the_deficiency_card_naming_the_unknown_age_without_regimen():
    f = facts(age=None, levels=[level(12)])
    assert f.patient.age_years is None
    (card,) = [c for c in cards_for(f, DEFAULT, b.PATIENT_ID)
               if c["source"]["topic"]["code"] == "vitd-deficiency"]
    assert "birth date" in card["detail"].lower()
    assert "suggestions" not in card


# --- through HTTP ----------------------------------------------------------------------------

def _call(client, service: str, prefetch: dict, drafts: list[dict] | None = None) -> set[str]:
    body = b.hook_request(service, prefetch=prefetch, drafts=drafts)
    reply = client.post(f"/cds-services/{service}", data=json.dumps(body),
                        content_type="application/json")
    assert reply.status_code == 200, reply.get_json()
    return {c["source"]["topic"]["code"] for c in reply.get_json()["cards"]}


def _record(**overrides) -> dict:
    record = {key: b.searchset() for key in b.PREFETCH_KEYS}
    record["patient"] = b.patient()
    for key, resources in overrides.items():
        record[key] = b.searchset(*resources)
    return record


def test_on_hold_vka_and_intended_statement_through_http(client):
    record = _record(medicationRequests=[vka(status="on-hold")],
                     medicationStatements=[statement(k2(), "intended")])
    assert INTERACTION in _call(client, "vitamin-d-patient-view", record)


def test_a_planned_vka_and_an_ended_statement_do_not_count_through_http(client):
    record = _record(
        medicationRequests=[vka(intent="plan")],
        medicationStatements=[statement(k2(), "active", effectivePeriod={"end": days_ago(5)})],
    )
    assert INTERACTION not in _call(client, "vitamin-d-patient-view", record)


def test_vka_and_k2_drafted_together_and_another_patients_draft_through_http(client):
    drafts = [vka(mid="dw", status="draft"), k2(mid="dk", status="draft")]
    assert INTERACTION in _call(client, "vitamin-d-order-sign", _record(), drafts)
    theirs = k2(mid="dk", status="draft")
    theirs["subject"] = {"reference": "Patient/someone-else"}
    assert INTERACTION not in _call(client, "vitamin-d-order-sign",
                                    _record(medicationRequests=[vka()]), [theirs])


def test_labs_through_http(client):
    future = level(12, days=-60, oid="future")  # the call's time is the clock's here
    assert "vitd-deficiency" not in _call(client, "vitamin-d-patient-view",
                                          _record(observations=[future, level(45, days=100)]))
    assert "vitd-deficiency" in _call(client, "vitamin-d-patient-view",
                                      _record(observations=[panel([component("62292-8", 12)])]))
    assert "vitd-high-level" in _call(client, "vitamin-d-patient-view",
                                      _record(observations=[value_string("> 150 ng/mL")]))


def test_no_birth_date_through_http(client):
    record = _record(observations=[level(12)])
    record["patient"] = b.patient(birth_date=None)
    assert "vitd-deficiency" in _call(client, "vitamin-d-patient-view", record)
