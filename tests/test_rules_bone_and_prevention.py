"""vitd-no-recent-level, osteoporosis-calcium-vitd, k2-consideration, uspstf-primary-prevention
and vitd-empiric (es2024): firing and silent cases with their edges."""

from __future__ import annotations

import pytest

from cds_service.rules import evaluate
from cds_service.rules.findings import Create, Delete, LabOrder
from tests.rule_facts import (
    CKD,
    DEFAULT,
    DEFICIENCY_DX,
    ES2024,
    FALLS,
    OSTEOPENIA,
    OSTEOPOROSIS,
    PREGNANCY,
    SARCOIDOSIS,
    calcium,
    condition,
    d3,
    days_ago,
    facts,
    level,
    text_only,
    warfarin,
)


def fired(found, topic):
    return [f for f in found if f.topic == topic]


# --- vitd-no-recent-level ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"conditions": [condition(OSTEOPOROSIS)]}, "osteoporosis"),
        ({"conditions": [condition(OSTEOPENIA)]}, "osteopenia"),
        ({"age": 65, "conditions": [condition(FALLS)]}, "older-with-falls"),
        ({"conditions": [condition(CKD)]}, "ckd"),
        ({"conditions": [condition("396331005")]}, "malabsorption"),
        ({"meds": [d3(4001)]}, "high-dose"),
    ],
)
def test_no_recent_level_fires_for_each_risk_indication(kwargs, reason):
    found = fired(evaluate(facts(**{"age": 50, **kwargs}), DEFAULT), "vitd-no-recent-level")
    assert [f.data["reasons"] for f in found] == [[reason]]
    assert found[0].proposals[0].actions == (Create(LabOrder("vitamin-d-25oh", 0)),)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # healthy: never screen
        {"age": 64, "conditions": [condition(FALLS)]},  # falls but under 65
        {"age": 70},  # age alone is no indication
        {"meds": [d3(4000)]},  # 4,000 IU/day is not above 4,000
        {"conditions": [condition(DEFICIENCY_DX)]},  # a diagnosis is not an indication here
    ],
)
def test_no_recent_level_never_fires_without_a_risk_indication(kwargs):
    found = evaluate(facts(**{"age": 50, **kwargs}), DEFAULT)
    assert fired(found, "vitd-no-recent-level") == []


@pytest.mark.parametrize(("days", "fires"), [(300, False), (364, False), (370, True), (800, True)])
def test_no_recent_level_window_is_12_months(days, fires):
    f = facts(levels=[level(35, days=days)], conditions=[condition(CKD)])
    assert bool(fired(evaluate(f, DEFAULT), "vitd-no-recent-level")) is fires


def test_an_unreadable_result_is_not_a_recent_level():
    f = facts(levels=[level(30, "mmol/mL", days=10)], conditions=[condition(CKD)])
    assert fired(evaluate(f, DEFAULT), "vitd-no-recent-level")


def test_no_recent_level_on_order_hooks_needs_a_vitamin_d_draft():
    base = {"conditions": [condition(CKD)], "hook": "order-sign"}
    assert fired(evaluate(facts(**base), DEFAULT), "vitd-no-recent-level") == []
    draft = d3(1000, mid="dr", status="draft")
    assert fired(evaluate(facts(**base, drafts=[draft]), DEFAULT), "vitd-no-recent-level")


# --- osteoporosis-calcium-vitd -----------------------------------------------------------------


@pytest.mark.parametrize(("daily", "fires"), [(0, True), (400, True), (799, True), (800, False)])
def test_osteoporosis_card_below_800_iu(daily, fires):
    meds = [d3(daily)] if daily else []
    f = facts(age=70, levels=[level(32)], meds=meds, conditions=[condition(OSTEOPOROSIS)])
    found = fired(evaluate(f, DEFAULT), "osteoporosis-calcium-vitd")
    assert bool(found) is fires
    if found:
        (proposal,) = found[0].proposals
        added = proposal.actions[0].order.schedule.daily_iu
        assert 800 <= daily + added < 1200


def test_osteoporosis_card_needs_the_diagnosis():
    f = facts(age=70, levels=[level(32)], conditions=[condition(OSTEOPENIA)])
    assert fired(evaluate(f, DEFAULT), "osteoporosis-calcium-vitd") == []


def test_osteoporosis_card_defers_dosing_to_the_deficiency_card():
    f = facts(age=70, levels=[level(12)], conditions=[condition(OSTEOPOROSIS)])
    found = evaluate(f, DEFAULT)
    assert [x.topic for x in found] == ["vitd-deficiency", "osteoporosis-calcium-vitd"]
    assert found[1].proposals == () and found[1].data["deficient"] is True


COUMADIN_TEXT_ONLY = text_only("Coumadin 5 mg tablet", mid="w-text")

# --- k2-consideration --------------------------------------------------------------------------


def test_k2_for_established_osteoporosis_on_d_and_calcium():
    f = facts(
        age=70, levels=[level(35)], meds=[d3(800), calcium()], conditions=[condition(OSTEOPOROSIS)]
    )
    (found,) = fired(evaluate(f, DEFAULT), "k2-consideration")
    assert found.proposals == () and found.indicator == "info"


@pytest.mark.parametrize(
    "change",
    [
        {"meds": [d3(799), calcium()]},  # not yet adequate vitamin D
        {"meds": [d3(1000)]},  # no calcium
        {"meds": [d3(1000), calcium(), warfarin()]},  # a VKA: never
        {"meds": [d3(1000), calcium(), COUMADIN_TEXT_ONLY]},  # a VKA named only in text
        {"conditions": []},  # no osteoporosis
        {"levels": [level(120)]},  # high level: the card says hold vitamin D
    ],
)
def test_k2_silent(change):
    base = {
        "age": 70,
        "levels": [level(35)],
        "meds": [d3(1000), calcium()],
        "conditions": [condition(OSTEOPOROSIS)],
    }
    f = facts(**{**base, **change})
    assert fired(evaluate(f, DEFAULT), "k2-consideration") == []


def test_k2_for_vitamin_d_above_4000_but_never_with_a_vka():
    assert fired(evaluate(facts(meds=[d3(5000)], levels=[level(40)]), DEFAULT), "k2-consideration")
    assert (
        fired(evaluate(facts(meds=[d3(4000)], levels=[level(40)]), DEFAULT), "k2-consideration")
        == []
    )
    with_vka = facts(meds=[d3(5000), warfarin()], levels=[level(40)])
    assert fired(evaluate(with_vka, DEFAULT), "k2-consideration") == []


def test_k2_silent_when_a_vitamin_k_product_is_on_file():
    k2 = text_only("Vitamin K2 MK-7 100 mcg capsule", mid="k2")
    f = facts(meds=[d3(5000), k2], levels=[level(40)])
    assert fired(evaluate(f, DEFAULT), "k2-consideration") == []


# --- uspstf-primary-prevention -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "sex", "draft", "fires"),
    [
        (50, "female", "d400", True),
        (49, "female", "d400", False),
        (64, "male", "d400", False),
        (65, "male", "d400", True),
        (65, "male", "calcium", False),  # men: calcium evidence is I, not D
        (55, "female", "calcium", True),
        (60, "female", "d401", False),  # above 400 IU/day: I, not D
        (60, "female", "calcium2", True),  # 2 x 500 mg elemental = 1,000 mg
        (60, "female", "calcium3", False),  # 1,500 mg/day
    ],
)
def test_uspstf_edges(age, sex, draft, fires):
    drafts = {
        "d400": d3(400, mid="dr", status="draft"),
        "d401": d3(401, mid="dr", status="draft"),
        "calcium": calcium(mid="dr", status="draft"),
        "calcium2": calcium(mid="dr", status="draft", tablets=2),
        "calcium3": calcium(mid="dr", status="draft", tablets=3),
    }[draft]
    f = facts(age=age, sex=sex, levels=[level(32)], drafts=[drafts], hook="order-sign")
    found = fired(evaluate(f, DEFAULT), "uspstf-primary-prevention")
    assert bool(found) is fires
    if found:
        assert found[0].proposals[0].actions == (
            Delete("MedicationRequest", "dr", found[0].data["drafts"][0]["name"]),
        )


@pytest.mark.parametrize(
    "change",
    [
        {"conditions": [condition(OSTEOPOROSIS)]},
        {"conditions": [condition(OSTEOPENIA)]},
        {"conditions": [condition(FALLS)]},
        {"conditions": [condition(DEFICIENCY_DX)]},
        {"levels": [level(15)]},
        {"hook": "patient-view", "drafts": []},
    ],
)
def test_uspstf_exclusions(change):
    base = {
        "age": 60,
        "levels": [level(32)],
        "drafts": [d3(400, mid="dr", status="draft")],
        "hook": "order-sign",
    }
    found = evaluate(facts(**{**base, **change}), DEFAULT)
    assert fired(found, "uspstf-primary-prevention") == []


# --- vitd-empiric (es2024) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "pregnant", "group"),
    [
        (75, False, "older_adult"),
        (74, False, None),
        (0, False, None),
        (1, False, "child"),
        (18, False, "child"),
        (19, False, None),
        (30, True, "pregnancy"),
    ],
)
def test_empiric_groups(age, pregnant, group):
    conditions = [condition(PREGNANCY)] if pregnant else []
    birth = days_ago(100) if age == 0 else None
    f = facts(age=age, birth_date=birth, conditions=conditions)
    found = fired(evaluate(f, ES2024), "vitd-empiric")
    assert [x.data["group"] for x in found] == ([group] if group else [])
    assert fired(evaluate(f, DEFAULT), "vitd-empiric") == []  # default profile: never


@pytest.mark.parametrize(
    ("change", "fires"),
    [
        ({"meds": [d3(399)]}, True),
        ({"meds": [d3(400)]}, False),
        ({"conditions": [condition(SARCOIDOSIS)]}, False),
        ({"conditions": [condition("66931009")]}, False),  # hypercalcaemia
        ({"conditions": [condition("36348003")]}, False),  # primary hyperparathyroidism
    ],
)
def test_empiric_exclusions(change, fires):
    f = facts(**{"age": 80, **change})
    assert bool(fired(evaluate(f, ES2024), "vitd-empiric")) is fires


def test_osteoporosis_card_prefills_no_dose_when_calcium_must_be_watched():
    f = facts(
        age=70, levels=[level(32)], conditions=[condition(OSTEOPOROSIS), condition(SARCOIDOSIS)]
    )
    (found,) = fired(evaluate(f, DEFAULT), "osteoporosis-calcium-vitd")
    assert found.proposals == () and found.data["calcium_watch"] is True
