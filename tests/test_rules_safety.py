"""Prescribing-safety rules, table-driven, from FHIR resources through the facts to the findings
and rendered cards: vka-vitamin-k-interaction, vitd-high-dose, vitd-ergocalciferol,
vitd-hypercalcemia-risk, calcium-dose-split, calcium-kidney-stones (contract §4)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service import cards, rules
from cds_service.guideline import GuidelineError, _check, _raw, load_guideline
from cds_service.orders import validated
from cds_service.rules import SAFETY_TOPICS

from . import rule_facts
from .builders import (
    LOINC,
    PATIENT_ID,
    RXNORM,
    UCUM,
    condition,
    medication_request,
    vitamin_d,
)

NOW = rule_facts.NOW
SIGN = "vitamin-d-order-sign"
SELECT = "vitamin-d-order-select"
VIEW = "vitamin-d-patient-view"
HOOK = {v: k for k, v in rule_facts.SERVICE.items()}
ATC = "http://www.whocc.no/atc"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"

# Real RxNorm codes and names (../shared/data/rxnorm-sandbox-subset).
WARFARIN = ("855332", "Warfarin Sodium 5 MG Oral Tablet")
COUMADIN = ("855334", "Warfarin Sodium 5 MG Oral Tablet [Coumadin]")
APIXABAN = ("1364445", "apixaban 5 MG Oral Tablet")
DABIGATRAN = ("1037045", "dabigatran etexilate 150 MG Oral Capsule")
D3K2 = ("804617", "Cholecalciferol 1000 UNT / Vitamin K 2 0.09 MG Disintegrating Oral Tablet")
K2 = ("1537458", "Vitamin K 2 0.1 MG Oral Capsule")
K1_1MG = ("1089780", "Vitamin K 1 1 MG Oral Capsule")
MEPHYTON = ("207839", "Vitamin K 1 5 MG Oral Tablet [Mephyton]")
VIACTIV = (
    "1244930",
    "Calcium Carbonate 1250 MG / Cholecalciferol 500 UNT / Vitamin K 0.04 MG Chewable Tablet "
    "[Viactiv Calcium Plus D]",
)
D3_1000 = ("199362", "Cholecalciferol 1000 UNT Oral Tablet")
D3_5000 = ("857466", "Cholecalciferol 5000 UNT Oral Tablet")
D3_10000 = ("248506", "Cholecalciferol 10000 UNT Oral Tablet")
D3_50000 = ("705728", "Cholecalciferol 50000 UNT Oral Capsule")
D2_50000 = ("1367410", "Ergocalciferol 50000 UNT Oral Capsule")
D2_400 = ("199832", "Ergocalciferol 400 UNT Oral Tablet")
CACO3_1250 = ("282465", "Calcium Carbonate 1250 MG Oral Tablet")
CACO3_1500 = ("237420", "Calcium Carbonate 1500 MG Oral Tablet")
CA_CITRATE_950 = ("198538", "Calcium Citrate 950 MG Oral Tablet")
CACO3_D = ("864665", "Calcium Carbonate 1500 MG / Cholecalciferol 1000 UNT Oral Tablet")


def order(
    product: tuple[str, str],
    mid: str,
    *,
    status: str = "active",
    count: float | None = 1,
    iu: float | None = None,
    frequency: int = 1,
    period: float = 1,
    unit: str = "d",
    bounds: tuple[float, str] | None = None,
    doses: int | None = None,
) -> dict[str, Any]:
    """A MedicationRequest of `count` units (tablets) or `iu` IU per administration."""
    resource = medication_request(*product, mid=mid, status=status)
    repeat: dict[str, Any] = {"frequency": frequency, "period": period, "periodUnit": unit}
    if bounds:
        repeat["boundsDuration"] = {
            "value": bounds[0],
            "unit": bounds[1],
            "system": UCUM,
            "code": bounds[1],
        }
    if doses:
        repeat["count"] = doses
    if iu is not None:
        quantity = {"value": iu, "unit": "IU", "system": UCUM, "code": "[iU]"}
    else:
        quantity = {"value": count, "unit": "tablet"}
    resource["dosageInstruction"] = [
        {"timing": {"repeat": repeat}, "doseAndRate": [{"doseQuantity": quantity}]}
    ]
    return resource


def draft(product: tuple[str, str], mid: str, **kw: Any) -> dict[str, Any]:
    return order(product, mid, status="draft", **kw)


def text_only(text: str, mid: str, *, status: str = "active", mg: float | None = None) -> dict:
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "medicationCodeableConcept": {"text": text},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
    }
    if mg is not None:
        resource["dosageInstruction"] = [
            {
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": mg, "unit": "mg", "code": "mg"}}],
            }
        ]
    return resource


def atc_coded(code: str, display: str, mid: str, *, status: str = "active") -> dict:
    resource = text_only(display, mid, status=status)
    resource["medicationCodeableConcept"] = {"coding": [{"system": ATC, "code": code}]}
    return resource


def contained_k2(mid: str, *, status: str = "draft") -> dict:
    """A draft whose product is a contained Medication with an MK-7 ingredient (no text)."""
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": status,
        "intent": "order",
        "contained": [
            {
                "resourceType": "Medication",
                "id": "med1",
                "code": {"text": "Bone health supplement"},
                "ingredient": [
                    {
                        "itemCodeableConcept": {"text": "menaquinone-7"},
                        "strength": {
                            "numerator": {"value": 100, "unit": "mcg", "code": "ug"},
                            "denominator": {"value": 1, "unit": "capsule"},
                        },
                    }
                ],
            }
        ],
        "medicationReference": {"reference": "#med1"},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "capsule"}}],
            }
        ],
    }


def dstu2_order(product: tuple[str, str], mid: str) -> dict:
    """A DSTU2 MedicationOrder draft (the sandbox's default FHIR server is DSTU2)."""
    return {
        "resourceType": "MedicationOrder",
        "id": mid,
        "status": "draft",
        "patient": {"reference": f"Patient/{PATIENT_ID}"},
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": product[0], "display": product[1]}],
            "text": product[1],
        },
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseQuantity": {"value": 1, "unit": "tablet"},
            }
        ],
    }


def statement(product: tuple[str, str], sid: str) -> dict:
    return {
        "resourceType": "MedicationStatement",
        "id": sid,
        "status": "active",
        "medicationCodeableConcept": {
            "coding": [{"system": RXNORM, "code": product[0], "display": product[1]}],
            "text": product[1],
        },
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "dosage": [
            {
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
            }
        ],
    }


def calcium_level(value: float, unit: str = "mg/dL", when: str = "2026-11-01") -> dict:
    code = "17861-6" if unit == "mg/dL" else "2000-8"
    return {
        "resourceType": "Observation",
        "id": f"ca-{value}",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{PATIENT_ID}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def icd10(code: str, display: str, cid: str) -> dict:
    resource = condition("0", display, cid=cid)
    resource["code"] = {"coding": [{"system": ICD10, "code": code, "display": display}]}
    return resource


STONES = icd10("Z87.442", "Personal history of urinary calculi", "stones")
SARCOIDOSIS = condition("31541009", "Sarcoidosis", cid="sarc")
PHPT = condition("36348003", "Primary hyperparathyroidism", cid="phpt")
HYPERCALCAEMIA = icd10("E83.52", "Hypercalcemia", "hyperca")


def facts_for(
    service: str = SIGN,
    *,
    on_file: list[dict] = (),  # type: ignore[assignment]
    drafts: list[dict] = (),  # type: ignore[assignment]
    observations: list[dict] = (),  # type: ignore[assignment]
    conditions: list[dict] = (),  # type: ignore[assignment]
    selections: list[str] | None = None,
):
    return rule_facts.facts(
        hook=HOOK[service],
        age=66,
        meds=[r for r in on_file if r["resourceType"] != "MedicationStatement"],
        statements=[r for r in on_file if r["resourceType"] == "MedicationStatement"],
        drafts=drafts,
        levels=observations,
        conditions=conditions,
        selections=selections,
    )


def cards_for(topic: str, service: str = SIGN, **kw: Any) -> list[dict]:
    """Rendered cards of `topic` (every card rendered, so templates are exercised too)."""
    guideline = load_guideline()
    facts = facts_for(service, **kw)
    rendered = [
        cards.render(f, guideline, PATIENT_ID, NOW) for f in rules.evaluate(facts, guideline)
    ]
    for card in rendered:
        assert len(card["summary"]) <= 140
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if "resource" in action:
                    validated(action["resource"])
                    assert action["resource"]["subject"]["reference"] == f"Patient/{PATIENT_ID}"
    return [c for c in rendered if c["source"]["topic"]["code"] == topic]


def actions(card: dict) -> list[list[str]]:
    """Each suggestion as a list of 'delete <resourceId>' / 'create <type> <code>'."""
    out = []
    for suggestion in card.get("suggestions", []):
        row = []
        for action in suggestion["actions"]:
            if action["type"] == "delete":
                row.append(f"delete {action['resourceId']}")
            else:
                resource = action["resource"]
                concept = resource.get("medicationCodeableConcept") or resource["code"]
                row.append(f"create {resource['resourceType']} {concept['coding'][0]['code']}")
        out.append(row)
    return out


# --- vka-vitamin-k-interaction -------------------------------------------------------------

VKA = "vka-vitamin-k-interaction"
INR = ["create ServiceRequest 6301-6"]


@pytest.mark.parametrize(
    "case,service,on_file,drafts,expected",
    [
        (
            "D3+K2 drafted for warfarin: remove and replace by plain D3, or INR",
            SIGN,
            [order(WARFARIN, "w1")],
            [draft(D3K2, "dk")],
            [
                (
                    "warning",
                    [["create MedicationRequest 199362", "delete MedicationRequest/dk"], INR],
                )
            ],
        ),
        (
            "K2 alone drafted for Coumadin: remove, or INR",
            SIGN,
            [order(COUMADIN, "w1")],
            [draft(K2, "k2")],
            [("warning", [["delete MedicationRequest/k2"], INR])],
        ),
        (
            "order-select works the same",
            SELECT,
            [order(WARFARIN, "w1")],
            [draft(K2, "k2")],
            [("warning", [["delete MedicationRequest/k2"], INR])],
        ),
        (
            "calcium + D3 + vitamin K (Viactiv) drafted: no product gives D3 500 IU exactly, so "
            "the draft is removed and its vitamin D named for re-ordering",
            SIGN,
            [order(WARFARIN, "w1")],
            [draft(VIACTIV, "via", frequency=2)],
            [("warning", [["delete MedicationRequest/via"], INR])],
        ),
        (
            "K2 in a contained Medication, warfarin by ATC only",
            SIGN,
            [atc_coded("B01AA03", "", "w1")],
            [contained_k2("ck")],
            [("warning", [["delete MedicationRequest/ck"], INR])],
        ),
        (
            "VKA by text only (Sintrom)",
            SIGN,
            [text_only("Sintrom 4 mg", "a1")],
            [draft(K2, "k2")],
            [("warning", [["delete MedicationRequest/k2"], INR])],
        ),
        (
            "phenprocoumon by ATC B01AA04",
            SIGN,
            [atc_coded("B01AA04", "", "p1")],
            [draft(K2, "k2")],
            [("warning", [["delete MedicationRequest/k2"], INR])],
        ),
        (
            "DSTU2 MedicationOrder draft: delete names MedicationOrder/<id>",
            SIGN,
            [order(WARFARIN, "w1")],
            [dstu2_order(K2, "mo1")],
            [("warning", [["delete MedicationOrder/mo1"], INR])],
        ),
        (
            "warfarin drafted for a patient on K2 (statement on file): INR only",
            SIGN,
            [statement(K2, "s1")],
            [draft(WARFARIN, "w2")],
            [("warning", [INR])],
        ),
        (
            "both drafted: the vitamin K draft is removed",
            SIGN,
            [],
            [draft(WARFARIN, "w2"), draft(D3K2, "dk")],
            [
                (
                    "warning",
                    [["create MedicationRequest 199362", "delete MedicationRequest/dk"], INR],
                )
            ],
        ),
        (
            "both active on patient-view: INR only",
            VIEW,
            [order(WARFARIN, "w1"), statement(D3K2, "s1")],
            [],
            [("warning", [INR])],
        ),
        (
            "phytonadione 5 mg (Mephyton) drafted for warfarin: info, never a delete",
            SIGN,
            [order(WARFARIN, "w1")],
            [draft(MEPHYTON, "ph")],
            [("info", [])],
        ),
        (
            "phytonadione 1 mg capsule: at the reversal threshold, info",
            SIGN,
            [order(WARFARIN, "w1")],
            [draft(K1_1MG, "ph")],
            [("info", [])],
        ),
        (
            "phytonadione 2.5 mg by text and dose",
            SIGN,
            [order(WARFARIN, "w1")],
            [text_only("Phytonadione oral", "ph", status="draft", mg=2.5)],
            [("info", [])],
        ),
        (
            "phytonadione injection with no dose or strength: reversal, info",
            SIGN,
            [order(WARFARIN, "w1")],
            [text_only("AquaMephyton injection", "ph", status="draft")],
            [("info", [])],
        ),
        (
            "K1 0.5 mg by dose is a supplement: warning",
            SIGN,
            [order(WARFARIN, "w1")],
            [text_only("Vitamin K1 (phylloquinone)", "k1", status="draft", mg=0.5)],
            [("warning", [["delete MedicationRequest/k1"], INR])],
        ),
        (
            "reversal and supplement together: one warning and one info card",
            SIGN,
            [order(WARFARIN, "w1")],
            [draft(MEPHYTON, "ph"), draft(K2, "k2")],
            [("warning", [["delete MedicationRequest/k2"], INR]), ("info", [])],
        ),
    ],
)
def test_vka_vitamin_k_fires(case, service, on_file, drafts, expected):
    found = cards_for(VKA, service, on_file=on_file, drafts=drafts)
    assert [(c["indicator"], actions(c)) for c in found] == expected, case
    for card in found:
        if card["indicator"] == "warning":
            assert {r["code"] for r in card["overrideReasons"]} >= {
                "inr-monitored",
                "stable-on-product",
                "not-anticoagulated",
            }
        else:
            assert "overrideReasons" not in card and "suggestions" not in card
            assert "INR" in card["detail"]


@pytest.mark.parametrize(
    "case,service,on_file,drafts",
    [
        ("apixaban (DOAC) with K2 drafted", SIGN, [order(APIXABAN, "a1")], [draft(K2, "k2")]),
        ("dabigatran with D3+K2", SIGN, [order(DABIGATRAN, "a1")], [draft(D3K2, "dk")]),
        (
            "enoxaparin (heparin) by text with K2",
            SIGN,
            [text_only("enoxaparin sodium 40 MG/0.4ML", "e1")],
            [draft(K2, "k2")],
        ),
        (
            "D3-only product for a warfarin patient",
            SIGN,
            [order(WARFARIN, "w1")],
            [draft(D3_1000, "d")],
        ),
        (
            "'vitamin K-free' text for a warfarin patient",
            SIGN,
            [order(WARFARIN, "w1")],
            [text_only("Vitamin D3 1000 IU, vitamin K-free", "d", status="draft")],
        ),
        (
            "Kcentra is not a vitamin K product",
            SIGN,
            [order(WARFARIN, "w1")],
            [text_only("Kcentra 500 UNT", "pcc", status="draft")],
        ),
        ("K2 drafted, no anticoagulant", SIGN, [], [draft(K2, "k2")]),
        ("warfarin drafted, no vitamin K", SIGN, [order(D3_1000, "d")], [draft(WARFARIN, "w2")]),
        (
            "order hook: both on file, the draft is unrelated",
            SIGN,
            [order(WARFARIN, "w1"), order(K2, "k2")],
            [draft(D3_1000, "d")],
        ),
        ("patient-view: warfarin on file, no vitamin K", VIEW, [order(WARFARIN, "w1")], []),
        (
            "stopped K2 order is not on file",
            VIEW,
            [order(WARFARIN, "w1"), order(K2, "k2", status="stopped")],
            [],
        ),
    ],
)
def test_vka_vitamin_k_silent(case, service, on_file, drafts):
    assert cards_for(VKA, service, on_file=on_file, drafts=drafts) == [], case


def test_vka_order_select_looks_at_the_selected_draft():
    on_file = [order(WARFARIN, "w1")]
    drafts = [draft(K2, "k2"), draft(D3_1000, "d")]
    chosen = cards_for(
        VKA, SELECT, on_file=on_file, drafts=drafts, selections=["MedicationRequest/k2"]
    )
    other = cards_for(
        VKA, SELECT, on_file=on_file, drafts=drafts, selections=["MedicationRequest/d"]
    )
    assert [c["indicator"] for c in chosen] == ["warning"]
    assert other == []


def test_vka_card_names_both_products_and_the_replacement_dose():
    (card,) = cards_for(VKA, on_file=[order(WARFARIN, "w1")], drafts=[draft(D3K2, "dk", count=2)])
    assert "Warfarin Sodium 5 MG Oral Tablet" in card["detail"]
    assert "Vitamin K 2 0.09 MG" in card["detail"]
    assert "RxNorm 804617; drafted now" in card["detail"]
    assert "RxNorm 855332; active order on file" in card["detail"]
    assert "vitamin K 180 µg per dose" in card["detail"]
    remove, inr = card["suggestions"]
    assert remove["label"] == "Replace the vitamin K product by plain cholecalciferol 2,000 IU"
    created = remove["actions"][0]["resource"]  # the create first: the sandbox applies only it
    assert remove["actions"][1]["resourceId"] == "MedicationRequest/dk"
    assert created["medicationCodeableConcept"]["coding"][0]["code"] == "801663"
    assert created["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 1
    assert created["dosageInstruction"][0]["timing"]["repeat"] == {
        "frequency": 1,
        "period": 1,
        "periodUnit": "d",
    }
    period = inr["actions"][0]["resource"]["occurrencePeriod"]
    assert period == {"start": "2026-11-25", "end": "2026-12-02"}
    assert card["selectionBehavior"] == "at-most-one"


def test_vka_calcium_combination_says_calcium_is_not_replaced():
    (card,) = cards_for(VKA, on_file=[order(WARFARIN, "w1")], drafts=[draft(VIACTIV, "via")])
    assert "also holds calcium" in card["detail"]


def test_vka_d3k2_without_a_readable_schedule_is_removed_and_named():
    unreadable = draft(D3K2, "dk")
    unreadable["dosageInstruction"] = [{"text": "as directed"}]
    (card,) = cards_for(VKA, on_file=[order(WARFARIN, "w1")], drafts=[unreadable])
    assert actions(card) == [["delete MedicationRequest/dk"], INR]
    assert "no readable dose and schedule" in card["detail"]


# --- vitd-high-dose --------------------------------------------------------------------------

HIGH = "vitd-high-dose"
DEFICIENT_RECENT = vitamin_d(12.0, when="2026-10-01")
DEFICIENT_OLD = vitamin_d(12.0, when="2026-03-01")


@pytest.mark.parametrize(
    "case,on_file,drafts,observations,fires",
    [
        ("5,000 IU/day drafted, no level", [], [draft(D3_5000, "d")], [], True),
        ("4,000 IU/day exactly: not above", [], [draft(D3_1000, "d", count=4)], [], False),
        ("4,001 IU/day", [], [draft(D3_1000, "d", iu=4001)], [], True),
        ("1,000 drafted + 5,000 on file", [order(D3_5000, "a")], [draft(D3_1000, "d")], [], True),
        (
            "3,000 on file + 1,000 drafted = 4,000",
            [order(D3_1000, "a", count=3)],
            [draft(D3_1000, "d")],
            [],
            False,
        ),
        (
            "same order on file and re-drafted counts once",
            [order(D3_1000, "same", count=3)],
            [draft(D3_1000, "same", count=3)],
            [],
            False,
        ),
        (
            "50,000 weekly (7,143/day) with a recent deficient level",
            [],
            [draft(D3_50000, "d", unit="wk")],
            [DEFICIENT_RECENT],
            False,
        ),
        (
            "50,000 weekly with a deficient level 9 months old",
            [],
            [draft(D3_50000, "d", unit="wk")],
            [DEFICIENT_OLD],
            True,
        ),
        (
            "deficient, then a normal level since",
            [],
            [draft(D3_50000, "d", unit="wk")],
            [DEFICIENT_OLD, vitamin_d(35.0, when="2026-10-20", oid="vd2")],
            True,
        ),
        (
            "10,000 IU/day exactly with a deficiency: not above",
            [],
            [draft(D3_10000, "d")],
            [DEFICIENT_RECENT],
            False,
        ),
        (
            "11,000 IU/day with a deficiency: over the absolute ceiling",
            [],
            [draft(D3_10000, "d", iu=11000)],
            [DEFICIENT_RECENT],
            True,
        ),
        (
            "single 300,000 IU with a deficiency",
            [],
            [draft(D3_50000, "d", count=6, doses=1)],
            [DEFICIENT_RECENT],
            True,
        ),
        (
            "single 250,000 IU with a deficiency",
            [],
            [draft(D3_50000, "d", count=5, doses=1)],
            [DEFICIENT_RECENT],
            False,
        ),
        (
            "D2 60,000 IU/day counts too",
            [],
            [draft(D2_50000, "d", iu=60000)],
            [DEFICIENT_RECENT],
            True,
        ),
        (
            "calcium + D3 combination: 2 x 1,000 IU",
            [],
            [draft(CACO3_D, "d", count=2, frequency=3)],
            [],
            True,
        ),
        ("1,000 IU/day only", [], [draft(D3_1000, "d")], [], False),
    ],
)
def test_high_dose(case, on_file, drafts, observations, fires):
    found = cards_for(HIGH, on_file=on_file, drafts=drafts, observations=observations)
    assert [c["indicator"] for c in found] == (["warning"] if fires else []), case
    if fires:
        assert found[0]["overrideReasons"]


def test_high_dose_names_total_and_each_order():
    (card,) = cards_for(
        HIGH,
        on_file=[order(D3_5000, "a"), statement(D3_1000, "s")],
        drafts=[draft(D3_1000, "d", count=2)],
    )
    assert card["summary"] == "Vitamin D would total 8,000 IU/day, above 4,000 IU/day"
    detail = card["detail"]
    assert "**8,000 IU/day**" in detail
    assert (
        "Cholecalciferol 5000 UNT Oral Tablet (RxNorm 857466; active order on file): 5,000 IU/day"
        in detail
    )
    assert (
        "Cholecalciferol 1000 UNT Oral Tablet (RxNorm 199362; reported use on file): 1,000 IU/day"
        in detail
    )
    assert (
        "Cholecalciferol 1000 UNT Oral Tablet (RxNorm 199362; drafted now): 2,000 IU/day" in detail
    )
    # Each order on its own line, and the text after the list a paragraph of its own.
    assert (
        "- Cholecalciferol 1000 UNT Oral Tablet (RxNorm 199362; drafted now): 2,000 IU/day\n\nCheck"
        in detail
    )
    assert "above 4,000 IU/day, the tolerable upper intake level for ages 9 years and over" in detail
    assert card["source"]["url"] == "https://doi.org/10.17226/13050"  # IOM 2011


def test_high_dose_single_dose_card_cites_sanders():
    (card,) = cards_for(HIGH, drafts=[draft(D3_50000, "d", count=10, doses=1)])
    assert card["summary"].startswith("Single vitamin D dose of 500,000 IU")
    assert card["source"]["url"] == "https://doi.org/10.1001/jama.2010.594"


def test_high_dose_is_silent_on_patient_view():
    assert cards_for(HIGH, VIEW, on_file=[order(D3_10000, "a", count=2)]) == []


# --- vitd-ergocalciferol ---------------------------------------------------------------------

D2 = "vitd-ergocalciferol"


@pytest.mark.parametrize(
    "case,d2_draft,repeat,bounds_text",
    [
        (
            "50,000 IU weekly for 8 weeks",
            draft(D2_50000, "e", unit="wk", bounds=(8, "wk")),
            {
                "frequency": 1,
                "period": 1,
                "periodUnit": "wk",
                "boundsDuration": {"value": 8, "unit": "wk", "system": UCUM, "code": "wk"},
            },
            "50,000 IU (1 capsule of 50,000 IU) by mouth once weekly for 8 weeks",
        ),
        (
            "50,000 IU every 2 weeks for 3 months",
            draft(D2_50000, "e", unit="wk", period=2, bounds=(3, "mo")),
            {
                "frequency": 1,
                "period": 2,
                "periodUnit": "wk",
                "boundsDuration": {"value": 3, "unit": "mo", "system": UCUM, "code": "mo"},
            },
            "50,000 IU (1 capsule of 50,000 IU) by mouth once every 2 weeks for 3 months",
        ),
        (
            "400 IU twice daily",
            draft(D2_400, "e", frequency=2),
            {"frequency": 2, "period": 1, "periodUnit": "d"},
            "400 IU (1 tablet of 400 IU) by mouth twice daily",
        ),
        (
            "50,000 IU monthly, 6 doses",
            draft(D2_50000, "e", unit="mo", doses=6),
            {"frequency": 1, "period": 1, "periodUnit": "mo", "count": 6},
            "50,000 IU (1 capsule of 50,000 IU) by mouth once monthly (6 doses)",
        ),
        (
            "a single 50,000 IU dose",
            draft(D2_50000, "e", doses=1),
            {"frequency": 1, "period": 1, "periodUnit": "d", "count": 1},
            "50,000 IU (1 capsule of 50,000 IU) by mouth as a single dose",
        ),
    ],
)
def test_ergocalciferol_replaced_at_the_same_iu_and_schedule(case, d2_draft, repeat, bounds_text):
    (card,) = cards_for(D2, drafts=[d2_draft])
    assert card["indicator"] == "info", case
    (suggestion,) = card["suggestions"]
    create, delete = suggestion["actions"]  # create first: the sandbox applies only the first
    assert delete["resourceId"] == "MedicationRequest/e"
    resource = create["resource"]
    dosage = resource["dosageInstruction"][0]
    assert dosage["timing"]["repeat"] == repeat
    assert dosage["text"] == bounds_text
    d2_dose = d2_draft["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"]
    strength = (
        50000 if d2_draft["medicationCodeableConcept"]["coding"][0]["code"] == "1367410" else 400
    )
    # The same IU, as whole units of a D3 product of the same strength.
    product = resource["medicationCodeableConcept"]["text"]
    assert product.startswith(f"Cholecalciferol {strength} UNT Oral")
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == d2_dose
    assert "cholecalciferol" in resource["medicationCodeableConcept"]["text"].lower()


@pytest.mark.parametrize(
    "case,drafts,fires,suggests",
    [
        ("D3 drafted", [draft(D3_1000, "d")], False, False),
        (
            "D2 with calcium (combination): info, no replacement",
            [
                draft(
                    ("1086605", "Calcium Carbonate 600 MG / Ergocalciferol 200 UNT Oral Capsule"),
                    "e",
                )
            ],
            True,
            False,
        ),
        (
            "D2 with no readable schedule",
            [text_only("Ergocalciferol 50000 UNT Oral Capsule", "e", status="draft")],
            True,
            False,
        ),
    ],
)
def test_ergocalciferol_edges(case, drafts, fires, suggests):
    found = cards_for(D2, drafts=drafts)
    assert bool(found) is fires, case
    if found:
        assert ("suggestions" in found[0]) is suggests


def test_ergocalciferol_on_file_is_not_a_prescribing_question():
    assert (
        cards_for(D2, on_file=[order(D2_50000, "e", unit="wk")], drafts=[draft(D3_1000, "d")]) == []
    )


# --- vitd-hypercalcemia-risk -----------------------------------------------------------------

HYPER = "vitd-hypercalcemia-risk"


@pytest.mark.parametrize(
    "case,drafts,observations,conditions,fires",
    [
        ("sarcoidosis", [draft(D3_1000, "d")], [], [SARCOIDOSIS], True),
        ("primary hyperparathyroidism", [draft(D3_1000, "d")], [], [PHPT], True),
        ("hypercalcaemia diagnosis", [draft(D3_1000, "d")], [], [HYPERCALCAEMIA], True),
        ("serum calcium 10.6 mg/dL", [draft(D3_1000, "d")], [calcium_level(10.6)], [], True),
        (
            "serum calcium 10.5 mg/dL: not above",
            [draft(D3_1000, "d")],
            [calcium_level(10.5)],
            [],
            False,
        ),
        (
            "serum calcium 2.7 mmol/L (10.8 mg/dL)",
            [draft(D3_1000, "d")],
            [calcium_level(2.7, "mmol/L")],
            [],
            True,
        ),
        (
            "latest calcium normal, an older one high",
            [draft(D3_1000, "d")],
            [calcium_level(11.2, when="2026-01-01"), calcium_level(9.6, when="2026-11-01")],
            [],
            False,
        ),
        (
            "no vitamin D drafted",
            [draft(CACO3_1250, "c")],
            [calcium_level(11.0)],
            [SARCOIDOSIS],
            False,
        ),
        ("no risk", [draft(D3_1000, "d")], [calcium_level(9.5)], [], False),
    ],
)
def test_hypercalcemia_risk(case, drafts, observations, conditions, fires):
    found = cards_for(HYPER, drafts=drafts, observations=observations, conditions=conditions)
    assert [c["indicator"] for c in found] == (["warning"] if fires else []), case
    if fires:
        raised = bool(observations) or conditions == [HYPERCALCAEMIA]
        if raised:  # hold vitamin D and explain the calcium: adjusted or ionised, PTH, creatinine
            assert actions(found[0]) == [
                [
                    "create ServiceRequest 29265-6",
                    "create ServiceRequest 2731-8",
                    "create ServiceRequest 2160-0",
                    "delete MedicationRequest/d",
                ],
                [
                    "create ServiceRequest 1994-3",
                    "create ServiceRequest 2731-8",
                    "create ServiceRequest 2160-0",
                    "delete MedicationRequest/d",
                ],
            ]
            assert "Do not start vitamin D until" in found[0]["detail"]
        else:  # sarcoidosis or hyperparathyroidism alone: monitor during treatment
            assert actions(found[0]) == [
                ["create ServiceRequest 17861-6", "create ServiceRequest 62292-8"]
            ]
            assert "monitor serum calcium and 25(OH)D" in found[0]["summary"]
        assert found[0]["overrideReasons"]


def test_hypercalcemia_card_names_the_calcium_result():
    (card,) = cards_for(HYPER, drafts=[draft(D3_1000, "d")], observations=[calcium_level(11.0)])
    assert "11 mg/dL" in card["summary"]
    assert "LOINC 17861-6" in card["detail"] and "2026-11-01" in card["detail"]


# --- calcium-dose-split ----------------------------------------------------------------------

SPLIT = "calcium-dose-split"


@pytest.mark.parametrize(
    "case,drafts,fires",
    [
        ("2 x carbonate 1250 mg = 1,000 mg elemental", [draft(CACO3_1250, "c", count=2)], True),
        ("1 x carbonate 1500 mg = 600 mg: not above", [draft(CACO3_1500, "c")], False),
        ("1 x carbonate 1250 mg = 500 mg", [draft(CACO3_1250, "c")], False),
        ("3 x citrate 950 mg = 598.5 mg", [draft(CA_CITRATE_950, "c", count=3)], False),
        ("4 x citrate 950 mg = 798 mg", [draft(CA_CITRATE_950, "c", count=4)], True),
        ("2 x carbonate 1500 mg + D3 = 1,200 mg", [draft(CACO3_D, "c", count=2)], True),
        (
            "'Calcium 1200 mg' stated as calcium",
            [text_only("Calcium 1200 mg elemental", "c", status="draft", mg=1200)],
            True,
        ),
        ("600 mg twice daily: each dose is fine", [draft(CACO3_1500, "c", frequency=2)], False),
    ],
)
def test_calcium_dose_split(case, drafts, fires):
    found = cards_for(SPLIT, drafts=drafts)
    assert [c["indicator"] for c in found] == (["info"] if fires else []), case


def test_calcium_split_card_names_the_elemental_dose_and_a_split():
    (card,) = cards_for(SPLIT, drafts=[draft(CACO3_1250, "c", count=2)])
    assert card["summary"].startswith("1,000 mg elemental calcium in one dose")
    assert "2 doses of about 500 mg" in card["detail"]


# --- calcium-kidney-stones -------------------------------------------------------------------

STONES_TOPIC = "calcium-kidney-stones"


@pytest.mark.parametrize(
    "case,on_file,drafts,conditions,expected",
    [
        (
            "calcium drafted, stone history",
            [],
            [draft(CACO3_1250, "c")],
            [STONES],
            [["delete MedicationRequest/c"]],
        ),
        (
            "nephrolithiasis N20.0 and a calcium + D3 draft",
            [],
            [draft(CACO3_D, "c")],
            [icd10("N20.0", "Calculus of kidney", "n20")],
            [["delete MedicationRequest/c"]],
        ),
        ("vitamin D 5,000 IU/day drafted, stone history", [], [draft(D3_5000, "d")], [STONES], []),
        ("vitamin D 4,000 IU/day: not above", [], [draft(D3_1000, "d", count=4)], [STONES], None),
        (
            "2,000 on file + 3,000 drafted",
            [order(D3_1000, "a", count=2)],
            [draft(D3_1000, "d", count=3)],
            [STONES],
            [],
        ),
        ("calcium drafted, no stones", [], [draft(CACO3_1250, "c")], [], None),
        (
            "stones, calcium only on file",
            [order(CACO3_1250, "c")],
            [draft(D3_1000, "d")],
            [STONES],
            None,
        ),
    ],
)
def test_kidney_stones(case, on_file, drafts, conditions, expected):
    found = cards_for(STONES_TOPIC, on_file=on_file, drafts=drafts, conditions=conditions)
    if expected is None:
        assert found == [], case
        return
    (card,) = found
    assert card["indicator"] == "warning"
    assert actions(card) == expected
    assert "1.17" in card["summary"] and "1.17" in card["detail"]
    assert card["source"]["url"] == "https://doi.org/10.1056/NEJMoa055218"
    assert card["overrideReasons"]


# --- every safety topic: silent on patient-view (except VKA), on in es2024 -----------------------


def test_safety_topics_cannot_be_turned_off():
    for profile in ("default", "es2024"):
        guideline = load_guideline(profile)
        assert all(guideline.enabled(t) for t in SAFETY_TOPICS)
    data = _raw("es2024")
    data["topics"]["vitd-high-dose"] = {"value": False, "cite": "es2024"}
    with pytest.raises(GuidelineError, match="vitd-high-dose.*cannot be turned off"):
        _check("es2024", data)


def test_safety_thresholds_are_read_from_the_guideline(monkeypatch):
    """A changed threshold changes the behaviour: nothing is a literal in the rules."""
    guideline = load_guideline()
    facts = facts_for(drafts=[draft(CACO3_1250, "c")])  # 500 mg elemental in one dose
    assert not [f for f in rules.evaluate(facts, guideline) if f.topic == SPLIT]
    data = _raw("default")
    data["safety"]["calcium_max_per_dose_mg"]["value"] = 400
    lowered = _check("default", data)
    assert [f.topic for f in rules.evaluate(facts, lowered) if f.topic == SPLIT] == [SPLIT]


# --- knowledge and facts the safety rules rely on ----------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("AquaMephyton 10 MG/ML Injectable Solution", {"vitamin-k1"}),
        ("Konakion MM 10 mg/mL", {"vitamin-k1"}),
        ("Vitamin K 2 0.09 MG", {"vitamin-k2"}),
        ("Vitamin K 1 1 MG Oral Capsule", {"vitamin-k1"}),
        ("D3 1000 IU + K2 MK-7 100 mcg", {"vitamin-d3", "vitamin-k2"}),
        ("K2-free D3 drops", {"vitamin-d3"}),
        ("Vitamin K2-free formula", set()),
        ("MK-7 free", set()),
        ("vitamin K1-free", set()),
        ("Kcentra (prothrombin complex concentrate)", set()),
        ("VKA clinic referral", set()),
    ],
)
def test_recognition_for_safety(text, expected):
    from cds_service.facts.medications import recognise_text

    assert {str(i) for i in recognise_text(text)} == expected


@pytest.mark.parametrize(
    "repeat,expected",
    [
        ({"frequency": 1, "period": 1, "periodUnit": "wk"}, (1, 1.0, "wk", None, None)),
        ({"frequency": 2, "period": 1, "periodUnit": "d", "count": 10}, (2, 1.0, "d", 10, None)),
        (
            {"period": 2, "periodUnit": "wk", "boundsDuration": {"value": 3, "code": "mo"}},
            (1, 2.0, "wk", None, (3.0, "mo")),
        ),
        ({"frequency": 1, "frequencyMax": 2, "period": 1, "periodUnit": "d"}, None),
        ({"count": 1}, (1, 1, "d", 1, None)),
        ({"count": 3}, None),
        ({"frequency": 1, "period": 1, "periodUnit": "d", "when": ["MORN"]}, None),
        ({"frequency": 1, "period": 1, "periodUnit": "fortnight"}, None),
        ({"frequency": 1.5, "period": 1, "periodUnit": "d"}, None),
    ],
)
def test_plain_timing_is_kept_only_when_it_can_be_copied_exactly(repeat, expected):
    from cds_service.facts.dosing import plain_timing

    timing = plain_timing({"timing": {"repeat": repeat}})
    if expected is None:
        assert timing is None
    else:
        assert (
            timing.frequency,
            timing.period,
            timing.period_unit,
            timing.count,
            timing.bounds,
        ) == expected


def coded_only(product: tuple[str, str], mid: str, *, status: str = "draft") -> dict:
    """An order naming its product by RxNorm code alone (no text, no display)."""
    resource = order(product, mid, status=status)
    resource["medicationCodeableConcept"] = {"coding": [{"system": RXNORM, "code": product[0]}]}
    return resource


@pytest.mark.parametrize(
    "case,on_file,drafts,expected",
    [
        (
            "coded-only Mephyton 5 mg is read by its RxNorm name: reversal, info",
            [coded_only(WARFARIN, "w1", status="active")],
            [coded_only(MEPHYTON, "ph")],
            [("info", [])],
        ),
        (
            "phytomenadione by ATC B02BA01 only, no dose: a reversal agent, info",
            [order(WARFARIN, "w1")],
            [atc_coded("B02BA01", "", "ph", status="draft")],
            [("info", [])],
        ),
        (
            "coded-only K2 0.1 mg capsule: warning",
            [
                coded_only(
                    ("855290", "Warfarin Sodium 1 MG Oral Tablet [Coumadin]"), "w1", status="active"
                )
            ],
            [coded_only(K2, "k2")],
            [("warning", [["delete MedicationRequest/k2"], INR])],
        ),
        (
            "coded-only D3 + K2: its vitamin D (1,000 IU) is re-ordered",
            [order(WARFARIN, "w1")],
            [coded_only(D3K2, "dk")],
            [
                (
                    "warning",
                    [["create MedicationRequest 199362", "delete MedicationRequest/dk"], INR],
                )
            ],
        ),
    ],
)
def test_vka_coded_only_products(case, on_file, drafts, expected):
    found = cards_for(VKA, on_file=on_file, drafts=drafts)
    assert [(c["indicator"], actions(c)) for c in found] == expected, case


def test_text_sent_with_a_code_comes_first():
    from cds_service.facts.medications import read_medication
    from cds_service.facts.model import MedicationSource

    resource = order(K2, "k2", status="draft")
    resource["medicationCodeableConcept"]["text"] = "MK-7 200 mcg softgel"
    med = read_medication(resource, MedicationSource.DRAFT)
    assert med.name == "MK-7 200 mcg softgel"
    assert med.vitamin_k_ug_per_dose == 200  # the order's own text, not the RxNorm name's 100 µg
