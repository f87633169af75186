"""Recognising products (codes, ATC, word-aware text) and reading doses from medication uses."""

from __future__ import annotations

import json

import pytest

from cds_service.facts.medications import read_medication, recognise, recognise_text
from cds_service.facts.model import DrugClass as DC
from cds_service.facts.model import Ingredient as I
from cds_service.facts.model import MedicationSource as S

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Cholecalciferol 1000 UNT Oral Tablet", {I.VITAMIN_D3}),
        ("Colecalciferol 800 IU", {I.VITAMIN_D3}),
        ("Vitamin D3 2000 IU softgel", {I.VITAMIN_D3}),
        ("Ergocalciferol 50000 UNT Oral Capsule", {I.VITAMIN_D2}),
        ("Ergocalciferol 1.25 MG Oral Capsule [Drisdol]", {I.VITAMIN_D2}),
        (
            "Calcium Citrate 950 MG / Vitamin D 250 UNT Oral Tablet",
            {I.CALCIUM, I.VITAMIN_D_UNSPECIFIED},
        ),
        ("D3 + K2", {I.VITAMIN_D3, I.VITAMIN_K2}),
        ("D3/K2 drops", {I.VITAMIN_D3, I.VITAMIN_K2}),
        ("MK-7 100 mcg", {I.VITAMIN_K2}),
        ("Vitamin K2 (MK-7)", {I.VITAMIN_K2}),
        ("menaquinone-7 200 mcg", {I.VITAMIN_K2}),
        ("Menatetrenone 15 mg", {I.VITAMIN_K2}),
        (
            "Cholecalciferol 1000 UNT / Vitamin K 2 0.09 MG Disintegrating Oral Tablet",
            {I.VITAMIN_D3, I.VITAMIN_K2},
        ),
        ("Vitamin K 1 1 MG", {I.VITAMIN_K1}),
        ("Phytonadione 5 MG Oral Tablet [Mephyton]", {I.VITAMIN_K1}),
        (
            "Calcium Carbonate 1250 MG / Cholecalciferol 500 UNT / Vitamin K 0.04 MG [Viactiv Calcium Plus D]",
            {I.CALCIUM, I.VITAMIN_D3, I.VITAMIN_K_UNSPECIFIED},
        ),
        ("Multivitamin with vitamin K", {I.VITAMIN_K_UNSPECIFIED}),
        ("Warfarin Sodium 5 MG Oral Tablet", {DC.VKA}),
        ("warfarin sodium 5 MG Oral Tablet [Jantoven]", {DC.VKA}),
        ("Coumadin 2 mg", {DC.VKA}),
        ("Sintrom 4 mg", {DC.VKA}),
        ("acenocoumarol", {DC.VKA}),
        ("Marcoumar 3 mg", {DC.VKA}),
        ("phenprocoumon", {DC.VKA}),
        ("fluindione 20 mg", {DC.VKA}),
        ("phenindione", {DC.VKA}),
        ("apixaban 5 MG Oral Tablet [Eliquis]", {DC.DOAC}),
        ("rivaroxaban 20 MG", {DC.DOAC}),
        ("Pradaxa 150 mg", {DC.DOAC}),
        ("edoxaban", {DC.DOAC}),
        ("enoxaparin sodium 40 MG/0.4ML", {DC.HEPARIN}),
        ("Heparin 5000 UNT/ML", {DC.HEPARIN}),
        ("Calcium Carbonate 500 MG Chewable Tablet [Tums]", {I.CALCIUM}),
        ("Calcium 600 MG", {I.CALCIUM}),
        # False positives that must not fire:
        ("vitamin K-free diet supplement", set()),
        ("no vitamin K", set()),
        ("vitamin K antagonist", set()),
        ("Kcentra 500 UNT", set()),
        # an active analog: its own class, never vitamin D (contract §4)
        ("calcitriol 0.25 MCG Oral Capsule [Rocaltrol]", {DC.ACTIVE_VITAMIN_D_ANALOG}),
        ("Calcifediol 0.02 MG Oral Capsule", {DC.CALCIFEDIOL}),
        ("calcipotriene 0.005 % Topical Cream", set()),
        ("Calcitriol 0.003 MG/ML Topical Ointment", set()),
        ("paricalcitol 1 MCG [Zemplar]", {DC.ACTIVE_VITAMIN_D_ANALOG}),
        ("levomefolate calcium 0.451 MG", set()),
        ("rosuvastatin calcium 10 MG [Crestor]", set()),
        ("acamprosate calcium 333 MG [Campral]", set()),
        ("Calcium Acetate 667 MG [Phoslo]", set()),
        ("Calcium Polycarbophil 625 MG [FiberCon]", set()),
        ("calcium channel blocker", set()),
        ("Amoxicillin 500 mg tablet", set()),
        ("", set()),
    ],
)
def test_text_recognition(text, expected):
    assert recognise_text(text) == frozenset(expected)


@pytest.mark.parametrize(
    "codings,expected",
    [
        ([(RXNORM, "855332")], {DC.VKA}),
        ([(RXNORM, "11289")], {DC.VKA}),
        ([(RXNORM, "114194")], {DC.VKA}),
        ([(RXNORM, "2418")], {I.VITAMIN_D3}),
        ([(RXNORM, "316965")], {I.VITAMIN_D2}),
        ([(ATC, "B01AA03")], {DC.VKA}),
        ([(ATC, "b01aa07")], {DC.VKA}),
        ([(ATC, "M05BX08")], {I.VITAMIN_K2}),
        ([(ATC, "B01AF01")], set()),  # rivaroxaban's ATC is not a VKA
        ([("http://snomed.info/sct", "855332")], set()),  # right code, wrong system
        ([(RXNORM, None), (None, "855332")], set()),
    ],
)
def test_code_recognition(codings, expected):
    assert recognise(codings, []) == frozenset(expected)


def test_every_sandbox_rxnorm_name_is_read_and_key_products_recognised(shared_data):
    names = json.loads((shared_data / "rxnorm-sandbox-subset/medications.json").read_text())
    assert len(names) == 980
    found = {code: recognise([(RXNORM, code)], [name]) for code, name in names.items()}
    assert found["804617"] == {I.VITAMIN_D3, I.VITAMIN_K2}
    assert found["1244927"] >= {I.CALCIUM, I.VITAMIN_D3, I.VITAMIN_K_UNSPECIFIED}
    assert found["855332"] == {DC.VKA} and found["705728"] == {I.VITAMIN_D3}
    for code, name in names.items():
        lowered = name.lower()
        if "warfarin" in lowered:
            assert DC.VKA in found[code], name
        if any(w in lowered for w in ("apixaban", "rivaroxaban", "dabigatran", "edoxaban")):
            assert found[code] == {DC.DOAC}, name
        if (
            "levomefolate calcium" in lowered
            or "calcitriol" in lowered
            or "paricalcitol" in lowered
        ):
            assert I.CALCIUM not in found[code] and not any(i.is_vitamin_d for i in found[code]), (
                name
            )
        if "vitamin k 2" in lowered:
            assert I.VITAMIN_K2 in found[code], name


def request(text, *, rxcui="x", dose=None, unit=None, repeat=None, code=None, extra_dosage=None):
    concept = {"coding": [{"system": RXNORM, "code": rxcui, "display": text}], "text": text}
    out = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": concept,
    }
    dosage = {}
    if dose is not None:
        dosage["doseAndRate"] = [
            {"doseQuantity": {"value": dose, "unit": unit, "system": UCUM, "code": unit}}
        ]
    if repeat is not None:
        dosage["timing"] = {"repeat": repeat}
    if code is not None:
        dosage["timing"] = {"code": {"coding": [{"code": code}]}}
    if extra_dosage:
        dosage.update(extra_dosage)
    if dosage:
        out["dosageInstruction"] = [dosage]
    return out


DAILY = {"frequency": 1, "period": 1, "periodUnit": "d"}
WEEKLY = {"frequency": 1, "period": 1, "periodUnit": "wk"}


@pytest.mark.parametrize(
    "resource,per_dose,per_day",
    [
        (
            request(
                "Cholecalciferol 50000 UNT Oral Capsule", dose=1, unit="{capsule}", repeat=WEEKLY
            ),
            50000,
            50000 / 7,
        ),
        (request("Vitamin D3", dose=50000, unit="[iU]", repeat=WEEKLY), 50000, 50000 / 7),
        (request("Vitamin D3", dose=2000, unit="[IU]", repeat=DAILY), 2000, 2000),
        (
            request(
                "Vitamin D3",
                dose=1000,
                unit="IU",
                repeat={"frequency": 2, "period": 1, "periodUnit": "d"},
            ),
            1000,
            2000,
        ),
        (request("Vitamin D3", dose=25, unit="ug", repeat=DAILY), 1000, 1000),
        (request("Vitamin D3", dose=1.25, unit="mg", repeat=WEEKLY), 50000, 50000 / 7),
        (request("Cholecalciferol 1000 UNT", dose=2, unit="TAB", repeat=DAILY), 2000, 2000),
        (request("Cholecalciferol 1000 UNT", dose=1, unit="TAB", code="BID"), 1000, 2000),
        (request("Cholecalciferol 1000 UNT", dose=1, unit="TAB", code="QOD"), 1000, 500),
        (
            request(
                "Cholecalciferol 1000 UNT",
                dose=1,
                unit="TAB",
                repeat={"frequency": 1, "frequencyMax": 2, "period": 1, "periodUnit": "d"},
            ),
            1000,
            2000,
        ),
        (
            request(
                "Cholecalciferol 1000 UNT", dose=1, unit="TAB", repeat={"when": ["MORN", "EVE"]}
            ),
            1000,
            2000,
        ),
        (
            request(
                "Cholecalciferol 1000 UNT",
                dose=1,
                unit="TAB",
                extra_dosage={"text": "one tablet daily"},
            ),
            1000,
            1000,
        ),
        (request("Cholecalciferol 1000 UNT", dose=1, unit="TAB"), 1000, None),  # how often: unknown
        (request("Cholecalciferol 1000 UNT"), None, None),  # no dose at all
        (request("Vitamin D3", dose=300000, unit="[iU]", repeat={"count": 1}), 300000, None),
        (
            request(
                "Vitamin D3",
                dose=50000,
                unit="[iU]",
                repeat={"frequency": 1, "period": 1, "periodUnit": "mo"},
            ),
            50000,
            50000 / 30,
        ),
    ],
)
def test_vitamin_d_doses(resource, per_dose, per_day):
    med = read_medication(resource, S.DRAFT)
    assert med.vitamin_d_iu_per_dose == (pytest.approx(per_dose) if per_dose is not None else None)
    assert med.vitamin_d_iu_per_day == (pytest.approx(per_day) if per_day is not None else None)


def test_course_from_bounds_duration_and_count():
    repeat = {**WEEKLY, "boundsDuration": {"value": 8, "unit": "wk", "system": UCUM, "code": "wk"}}
    assert (
        read_medication(
            request("Vitamin D3", dose=50000, unit="[iU]", repeat=repeat), S.DRAFT
        ).course_days
        == 56
    )
    repeat = {**DAILY, "count": 42}
    assert (
        read_medication(
            request("Vitamin D3", dose=2000, unit="[iU]", repeat=repeat), S.DRAFT
        ).course_days
        == 42
    )


def test_d3_k2_combination_per_capsule():
    med = read_medication(
        request(
            "Cholecalciferol 1000 UNT / Vitamin K 2 0.09 MG Disintegrating Oral Tablet",
            rxcui="804617",
            dose=1,
            unit="{tbl}",
            repeat=DAILY,
        ),
        S.DRAFT,
    )
    assert med.ingredients == {I.VITAMIN_D3, I.VITAMIN_K2}
    assert (med.vitamin_d_iu_per_day, med.vitamin_k_ug_per_day) == (1000, pytest.approx(90))


@pytest.mark.parametrize(
    "text,dose,unit,per_dose,per_day",
    [
        ("Calcium Carbonate 1250 MG Oral Tablet", 1, "{tbl}", 500, 1000),
        ("Calcium Citrate 950 MG Oral Tablet", 2, "{tbl}", 2 * 950 * 0.21, 4 * 950 * 0.21),
        ("Calcium 600 MG", 1, "TAB", 600, 1200),
        ("Calcium Carbonate", 1250, "mg", 500, 1000),  # a mass dose of the salt
        ("Calcium Gluconate 500 MG", 1, "TAB", None, None),  # no cited elemental share
    ],
)
def test_elemental_calcium(text, dose, unit, per_dose, per_day):
    med = read_medication(
        request(
            text, dose=dose, unit=unit, repeat={"frequency": 2, "period": 1, "periodUnit": "d"}
        ),
        S.DRAFT,
    )
    assert med.has(I.CALCIUM)
    assert med.calcium_mg_per_dose == (pytest.approx(per_dose) if per_dose is not None else None)
    assert med.calcium_mg_per_day == (pytest.approx(per_day) if per_day is not None else None)


def test_implausible_stated_strength_is_left_unknown():
    med = read_medication(
        request(
            "Calcium Carbonate 500 MG / Ergocalciferol 100 MG / Vitamin K 1 0.04 MG",
            dose=1,
            unit="{tbl}",
            repeat=DAILY,
        ),
        S.DRAFT,
    )
    assert med.vitamin_d_iu_per_day is None and med.calcium_mg_per_day == pytest.approx(200)


def test_concurrent_dosages_add_and_sequential_phases_take_the_largest():
    resource = request("Vitamin D3", dose=1000, unit="[iU]", repeat=DAILY)
    resource["dosageInstruction"].append(json.loads(json.dumps(resource["dosageInstruction"][0])))
    assert read_medication(resource, S.DRAFT).vitamin_d_iu_per_day == 2000
    resource["dosageInstruction"][0]["sequence"] = 1
    resource["dosageInstruction"][1]["sequence"] = 2
    resource["dosageInstruction"][1]["doseAndRate"][0]["doseQuantity"]["value"] = 6000
    assert read_medication(resource, S.DRAFT).vitamin_d_iu_per_day == 6000


def test_stu3_shaped_dose_and_dose_range():
    stu3 = request("Vitamin D3", repeat=DAILY)
    stu3["dosageInstruction"][0]["doseQuantity"] = {"value": 4000, "unit": "IU"}
    assert read_medication(stu3, S.DRAFT).vitamin_d_iu_per_day == 4000
    ranged = request("Vitamin D3", repeat=DAILY)
    ranged["dosageInstruction"][0]["doseAndRate"] = [
        {"doseRange": {"low": {"value": 1000, "unit": "IU"}, "high": {"value": 2000, "unit": "IU"}}}
    ]
    assert read_medication(ranged, S.DRAFT).vitamin_d_iu_per_day == 2000


def test_sandbox_near_r4_draft():
    draft = request(
        "Cholecalciferol 50000 UNT Oral Capsule",
        rxcui="705728",
        dose=1,
        unit="capsule",
        repeat=WEEKLY,
    )
    draft["category"] = {"coding": [{"code": "outpatient"}]}
    draft["reasonCode"] = {"coding": [{"code": "34713006"}]}
    draft["dosageInstruction"][0]["doseAndRate"] = draft["dosageInstruction"][0]["doseAndRate"][
        0
    ]  # one object
    med = read_medication(draft, S.DRAFT)
    assert med.ingredients == {I.VITAMIN_D3} and med.vitamin_d_iu_per_day == pytest.approx(
        50000 / 7
    )


def test_dstu2_medication_order():
    order = {
        "resourceType": "MedicationOrder",
        "id": "mo1",
        "status": "draft",
        "medicationCodeableConcept": {
            "text": "Warfarin Sodium 5 MG Oral Tablet",
            "coding": [{"system": RXNORM, "code": "855332"}],
        },
        "dosageInstruction": [
            {"doseQuantity": {"value": 1, "unit": "tablet"}, "timing": {"repeat": DAILY}}
        ],
    }
    med = read_medication(order, S.DRAFT)
    assert med.classes == {DC.VKA} and med.resource_type == "MedicationOrder" and med.id == "mo1"


def test_medication_statement_dosage_field():
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": "active",
        "medicationCodeableConcept": {"text": "Vitamin D3 2000 IU"},
        "dosage": [
            {
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "capsule"}}],
                "timing": {"repeat": DAILY},
            }
        ],
    }
    med = read_medication(statement, S.STATEMENT)
    assert med.vitamin_d_iu_per_day == 2000 and med.source is S.STATEMENT


def test_referenced_and_contained_medications():
    order = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "status": "active",
        "medicationReference": {"reference": "https://ehr.example.org/fhir/Medication/k2"},
    }
    k2 = {
        "resourceType": "Medication",
        "id": "k2",
        "code": {"text": "MK-7"},
        "ingredient": [
            {
                "itemCodeableConcept": {"text": "menaquinone-7"},
                "strength": {
                    "numerator": {"value": 100, "unit": "ug", "system": UCUM, "code": "ug"},
                    "denominator": {"value": 1, "unit": "capsule"},
                },
            }
        ],
    }
    med = read_medication(order, S.REQUEST, medications={"Medication/k2": k2})
    assert med.ingredients == {I.VITAMIN_K2} and med.strengths[0].amount == 100
    assert read_medication(order, S.REQUEST, medications={}) is None
    order["medicationReference"] = {"reference": "#k2"}
    order["contained"] = [k2]
    assert read_medication(order, S.REQUEST).ingredients == {I.VITAMIN_K2}
    order["medicationReference"] = {"reference": "#missing", "display": "Coumadin 5 mg"}
    assert read_medication(order, S.REQUEST).classes == {DC.VKA}


@pytest.mark.parametrize(
    "name",
    sorted(
        p.name
        for p in __import__("pathlib")
        .Path(__file__)
        .resolve()
        .parents[2]
        .joinpath("shared/data/hl7-examples")
        .glob("MedicationRequest-*.json")
    ),
)
def test_hl7_example_requests(shared_data, name):
    resource = json.loads((shared_data / "hl7-examples" / name).read_text())
    med = read_medication(resource, S.REQUEST)
    if name == "MedicationRequest-medrx0331.json":
        assert (
            med.classes == {DC.VKA}
            and ("http://www.nlm.nih.gov/research/umls/rxnorm", "114194") in med.codes
        )
    else:
        assert med is None or not med.has(DC.VKA)


@pytest.mark.parametrize(
    "resource",
    [
        None,
        [],
        "x",
        {"resourceType": "Observation"},
        {"resourceType": "MedicationRequest"},
        {"resourceType": "MedicationRequest", "medicationCodeableConcept": "warfarin"},
        {"resourceType": "MedicationRequest", "medicationReference": "#x", "contained": 3},
        {
            "resourceType": "MedicationRequest",
            "medicationCodeableConcept": {"text": "warfarin"},
            "dosageInstruction": [None, {"doseAndRate": "x", "timing": []}],
        },
    ],
)
def test_odd_input_never_raises(resource):
    med = read_medication(resource, S.DRAFT)
    assert med is None or med.classes == {DC.VKA}


@pytest.mark.parametrize(
    "resource,started,ended",
    [
        # a statement's effectivePeriod, open or closed
        (
            {"resourceType": "MedicationStatement", "status": "completed", "medicationCodeableConcept": {"text": "Vitamin D3 1000 IU"}, "effectivePeriod": {"start": "2025-01-01", "end": "2025-03-01"}},
            "2025-01-01",
            "2025-03-01",
        ),
        (
            {"resourceType": "MedicationStatement", "status": "active", "medicationCodeableConcept": {"text": "Vitamin D3 1000 IU"}, "effectiveDateTime": "2025-02-01"},
            "2025-02-01",
            None,
        ),
        # an order's boundsPeriod wins over authoredOn
        (
            {**request("Vitamin D3 50000 UNT", dose=1, unit="capsule", repeat={**WEEKLY, "boundsPeriod": {"start": "2025-01-10", "end": "2025-03-07"}}), "authoredOn": "2025-01-09"},
            "2025-01-10",
            "2025-03-07",
        ),
        # no end stated: authoredOn + the course (8 weekly doses = 56 days)
        (
            {**request("Vitamin D3 50000 UNT", dose=1, unit="capsule", repeat={**WEEKLY, "count": 8}), "authoredOn": "2025-01-01"},
            "2025-01-01",
            "2025-02-26",
        ),
        # a course beyond the calendar: the end is unknown, nothing raises
        (
            {**request("Vitamin D3 1000 UNT", dose=1, unit="capsule", repeat={**DAILY, "boundsDuration": {"value": 5000000, "unit": "a"}}), "authoredOn": "9990-01-01"},
            "9990-01-01",
            None,
        ),
        # nothing stated: unknown, never guessed
        (request("Vitamin D3 1000 UNT", dose=1, unit="capsule", repeat=DAILY), None, None),
    ],
)
def test_when_a_use_started_and_ended(resource, started, ended):
    from cds_service.facts.fhirdates import parse_instant

    med = read_medication(resource, S.STATEMENT if resource["resourceType"] == "MedicationStatement" else S.REQUEST)
    assert med.started == parse_instant(started)
    assert med.ended == parse_instant(ended)
