"""The specialist review of issue 20, through HTTP: prescribing in pregnancy, children's upper
limits, es2024 with established indications, what is on file, the hypercalcaemia card, sources
that say what the card says, and the smaller readings. Dates are relative to today (the service
reads the hook's time as now)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests import builders as b

SIGN = "vitamin-d-order-sign"
SELECT = "vitamin-d-order-select"
VIEW = "vitamin-d-patient-view"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
ATC = "http://www.whocc.no/atc"
TODAY = datetime.now(UTC).date()

D3_1000 = ("199362", "Cholecalciferol 1000 UNT Oral Tablet")
D3_50000 = ("705728", "Cholecalciferol 50000 UNT Oral Capsule")
K2 = ("1537458", "Vitamin K 2 0.1 MG Oral Capsule")


def ago(days: int) -> str:
    return (TODAY - timedelta(days=days)).isoformat()


def born_months(months: int) -> str:
    """A birthDate giving exactly `months` whole months today (plus a few days)."""
    year, month = TODAY.year, TODAY.month - months
    while month <= 0:
        month += 12
        year -= 1
    day = min(TODAY.day, 28)
    birth = date(year, month, day) - timedelta(days=3 if TODAY.day > 3 else 0)
    return birth.isoformat()


def dose(
    product: tuple[str, str],
    mid: str,
    iu: float,
    *,
    status: str = "draft",
    per: str = "d",
    weeks: int | None = None,
    count: int | None = None,
    authored: str | None = None,
) -> dict:
    resource = b.medication_request(*product, mid=mid, status=status, dose=iu, per=per)
    repeat = resource["dosageInstruction"][0]["timing"]["repeat"]
    if weeks:
        repeat["boundsDuration"] = {"value": weeks, "unit": "wk", "system": b.UCUM, "code": "wk"}
    if count:
        repeat["count"] = count
    if authored:
        resource["authoredOn"] = authored
    return resource


def text_med(text: str, mid: str) -> dict:
    """An active order named only in text (no code is invented for it)."""
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{b.PATIENT_ID}"},
        "medicationCodeableConcept": {"text": text},
    }


def icd(code: str, display: str, cid: str) -> dict:
    resource = b.condition("0", display, cid=cid)
    resource["code"] = {"coding": [{"system": ICD10, "code": code, "display": display}]}
    return resource


PREGNANT = b.condition("77386006", "Pregnancy", cid="preg")


def calcium(value: float) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"ca-{value}",
        "status": "final",
        "code": {"coding": [{"system": b.LOINC, "code": "17861-6"}]},
        "subject": {"reference": f"Patient/{b.PATIENT_ID}"},
        "effectiveDateTime": ago(5),
        "valueQuantity": {"value": value, "unit": "mg/dL", "system": b.UCUM, "code": "mg/dL"},
    }


def call(
    client,
    service: str,
    *,
    birth: str | None = "1980-03-01",
    sex: str = "female",
    levels: list[dict] = (),  # type: ignore[assignment]
    meds: list[dict] = (),  # type: ignore[assignment]
    statements: list[dict] = (),  # type: ignore[assignment]
    conditions: list[dict] = (),  # type: ignore[assignment]
    drafts: list[dict] = (),  # type: ignore[assignment]
) -> list[dict]:
    prefetch = {
        "patient": b.patient(birth_date=birth, gender=sex),
        "observations": b.searchset(*levels),
        "medicationRequests": b.searchset(*meds),
        "medicationStatements": b.searchset(*statements),
        "conditions": b.searchset(*conditions),
    }
    body = b.hook_request(service, prefetch=prefetch, drafts=list(drafts))
    reply = client.post(f"/cds-services/{service}", json=body)
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()["cards"]


def topic(cards: list[dict], code: str) -> list[dict]:
    return [c for c in cards if c["source"]["topic"]["code"] == code]


def med_resources(card: dict) -> list[dict]:
    return [
        a["resource"]
        for s in card.get("suggestions", [])
        for a in s["actions"]
        if a["type"] == "create" and a["resource"]["resourceType"] == "MedicationRequest"
    ]


@pytest.fixture
def es2024_client(make_app, settings):
    return make_app(dataclasses.replace(settings, guideline_profile="es2024")).test_client()


# --- 1. Pregnancy at prescribing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "level", "draft", "kind"),
    [
        (
            "deficient, 50,000 IU weekly x 8 drafted",
            12,
            dose(D3_50000, "w", 50000, per="wk", weeks=8),
            "Pregnancy: intermittent high-dose",
        ),
        ("no level, 50,000 IU weekly", None, dose(D3_50000, "w", 50000, per="wk"), "intermittent"),
        ("single 100,000 IU dose", 12, dose(D3_50000, "s", 100000, count=1), "intermittent"),
        ("deficient, 6,000 IU daily", 12, dose(D3_1000, "d", 6000), "above 4,000 IU/day"),
        ("deficient, 4,001 IU daily", 12, dose(D3_1000, "d", 4001), "above 4,000 IU/day"),
        ("deficient, 4,000 IU daily: the pregnancy regimen", 12, dose(D3_1000, "d", 4000), None),
        ("no level, 2,000 IU daily", None, dose(D3_1000, "d", 2000), None),
        ("no level, 2,800 IU every 2 days (1,400/day)", None, dose(D3_1000, "d", 2800), None),
    ],
)
def test_pregnancy_at_prescribing_warns_whatever_the_level(client, case, level, draft, kind):
    if case.startswith("no level, 2,800"):
        draft["dosageInstruction"][0]["timing"]["repeat"]["period"] = 2
    levels = [b.vitamin_d(level, when=ago(20))] if level is not None else []
    for service in (SIGN, SELECT):
        found = topic(
            call(client, service, levels=levels, conditions=[PREGNANT], drafts=[draft]),
            "vitd-high-dose",
        )
        if kind is None:
            assert found == [], case
            continue
        (card,) = found
        assert card["indicator"] == "warning", case
        assert kind in card["summary"] or kind in card["detail"], (case, card["summary"])
        assert "IOM 2011" in card["source"]["label"] or "Sanders" in card["source"]["label"]


def test_deficient_pregnancy_is_offered_the_daily_course_in_place_of_the_weekly_draft(client):
    (card,) = topic(
        call(
            client,
            SIGN,
            levels=[b.vitamin_d(12, when=ago(20))],
            conditions=[PREGNANT],
            drafts=[dose(D3_50000, "w", 50000, per="wk", weeks=8)],
        ),
        "vitd-high-dose",
    )
    (suggestion,) = card["suggestions"]
    create, delete = suggestion["actions"]
    assert create["resource"]["medicationCodeableConcept"]["text"] == (
        "Cholecalciferol 4000 UNT Oral Tablet"
    )
    assert create["resource"]["dosageInstruction"][0]["timing"]["repeat"]["periodUnit"] == "d"
    assert delete["resourceId"] == "MedicationRequest/w"
    # Without a deficiency level there is no course to offer: the warning stands alone.
    (card,) = topic(
        call(client, SIGN, conditions=[PREGNANT], drafts=[dose(D3_50000, "w", 50000, per="wk")]),
        "vitd-high-dose",
    )
    assert "suggestions" not in card


def test_the_same_weekly_draft_outside_pregnancy_is_a_course(client):
    cards = call(
        client,
        SIGN,
        levels=[b.vitamin_d(12, when=ago(20))],
        drafts=[dose(D3_50000, "w", 50000, per="wk", weeks=8)],
    )
    assert topic(cards, "vitd-high-dose") == []


# --- 2. Children's upper limits -------------------------------------------------------------


@pytest.mark.parametrize(
    ("months", "deficient", "daily_iu", "fires"),
    [
        (5, False, 1000, False),  # 0-6 months: UL 1,000
        (5, False, 1200, True),
        (6, False, 1500, False),  # 6-12 months: UL 1,500
        (6, False, 2000, True),
        (11, True, 2000, False),  # deficient infant: the 2,000 IU/day course is allowed
        (11, True, 2400, True),  # under 1 year: > 2,000 IU/day whatever the level
        (12, False, 2500, False),  # 1-3 years: UL 2,500
        (12, False, 3000, True),
        (36, False, 4000, True),  # the reported case: a 3-year-old on 4,000 IU/day, no level
        (47, False, 2500, False),
        (48, False, 3000, False),  # 4-8 years: UL 3,000
        (48, False, 4000, True),
        (107, False, 3500, True),
        (108, False, 4000, False),  # from 9 years: 4,000
        (108, False, 5000, True),
        (17 * 12, False, 4000, False),
        (17 * 12, False, 4400, True),
        (18 * 12, False, 4400, True),
        (36, True, 4000, False),  # a deficiency course in the last 6 months lifts the UL ...
        (36, True, 12000, True),  # ... but never past 10,000 IU/day from 1 year
        (64 * 12, False, 4000, False),
        (65 * 12, False, 4400, True),
    ],
)
def test_upper_limit_by_age(client, months, deficient, daily_iu, fires):
    levels = [b.vitamin_d(12 if deficient else 35, when=ago(20))]
    cards = call(
        client,
        SIGN,
        birth=born_months(months),
        levels=levels,
        drafts=[dose(D3_1000, "d", daily_iu)],
    )
    found = topic(cards, "vitd-high-dose")
    assert bool(found) is fires, (months, deficient, daily_iu, [c["summary"] for c in found])
    if found:
        assert f"{daily_iu:,} IU/day" in found[0]["summary"]


def test_three_year_old_card_names_the_age_limit_and_source(client):
    (card,) = topic(
        call(client, SIGN, birth=born_months(36), drafts=[dose(D3_1000, "d", 4000)]),
        "vitd-high-dose",
    )
    assert "2,500 IU/day" in card["summary"] and "ages 1-3 years" in card["summary"]
    assert (
        "IOM 2011" in card["detail"] and card["source"]["url"] == "https://doi.org/10.17226/13050"
    )


@pytest.mark.parametrize(("months", "tablets"), [(6, False), (36, False), (47, False), (48, True)])
def test_children_under_4_are_not_offered_tablets(client, months, tablets):
    (card,) = topic(
        call(client, VIEW, birth=born_months(months), levels=[b.vitamin_d(10, when=ago(20))]),
        "vitd-deficiency",
    )
    meds = med_resources(card)
    assert bool(meds) is tablets
    if not tablets:
        assert "oral drops" in card["detail"]
        assert all("Tablet" not in s["label"] for s in card["suggestions"])
        # the one suggestion left is the repeat 25(OH)D
        (suggestion,) = card["suggestions"]
        assert suggestion["actions"][0]["resource"]["code"]["coding"][0]["code"] == "62292-8"


# --- 3. es2024 keeps established indications -----------------------------------------------


@pytest.mark.parametrize(
    ("case", "birth", "level", "conditions", "expected"),
    [
        ("child 15 ng/mL", born_months(10 * 12), 15, [], "vitd-deficiency"),
        ("pregnant 14 ng/mL", "1996-01-02", 14, [PREGNANT], "vitd-deficiency"),
        ("adult below 5 ng/mL", "1970-01-02", 4, [], "vitd-deficiency"),
        (
            "CKD, no level",
            "1950-01-02",
            None,
            [b.condition("709044004", "CKD 3")],
            "vitd-no-recent-level",
        ),
        (
            "coeliac, no level",
            "1980-01-02",
            None,
            [icd("K90.0", "Coeliac disease", "k90")],
            "vitd-no-recent-level",
        ),
        (
            "falls at 70, no level",
            "1955-01-02",
            None,
            [icd("Z91.81", "History of falling", "falls")],
            "vitd-no-recent-level",
        ),
    ],
)
def test_both_profiles_keep_established_indications(
    client, es2024_client, case, birth, level, conditions, expected
):
    levels = [b.vitamin_d(level, when=ago(20))] if level is not None else []
    for each in (client, es2024_client):
        cards = call(each, VIEW, birth=birth, levels=levels, conditions=conditions)
        codes = [c["source"]["topic"]["code"] for c in cards]
        assert expected in codes, (case, codes)
        assert "vitd-empiric" not in codes, case
    (card,) = topic(
        call(es2024_client, VIEW, birth=birth, levels=levels, conditions=conditions), expected
    )
    if expected == "vitd-deficiency":
        assert "sets no threshold" in card["detail"] and "Endocrine Society 2011" in card["detail"]
        assert "no test is needed" not in card["detail"].lower()


def test_es2024_still_spares_healthy_people(es2024_client):
    cards = call(es2024_client, VIEW, birth="1980-01-02", levels=[b.vitamin_d(25, when=ago(20))])
    assert cards == []
    cards = call(es2024_client, VIEW, birth="1980-01-02")
    assert cards == []


# --- 5. What is already on file -------------------------------------------------------------


def test_deficiency_card_names_the_vitamin_d_on_file_and_adds_no_duplicate(client):
    on_file = dose(D3_1000, "m1", 1000, status="active")
    (card,) = topic(
        call(client, VIEW, levels=[b.vitamin_d(12, when=ago(20))], meds=[on_file]),
        "vitd-deficiency",
    )
    assert (
        "Cholecalciferol 1000 UNT Oral Tablet (active order): 1,000 IU per dose, 1,000 IU/day"
        in (card["detail"])
    )
    assert "adjust the vitamin D on file" in card["detail"]
    for suggestion in card["suggestions"]:
        meds = [
            a["resource"]
            for a in suggestion["actions"]
            if a["type"] == "create" and a["resource"]["resourceType"] == "MedicationRequest"
        ]
        assert len(meds) == 1  # the course only: no second maintenance order beside the one on file
        assert "then" not in suggestion["label"]


def test_text_only_vitamin_d_is_named_with_its_dose_unreadable(client):
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s1",
        "status": "active",
        "subject": {"reference": f"Patient/{b.PATIENT_ID}"},
        "medicationCodeableConcept": {"text": "Vitamin D3 5000 IU softgel"},
    }
    (card,) = topic(
        call(client, VIEW, levels=[b.vitamin_d(12, when=ago(20))], statements=[statement]),
        "vitd-deficiency",
    )
    assert "Vitamin D3 5000 IU softgel (reported use): dose not readable" in card["detail"]


def test_a_course_under_way_is_information_with_the_recheck_date(client):
    started = ago(21)
    course = dose(D3_50000, "c1", 50000, status="active", per="wk", weeks=8, authored=started)
    (card,) = topic(
        call(client, VIEW, levels=[b.vitamin_d(12, when=ago(30))], meds=[course]),
        "vitd-deficiency",
    )
    assert card["indicator"] == "info" and "suggestions" not in card
    recheck = (date.fromisoformat(started) + timedelta(days=round(3 * 365.25 / 12))).isoformat()
    assert "course under way" in card["summary"] and recheck in card["summary"]


# --- 6. Hypercalcaemia ------------------------------------------------------------------------


def test_raised_calcium_holds_vitamin_d_and_orders_the_work_up(client):
    (card,) = topic(
        call(client, SIGN, levels=[calcium(11.0)], drafts=[dose(D3_1000, "d1", 1000)]),
        "vitd-hypercalcemia-risk",
    )
    assert "11 mg/dL" in card["summary"] and "do not start vitamin D" in card["summary"]
    assert "check serum calcium" not in card["summary"].lower()
    codes = [
        [a["resource"]["code"]["coding"][0]["code"] for a in s["actions"] if a["type"] == "create"]
        for s in card["suggestions"]
    ]
    assert codes == [["29265-6", "2731-8", "2160-0"], ["1994-3", "2731-8", "2160-0"]]
    assert card["suggestions"][0]["actions"][-1]["resourceId"] == "MedicationRequest/d1"


def test_sarcoidosis_alone_asks_for_monitoring(client):
    (card,) = topic(
        call(
            client,
            SIGN,
            conditions=[b.condition("31541009", "Sarcoidosis", cid="sarc")],
            drafts=[dose(D3_1000, "d1", 1000)],
        ),
        "vitd-hypercalcemia-risk",
    )
    assert (
        "Sarcoidosis" in card["detail"] and "No serum calcium result is on file" in card["detail"]
    )
    assert "Do not start" not in card["detail"]
    (suggestion,) = card["suggestions"]
    assert [a["resource"]["code"]["coding"][0]["code"] for a in suggestion["actions"]] == [
        "17861-6",
        "62292-8",
    ]


# --- 7. Sources that say what the card says ---------------------------------------------------


def test_k2_card_credits_the_seed_summary_and_theuwissen(client):
    calcium_order = b.medication_request(
        "282465", "Calcium Carbonate 1250 MG Oral Tablet", mid="ca", dose=1, unit="{tbl}"
    )
    (card,) = topic(
        call(
            client,
            VIEW,
            levels=[b.vitamin_d(35, when=ago(20))],
            meds=[dose(D3_1000, "m1", 1000, status="active"), calcium_order],
            conditions=[b.condition("64859006", "Osteoporosis")],
        ),
        "k2-consideration",
    )
    assert card["source"]["label"].startswith("Seed summary")
    assert "Schurgers" not in card["source"]["label"]
    assert card["source"]["url"] == "https://doi.org/10.1111/jth.12203"
    assert "about 10 µg a day" in card["detail"] and "50 µg" not in card["detail"]
    assert "J Thromb Haemost 2013;11:1085" in card["detail"]
    lines = card["detail"].split("\n")
    assert any("µg" in line and "mg (" not in line for line in lines)
    assert any("45 mg" in line and "µg" not in line for line in lines)


def test_k2_never_fires_for_a_time_limited_course(client):
    course = dose(D3_50000, "c1", 50000, status="active", per="wk", weeks=8, authored=ago(10))
    open_ended = dose(D3_1000, "m5", 5000, status="active")
    levels = [b.vitamin_d(35, when=ago(20))]
    assert topic(call(client, VIEW, levels=levels, meds=[course]), "k2-consideration") == []
    assert topic(call(client, VIEW, levels=levels, meds=[open_ended]), "k2-consideration")


def test_osteoporosis_card_says_no_vitamin_d_not_zero_and_cites_what_it_links(client):
    (card,) = topic(
        call(
            client,
            VIEW,
            levels=[b.vitamin_d(35, when=ago(20))],
            conditions=[b.condition("64859006", "Osteoporosis")],
        ),
        "osteoporosis-calcium-vitd",
    )
    assert "vitamin D 0 IU/day" not in card["summary"] and "no vitamin D on file" in card["summary"]
    assert "NOF" in card["source"]["label"] and "800-1,000 IU/day" in card["source"]["label"]
    assert card["source"]["url"] == "https://doi.org/10.1007/s00198-014-2794-2"
    assert "AACE 2020 suggests 1,000-2,000 IU/day" in card["detail"]


def test_empiric_card_cites_the_rda_and_es2024(es2024_client):
    (card,) = topic(call(es2024_client, VIEW, birth="1945-01-02"), "vitd-empiric")
    assert "Endocrine Society 2024" in card["source"]["label"]
    assert "It names no dose" in card["detail"] and "IOM 2011 RDA" in card["detail"]
    (resource,) = med_resources(card)
    assert resource["medicationCodeableConcept"]["text"] == "Cholecalciferol 400 UNT Oral Tablet"
    assert resource["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == 2


def test_600_iu_is_not_ordered_as_if_a_product_gave_it(es2024_client):
    (card,) = topic(
        call(es2024_client, VIEW, birth="1996-01-02", conditions=[PREGNANT]), "vitd-empiric"
    )
    assert "suggestions" not in card and "No listed tablet gives exactly 600 IU" in card["detail"]


def test_no_card_says_d3_is_es2011s_preference(client):
    (card,) = topic(call(client, VIEW, levels=[b.vitamin_d(12, when=ago(20))]), "vitd-deficiency")
    assert "D3 is preferred" not in card["detail"]
    assert "accepts cholecalciferol (D3) or ergocalciferol (D2)" in card["detail"]


def test_deficiency_card_names_a_kidney_stone_history(client):
    (card,) = topic(
        call(
            client,
            VIEW,
            levels=[b.vitamin_d(12, when=ago(20))],
            conditions=[icd("Z87.442", "Personal history of urinary calculi", "stones")],
        ),
        "vitd-deficiency",
    )
    assert "History of kidney stones on file" in card["detail"] and "Z87.442" in card["detail"]
    assert "calcium 1,000 mg with vitamin D3 400 IU daily" in card["detail"]


# --- 8. Smaller readings ----------------------------------------------------------------------


def test_nmol_results_read_as_reported_then_converted(client):
    (card,) = topic(
        call(client, VIEW, levels=[b.vitamin_d(45, "nmol/L", when=ago(20), code="14635-7")]),
        "vitd-deficiency",
    )
    assert "45 nmol/L (about 18.0 ng/mL)" in card["summary"]
    assert "18.03" not in card["summary"] + card["detail"]


def test_a_vka_known_only_by_atc_is_named(client):
    vka: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": "p1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{b.PATIENT_ID}"},
        "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "B01AA04"}]},
    }
    (card,) = topic(
        call(
            client, SIGN, meds=[vka], drafts=[b.medication_request(*K2, mid="k2", status="draft")]
        ),
        "vka-vitamin-k-interaction",
    )
    assert "phenprocoumon (ATC B01AA04; active order on file)" in card["detail"]
    assert "unnamed product" not in card["detail"]


def test_both_active_card_says_stopping_k2_moves_the_inr(client):
    warfarin = b.medication_request(
        "855332", "Warfarin Sodium 5 MG Oral Tablet", mid="w1", dose=1, unit="{tbl}"
    )
    k2 = b.medication_request(*K2, mid="k2", dose=1, unit="{tbl}")
    (card,) = topic(call(client, VIEW, meds=[warfarin, k2]), "vka-vitamin-k-interaction")
    assert "Stopping it moves the INR too" in card["detail"]
    drafted = call(client, SIGN, meds=[warfarin], drafts=[dict(k2, status="draft")])
    assert "Stopping it moves" not in topic(drafted, "vka-vitamin-k-interaction")[0]["detail"]


@pytest.mark.parametrize(
    ("case", "conditions", "meds", "fires"),
    [
        ("no exclusion", [], [], True),
        (
            "prior fragility fracture (Z87.310)",
            [icd("Z87.310", "History of osteoporosis fracture", "fx")],
            [],
            False,
        ),
        (
            "osteoporotic fracture (SNOMED 102447009)",
            [b.condition("102447009", "Osteoporotic fracture", cid="fx")],
            [],
            False,
        ),
        (
            "long-term oral prednisone",
            [],
            [text_med("Prednisone 5 MG Oral Tablet", "pred")],
            False,
        ),
        (
            "an inhaled glucocorticoid does not count",
            [],
            [text_med("Budesonide 0.09 MG/ACTUAT Inhalation Powder", "bud")],
            True,
        ),
        (
            "a topical one neither",
            [],
            [text_med("Hydrocortisone 10 MG/ML Topical Cream", "hc")],
            True,
        ),
    ],
)
def test_uspstf_silent_with_fracture_or_glucocorticoids(client, case, conditions, meds, fires):
    cards = call(
        client,
        SIGN,
        birth="1966-01-02",
        conditions=conditions,
        meds=meds,
        drafts=[dose(("309263", "Cholecalciferol 400 UNT Oral Tablet"), "d4", 400)],
    )
    assert bool(topic(cards, "uspstf-primary-prevention")) is fires, case


# --- 4. Orders that are real products -------------------------------------------------------


def test_every_suggested_order_of_every_fixture_is_a_sandbox_product(
    client, es2024_client, shared_data
):
    """Each suggested MedicationRequest of every fixture patient, service and profile: an RxNorm
    code the official sandbox offers, with exactly its name as display and text, whose strength
    times the dose quantity is the dose the order states, and which this service reads back as
    that dose (contract §4 "Suggested orders")."""
    import json
    import re

    from cds_service import fixtures
    from cds_service.facts.medications import read_medication
    from cds_service.facts.model import MedicationSource

    sandbox = json.loads((shared_data / "rxnorm-sandbox-subset" / "medications.json").read_text())
    seen = 0
    for each in (client, es2024_client):
        for name in fixtures.names():
            fixture = fixtures.load(name)
            for service in fixtures.HOOKS:
                reply = each.post(f"/cds-services/{service}", json=fixture.request(service))
                for card in reply.get_json()["cards"]:
                    for resource in med_resources(card):
                        where = (name, service, card["source"]["topic"]["code"])
                        (coding,) = resource["medicationCodeableConcept"]["coding"]
                        assert coding["code"] in sandbox, where
                        assert coding["display"] == sandbox[coding["code"]], where
                        assert resource["medicationCodeableConcept"]["text"] == coding["display"]
                        strength = int(re.search(r"(\d+) UNT", coding["display"]).group(1))
                        dosage = resource["dosageInstruction"][0]
                        units = dosage["doseAndRate"][0]["doseQuantity"]["value"]
                        shown = int(
                            re.match(r"([\d,]+) IU", dosage["text"]).group(1).replace(",", "")
                        )
                        assert strength * units == shown, where
                        med = read_medication(resource, MedicationSource.DRAFT)
                        assert med.vitamin_d_iu_per_dose == shown, where
                        seen += 1
    assert seen > 30


# --- one broken rule or card never takes the others down ----------------------------------------


def test_a_failing_rule_or_card_is_left_out_and_the_other_cards_go_out(client, monkeypatch, caplog):
    import logging

    from cds_service import cards as cards_module
    from cds_service import rules

    def broken(facts, guideline):
        raise ValueError("a record value that must not reach the log")

    record = {
        "levels": [b.vitamin_d(12, when=ago(20))],
        "meds": [
            b.medication_request(
                "855332", "Warfarin Sodium 5 MG Oral Tablet", mid="w1", dose=1, unit="{tbl}"
            ),
            b.medication_request(*K2, mid="k2", dose=1, unit="{tbl}"),
        ],
    }
    before = {c["source"]["topic"]["code"] for c in call(client, VIEW, **record)}
    assert {"vitd-deficiency", "vka-vitamin-k-interaction"} <= before
    caplog.set_level(logging.ERROR, logger="cds_service.engine")
    monkeypatch.setattr(rules, "RULES", (broken, *rules.RULES))
    real_render = cards_module.render

    def render(finding, *args, **kwargs):
        if finding.topic == "vitd-deficiency":
            raise KeyError("x")
        return real_render(finding, *args, **kwargs)

    monkeypatch.setattr(cards_module, "render", render)
    after = {c["source"]["topic"]["code"] for c in call(client, VIEW, **record)}
    assert after == before - {"vitd-deficiency"}
    messages = [(r.getMessage(), getattr(r, "cause", None)) for r in caplog.records]
    assert ("a rule failed", "ValueError") in messages
    assert ("a card could not be built", "KeyError") in messages
    assert "must not reach the log" not in caplog.text
