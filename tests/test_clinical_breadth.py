"""Issue 16 through HTTP: higher-need adults (ES 2011 recommendation 4.2), active vitamin D analogs
and calcifediol, vitd-test-overuse and the NICE profile, with their edges (BMI 29.9/30, day 89/90,
24.9/25 and 49.9/50 nmol/L, ages 17/18/19), in the profiles they concern. The three gathering
modes are covered by the fixture patients of these cases (tests/test_fixtures_e2e.py)."""

from __future__ import annotations

import dataclasses

import pytest

from tests import builders as b
from tests.test_clinical_review import (
    D3_1000,
    D3_50000,
    PREGNANT,
    SELECT,
    SIGN,
    VIEW,
    ago,
    calcium,
    call,
    dose,
    icd,
    med_resources,
    text_med,
    topic,
)

CALCITRIOL = ("308867", "Calcitriol 0.00025 MG Oral Capsule")


def bmi(value: float, days: int = 60) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"bmi-{value}",
        "status": "final",
        "code": {"coding": [{"system": b.LOINC, "code": "39156-5"}]},
        "subject": {"reference": f"Patient/{b.PATIENT_ID}"},
        "effectiveDateTime": ago(days),
        "valueQuantity": {"value": value, "unit": "kg/m2", "system": b.UCUM, "code": "kg/m2"},
    }


def lab_draft(sid: str = "t1", *, days_ahead: int = 0) -> dict:
    return {
        "resourceType": "ServiceRequest",
        "id": sid,
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{b.PATIENT_ID}"},
        "code": {"coding": [{"system": b.LOINC, "code": "62292-8"}], "text": "25(OH)D"},
        "occurrenceDateTime": ago(-days_ahead),
    }


def course_doses(card: dict) -> list[int]:
    """The first (course) dose of each suggestion, in IU."""
    out = []
    for suggestion in card.get("suggestions", []):
        meds = [
            a["resource"]
            for a in suggestion["actions"]
            if a["type"] == "create" and a["resource"]["resourceType"] == "MedicationRequest"
        ]
        if meds:
            text = meds[0]["dosageInstruction"][0]["text"]
            out.append(int(text.split(" IU")[0].replace(",", "")))
    return out


@pytest.fixture
def profile_client(make_app, settings):
    def make(profile: str):
        return make_app(dataclasses.replace(settings, guideline_profile=profile)).test_client()

    return make


# --- Higher-need adults ----------------------------------------------------------------------

PHENYTOIN = text_med("Phenytoin 100 MG Extended Release Oral Capsule", "ph")


@pytest.mark.parametrize(
    ("case", "birth", "observations", "meds", "conditions", "courses", "names"),
    [
        ("BMI 29.9", "1980-01-02", [bmi(29.9)], [], [], [50000, 6000], None),
        ("BMI 30", "1980-01-02", [bmi(30)], [], [], [6000, 10000], "BMI 30 kg/m²"),
        (
            "BMI 34 but 13 months old",
            "1980-01-02",
            [bmi(34, days=400)],
            [],
            [],
            [50000, 6000],
            None,
        ),
        (
            "obesity on the problem list",
            "1980-01-02",
            [],
            [],
            [icd("E66.01", "Morbid obesity", "ob")],
            [6000, 10000],
            "Morbid obesity",
        ),
        ("phenytoin", "1980-01-02", [], [PHENYTOIN], [], [6000, 10000], "Phenytoin 100 MG"),
        (
            "coeliac disease (malabsorption)",
            "1980-01-02",
            [],
            [],
            [icd("K90.0", "Celiac disease", "k90")],
            [6000, 10000],
            "Celiac disease",
        ),
        ("age 19 on phenytoin", "2007-06-01", [], [PHENYTOIN], [], [6000, 10000], "Phenytoin"),
        (
            "age 18 on phenytoin: the child band",
            "2008-06-01",
            [],
            [PHENYTOIN],
            [],
            [2000, 50000],
            "Phenytoin",
        ),
        (
            "age 17 on phenytoin: the child band",
            "2009-06-01",
            [],
            [PHENYTOIN],
            [],
            [2000, 50000],
            "Phenytoin",
        ),
        (
            "pregnant and obese: pregnancy keeps its ceiling",
            "1995-01-02",
            [bmi(35)],
            [],
            [PREGNANT],
            [4000],
            "BMI 35",
        ),
    ],
)
def test_higher_need_regimen(client, case, birth, observations, meds, conditions, courses, names):
    levels = [b.vitamin_d(14, when=ago(20)), *observations]
    (card,) = topic(
        call(client, VIEW, birth=birth, levels=levels, meds=meds, conditions=conditions),
        "vitd-deficiency",
    )
    assert course_doses(card) == courses, case
    if names:
        assert "Higher need for vitamin D" in card["detail"] and names in card["detail"], case
    else:
        assert "Higher need" not in card["detail"], case


def test_es2024_higher_need_changes_no_regimen(profile_client):
    (card,) = topic(
        call(profile_client("es2024"), VIEW, levels=[b.vitamin_d(14, when=ago(20)), bmi(34)]),
        "vitd-deficiency",
    )
    assert course_doses(card) == [50000, 6000] and "BMI 34 kg/m²" in card["detail"]


@pytest.mark.parametrize(("observations", "dose_iu"), [([bmi(34)], 3000), ([bmi(29)], 1000)])
def test_higher_need_insufficiency(client, observations, dose_iu):
    (card,) = topic(
        call(client, VIEW, levels=[b.vitamin_d(25, when=ago(20)), *observations]),
        "vitd-insufficiency",
    )
    assert course_doses(card) == [dose_iu]


@pytest.mark.parametrize(
    ("obese", "daily_iu", "fires"),
    [(True, 6000, False), (True, 6500, True), (False, 4500, True), (True, 12000, True)],
)
def test_higher_need_raises_the_no_deficiency_limit_to_6000(client, obese, daily_iu, fires):
    levels = [b.vitamin_d(35, when=ago(20))] + ([bmi(34)] if obese else [])
    cards = call(client, SIGN, levels=levels, drafts=[dose(D3_1000, "d", daily_iu)])
    assert bool(topic(cards, "vitd-high-dose")) is fires


@pytest.mark.parametrize(
    ("case", "observations", "meds", "fires"),
    [
        ("obese, no level", [bmi(31)], [], True),
        ("phenytoin, no level", [], [PHENYTOIN], True),
        ("oral prednisone, no level", [], [text_med("Prednisone 10 MG Oral Tablet", "p")], True),
        (
            "inhaled budesonide only",
            [],
            [text_med("Budesonide 0.2 MG/ACTUAT Inhaler", "bu")],
            False,
        ),
        ("BMI 29.9, no level", [bmi(29.9)], [], False),
    ],
)
def test_new_risk_indications_ask_for_a_level(client, case, observations, meds, fires):
    cards = call(client, VIEW, levels=observations, meds=meds)
    assert bool(topic(cards, "vitd-no-recent-level")) is fires, case


# --- Active analogs and calcifediol -------------------------------------------------------------


@pytest.mark.parametrize(("level", "fires"), [(15, True), (19.9, True), (20, False), (25, False)])
def test_active_analog_with_a_low_level_adds_cholecalciferol(client, level, fires):
    cards = call(
        client,
        SIGN,
        levels=[b.vitamin_d(level, when=ago(20))],
        conditions=[icd("N18.31", "CKD stage 3a", "ckd")],
        drafts=[b.medication_request(*CALCITRIOL, mid="cal", status="draft", dose=1, unit="{tbl}")],
    )
    found = topic(cards, "vitd-active-analog")
    assert bool(found) is fires
    if found:
        (card,) = found
        assert card["indicator"] == "info" and "KDIGO 2017" in card["detail"]
        for suggestion in card["suggestions"]:
            assert all(a["type"] == "create" for a in suggestion["actions"])  # never a delete
        assert course_doses(card) == [50000, 6000]


def test_an_analog_is_never_vitamin_d(client):
    """Calcitriol on file counts in no total and is not 'on vitamin D' for osteoporosis."""
    cal = b.medication_request(*CALCITRIOL, mid="cal", dose=2, unit="{tbl}")
    cards = call(
        client,
        VIEW,
        levels=[b.vitamin_d(35, when=ago(20))],
        meds=[cal],
        conditions=[b.condition("64859006", "Osteoporosis")],
    )
    (card,) = topic(cards, "osteoporosis-calcium-vitd")
    assert "no vitamin D on file" in card["summary"]
    drafted = call(
        client,
        SIGN,
        levels=[b.vitamin_d(35, when=ago(20))],
        meds=[cal],
        drafts=[dose(D3_1000, "d", 4000)],
    )
    assert topic(drafted, "vitd-high-dose") == []  # 4,000 IU/day: the analog adds nothing


@pytest.mark.parametrize(
    ("product", "fires"),
    [
        (CALCITRIOL, True),
        (("197431", "Calcifediol 0.02 MG Oral Capsule"), True),
        (("0", "Calcitriol 0.003 MG/ML Topical Ointment"), False),
        (("0", "calcipotriene 0.005 % Topical Cream"), False),
    ],
)
def test_drafted_analogs_and_calcifediol_fire_the_hypercalcaemia_check(client, product, fires):
    draft = text_med(product[1], "an")
    draft["status"] = "draft"
    cards = call(client, SIGN, levels=[calcium(11.0)], drafts=[draft])
    assert bool(topic(cards, "vitd-hypercalcemia-risk")) is fires


# --- vitd-test-overuse ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "days_since", "days_ahead", "level", "conditions", "fires"),
    [
        ("day 6 weeks", 42, 0, 25, [], True),
        ("day 89", 89, 0, 25, [], True),
        ("day 90", 90, 0, 25, [], False),
        ("the 3-month repeat this service suggests", 0, 91, 25, [], False),
        ("after a level above 100 ng/mL", 30, 0, 120, [], False),
        ("with sarcoidosis", 30, 0, 25, [b.condition("31541009", "Sarcoidosis", cid="s")], False),
    ],
)
def test_test_overuse_edges(client, case, days_since, days_ahead, level, conditions, fires):
    for service in (SIGN, SELECT):
        cards = call(
            client,
            service,
            levels=[b.vitamin_d(level, when=ago(days_since))],
            conditions=conditions,
            drafts=[lab_draft(days_ahead=days_ahead)],
        )
        found = topic(cards, "vitd-test-overuse")
        assert bool(found) is fires, (case, service)
        if found:
            (card,) = found
            (suggestion,) = card["suggestions"]
            assert [a["resourceId"] for a in suggestion["actions"]] == ["ServiceRequest/t1"]
            assert f"{days_since} days after the last result" in card["summary"]


def test_test_overuse_is_silent_after_an_unreadable_result(client):
    unreadable = b.vitamin_d(25, when=ago(30))
    unreadable["valueQuantity"]["unit"] = unreadable["valueQuantity"]["code"] = "furlongs"
    cards = call(client, SIGN, levels=[unreadable], drafts=[lab_draft()])
    assert topic(cards, "vitd-test-overuse") == []


@pytest.mark.parametrize(
    ("case", "birth", "conditions", "fires"),
    [
        ("healthy adult 40", "1985-01-02", [], True),
        ("healthy adult 80: not 19-74", "1945-01-02", [], False),
        ("adult with osteoporosis", "1985-01-02", [b.condition("64859006", "Osteoporosis")], False),
        ("pregnant adult", "1995-01-02", [PREGNANT], False),
    ],
)
def test_es2024_spares_healthy_adults_routine_tests(profile_client, case, birth, conditions, fires):
    levels = [b.vitamin_d(30, when=ago(400))]
    for profile, expected in (("es2024", fires), ("default", False)):
        cards = call(
            profile_client(profile),
            SIGN,
            birth=birth,
            levels=levels,
            conditions=conditions,
            drafts=[lab_draft()],
        )
        assert bool(topic(cards, "vitd-test-overuse")) is expected, (case, profile)


# --- Profile nice -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nmol", "expected"),
    [
        (24.9, "vitd-deficiency"),
        (25, "vitd-insufficiency"),
        (49.9, "vitd-insufficiency"),
        (50, None),
    ],
)
def test_nice_thresholds_in_nmol(profile_client, nmol, expected):
    level = b.vitamin_d(nmol, "nmol/L", when=ago(20), code="14635-7")
    cards = call(profile_client("nice"), VIEW, levels=[level])
    assert [c["source"]["topic"]["code"] for c in cards] == ([expected] if expected else [])
    if expected:
        assert cards[0]["summary"].count(f"{nmol:g} nmol/L") == 1  # nmol/L first
        assert "NICE" in cards[0]["source"]["label"]


def test_nice_loading_regimens_maintenance_and_calcium_follow_up(profile_client):
    (card,) = topic(
        call(
            profile_client("nice"),
            VIEW,
            levels=[b.vitamin_d(21, "nmol/L", when=ago(20), code="14635-7")],
        ),
        "vitd-deficiency",
    )
    assert course_doses(card) == [50000, 20000, 4000]
    for suggestion, weeks in zip(card["suggestions"], (6, 7, 10), strict=True):
        resources = [a["resource"] for a in suggestion["actions"]]
        course, maintenance, follow_up = resources
        assert (
            course["dosageInstruction"][0]["timing"]["repeat"]["boundsDuration"]["value"] == weeks
        )
        start = maintenance["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"]
        assert follow_up["code"]["coding"][0]["code"] == "29265-6"  # adjusted calcium
        assert follow_up["occurrenceDateTime"] == start  # both about 1 month after loading
    twice = card["suggestions"][1]["actions"][0]["resource"]["dosageInstruction"][0]
    assert twice["timing"]["repeat"] == {
        "frequency": 2,
        "period": 1,
        "periodUnit": "wk",
        "boundsDuration": {"value": 7, "unit": "wk", "system": b.UCUM, "code": "wk"},
    }


@pytest.mark.parametrize(
    ("meds", "dose_iu"),
    [
        ([text_med("Alendronic acid 70 MG Oral Tablet", "al")], 800),
        ([PHENYTOIN], 800),
        ([], 400),
    ],
)
def test_nice_insufficiency_by_risk_factor(profile_client, meds, dose_iu):
    (card,) = topic(
        call(
            profile_client("nice"),
            VIEW,
            levels=[b.vitamin_d(40, "nmol/L", when=ago(20), code="14635-7")],
            meds=meds,
        ),
        "vitd-insufficiency",
    )
    assert course_doses(card) == [dose_iu]
    assert ("SACN 2016" in card["detail"]) is (dose_iu == 400)


@pytest.mark.parametrize(("birth", "regimen"), [("2009-06-01", False), ("2007-06-01", True)])
def test_nice_under_18_names_the_finding_without_a_regimen(profile_client, birth, regimen):
    level = b.vitamin_d(20, "nmol/L", when=ago(20), code="14635-7")
    (card,) = topic(
        call(profile_client("nice"), VIEW, birth=birth, levels=[level]), "vitd-deficiency"
    )
    assert (card["indicator"] == "warning") is regimen
    assert bool(med_resources(card)) is regimen
    if not regimen:
        assert "covers adults" in card["detail"]


def test_nice_keeps_the_default_safety_topics(profile_client):
    cards = call(
        profile_client("nice"),
        SIGN,
        conditions=[PREGNANT],
        drafts=[dose(D3_50000, "w", 50000, per="wk")],
    )
    assert topic(cards, "vitd-high-dose")


def test_phytonadione_doses_read_in_mg(client):
    warfarin = b.medication_request(
        "855332", "Warfarin Sodium 5 MG Oral Tablet", mid="w1", dose=1, unit="{tbl}"
    )
    k1 = text_med("Phytonadione 5 MG Oral Tablet", "k1")
    k1["status"] = "draft"
    k1["dosageInstruction"] = [{"doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}]
    (card,) = topic(call(client, SIGN, meds=[warfarin], drafts=[k1]), "vka-vitamin-k-interaction")
    assert card["indicator"] == "info"
    assert "vitamin K 5 mg per dose" in card["detail"] and "5,000 µg" not in card["detail"]
