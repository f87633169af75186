"""vitd-deficiency / vitd-insufficiency / vitd-high-level / vitd-level-uninterpretable: the
threshold edges of the default profile, bands by age and pregnancy, and the order hooks."""

from __future__ import annotations

import pytest

from cds_service.rules import evaluate
from cds_service.rules.findings import Create, Delete, LabOrder, MedicationOrder
from tests.rule_facts import (
    DEFAULT,
    ES2024,
    PREGNANCY,
    condition,
    d3,
    days_ago,
    facts,
    level,
)


def topics(found):
    return [(f.topic, f.indicator) for f in found]


@pytest.mark.parametrize(
    ("value", "unit", "comparator", "expected"),
    [
        (19.9, "ng/mL", None, [("vitd-deficiency", "warning")]),
        (20, "ng/mL", None, [("vitd-insufficiency", "info")]),
        (29.9, "ng/mL", None, [("vitd-insufficiency", "info")]),
        (30, "ng/mL", None, []),
        (49.9, "nmol/L", None, [("vitd-deficiency", "warning")]),  # 19.99 ng/mL
        (50, "nmol/L", None, [("vitd-insufficiency", "info")]),  # 20.03 ng/mL
        (19.9, "ug/L", None, [("vitd-deficiency", "warning")]),
        (20, "ng/mL", "<", [("vitd-deficiency", "warning")]),  # "<20" is below 20
        (5, "ng/mL", "<", [("vitd-deficiency", "warning")]),
        (100, "ng/mL", None, []),
        (100.1, "ng/mL", None, [("vitd-high-level", "warning")]),
        (150, "ng/mL", None, [("vitd-high-level", "warning")]),
        (150.1, "ng/mL", None, [("vitd-high-level", "critical")]),
        (150, "ng/mL", ">", [("vitd-high-level", "critical")]),  # ">150" is above 150
        (374, "nmol/L", None, [("vitd-high-level", "warning")]),  # 149.84 ng/mL
        (376, "nmol/L", None, [("vitd-high-level", "critical")]),  # 150.64 ng/mL
    ],
)
def test_status_thresholds(value, unit, comparator, expected):
    f = facts(levels=[level(value, unit, comparator=comparator)])
    assert topics(evaluate(f, DEFAULT)) == expected


@pytest.mark.parametrize(
    ("age", "pregnant", "band", "course_keys"),
    [
        # Under 4 years: oral drops, for which no product code is verified: the card names the
        # regimen and the one suggestion is the repeat level (no tablet for a toddler).
        (0, False, "infant", ["recheck"]),
        (1, False, "child", ["recheck"]),
        (3, False, "child", ["recheck"]),
        (4, False, "child", ["daily", "weekly"]),
        (17, False, "child", ["daily", "weekly"]),
        (18, False, "child", ["daily", "weekly"]),
        (19, False, "adult", ["weekly", "daily"]),
        (64, False, "adult", ["weekly", "daily"]),
        (30, True, "pregnancy", ["daily"]),
        (17, True, "pregnancy", ["daily"]),
    ],
)
def test_deficiency_regimen_by_band(age, pregnant, band, course_keys):
    conditions = [condition(PREGNANCY)] if pregnant else []
    birth = days_ago(200) if age == 0 else None
    f = facts(age=age, birth_date=birth, levels=[level(12)], conditions=conditions)
    (found,) = evaluate(f, DEFAULT)
    assert found.topic == "vitd-deficiency"
    assert found.data["band"] == band
    assert [p.key for p in found.proposals] == course_keys
    assert found.data["form"] == ("liquid" if course_keys == ["recheck"] else "solid")
    regimen = DEFAULT.regimens[band]
    if course_keys == ["recheck"]:
        (proposal,) = found.proposals
        assert [a.order.lab for a in proposal.actions] == ["vitamin-d-25oh"]
        return
    for proposal, course in zip(found.proposals, regimen.courses, strict=True):
        orders = [a.order for a in proposal.actions if isinstance(a, Create)]
        meds = [o for o in orders if isinstance(o, MedicationOrder)]
        labs = [o for o in orders if isinstance(o, LabOrder)]
        assert [m.schedule for m in meds] == [course, regimen.maintenance]
        assert meds[1].starts_after_weeks == course.weeks  # maintenance follows the course
        assert [lab.lab for lab in labs] == ["vitamin-d-25oh"]
        assert 85 <= labs[0].due_in_days <= 95  # about 3 months


@pytest.mark.parametrize("age", [0, 1, 5, 17, 18])
def test_adult_regimens_never_reach_children(age):
    birth = days_ago(100) if age == 0 else None
    f = facts(age=age, birth_date=birth, levels=[level(8)])
    (found,) = evaluate(f, DEFAULT)
    adult = set(DEFAULT.regimens["adult"].courses)
    for proposal in found.proposals:
        for action in proposal.actions:
            if isinstance(action, Create) and isinstance(action.order, MedicationOrder):
                assert action.order.schedule not in adult
                assert action.order.schedule.dose_iu <= 50000


@pytest.mark.parametrize("age", [16, 25, 44])
def test_pregnancy_never_gets_weekly_megadoses_or_more_than_4000_a_day(age):
    f = facts(age=age, levels=[level(6)], conditions=[condition(PREGNANCY)])
    (found,) = evaluate(f, DEFAULT)
    assert found.proposals
    for proposal in found.proposals:
        for action in proposal.actions:
            if isinstance(action, Create) and isinstance(action.order, MedicationOrder):
                assert action.order.schedule.every == "d"
                assert action.order.schedule.daily_iu <= 4000


def test_no_birth_date_gives_the_card_without_a_regimen():
    f = facts(age=None, levels=[level(11)])
    (found,) = evaluate(f, DEFAULT)
    assert (found.topic, found.proposals) == ("vitd-deficiency", ())
    assert found.data["regimen"] is None


def test_deficiency_on_a_correction_dose_already_suggests_nothing_more():
    f = facts(levels=[level(12)], meds=[d3(50000, per="wk")])
    (found,) = [x for x in evaluate(f, DEFAULT) if x.topic == "vitd-deficiency"]
    # A course under way: information (course, re-check date), not a warning (issue 20 item 5).
    assert found.proposals == () and found.data["course"] is not None
    assert found.indicator == "info"
    # 400 IU/day on file is no treatment: the course is still offered.
    (found,) = evaluate(facts(levels=[level(12)], meds=[d3(400)]), DEFAULT)
    assert len(found.proposals) == 2


def test_the_newest_result_decides_and_stale_levels_give_no_status_card():
    newer_ok = facts(levels=[level(35, days=10, oid="a"), level(12, days=100, oid="b")])
    assert evaluate(newer_ok, DEFAULT) == []
    stale = facts(levels=[level(12, days=400)])  # older than 12 months
    assert evaluate(stale, DEFAULT) == []
    in_window = facts(levels=[level(12, days=360)])
    assert topics(evaluate(in_window, DEFAULT)) == [("vitd-deficiency", "warning")]


@pytest.mark.parametrize(
    ("newest", "expected"),
    [
        (level(30, "mmol/mL", days=5, oid="new"), [("vitd-level-uninterpretable", "info")]),
        (level(30, "furlongs", days=5, oid="new"), [("vitd-level-uninterpretable", "info")]),
    ],
)
def test_uninterpretable_newest_result_gives_no_dosing(newest, expected):
    f = facts(levels=[newest, level(12, days=200, oid="old")])
    found = evaluate(f, DEFAULT)
    assert topics(found) == expected
    assert found[0].proposals == ()
    assert found[0].data["earlier"]["ng_ml"] == 12


def test_uninterpretable_without_a_value():
    obs = level(10, days=3)
    del obs["valueQuantity"]
    found = evaluate(facts(levels=[obs]), DEFAULT)
    assert topics(found) == [("vitd-level-uninterpretable", "info")]


def test_an_older_uninterpretable_result_does_not_hide_a_newer_valid_one():
    f = facts(levels=[level(12, days=5, oid="new"), level(30, "mmol/mL", days=50, oid="old")])
    assert topics(evaluate(f, DEFAULT)) == [("vitd-deficiency", "warning")]


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_under_treating_draft_is_replaced_by_the_course(hook):
    f = facts(levels=[level(12)], drafts=[d3(400, mid="draft-1", status="draft")], hook=hook)
    (found,) = evaluate(f, DEFAULT)
    assert found.topic == "vitd-deficiency"
    for proposal in found.proposals:
        # The new orders first, the delete last (the sandbox applies only the first action).
        assert isinstance(proposal.actions[0], Create)
        assert proposal.actions[-1] == Delete(
            "MedicationRequest", "draft-1", found.data["draft"][0]["name"]
        )
        assert sum(isinstance(a, Create) for a in proposal.actions) == 3


@pytest.mark.parametrize(
    ("draft_iu", "per", "fires"),
    [(400, "d", True), (5000, "d", True), (6000, "d", False), (50000, "wk", False)],
)
def test_order_hooks_fire_only_for_an_under_treating_draft(draft_iu, per, fires):
    f = facts(
        levels=[level(12)],
        drafts=[d3(draft_iu, mid="x", per=per, status="draft")],
        hook="order-sign",
    )
    assert bool(evaluate(f, DEFAULT)) is fires


def test_order_hooks_are_silent_without_a_vitamin_d_draft():
    for value in (5, 25, 120):
        f = facts(levels=[level(value)], hook="order-sign")
        assert evaluate(f, DEFAULT) == [], value


def test_high_level_with_a_draft_removes_it_and_checks_calcium():
    f = facts(levels=[level(160)], drafts=[d3(1000, mid="dr", status="draft")], hook="order-select")
    (found,) = evaluate(f, DEFAULT)
    assert (found.topic, found.indicator) == ("vitd-high-level", "critical")
    (proposal,) = found.proposals
    assert proposal.actions == (
        Create(LabOrder("calcium", 0)),
        Delete("MedicationRequest", "dr", found.data["draft"][0]["name"]),
    )


@pytest.mark.parametrize(
    ("age", "expected"),
    [(19, ["daily"]), (45, ["daily"]), (10, [])],
)
def test_insufficiency_suggests_1000_iu_for_adults_only(age, expected):
    (found,) = evaluate(facts(age=age, levels=[level(25)]), DEFAULT)
    assert [p.key for p in found.proposals] == expected
    (on_dose,) = evaluate(facts(age=age, levels=[level(25)], meds=[d3(1000)]), DEFAULT)
    assert on_dose.proposals == ()


def test_es2024_has_no_targets_but_keeps_a_measured_deficiency_and_toxicity():
    """ES 2024 does not apply to an established indication: a measured level below 20 ng/mL
    still gets the deficiency card (naming the threshold's source); 25 ng/mL gets nothing."""
    for value in (12, 4, 19.9):
        (found,) = evaluate(facts(age=40, levels=[level(value)]), ES2024)
        assert (found.topic, found.indicator) == ("vitd-deficiency", "warning")
        assert found.data["no_threshold_profile"] is True and found.proposals
    (found,) = evaluate(facts(age=40, levels=[level(4, comparator="<")]), ES2024)
    assert found.topic == "vitd-deficiency"
    assert evaluate(facts(age=40, levels=[level(20)]), ES2024) == []
    assert evaluate(facts(age=40, levels=[level(25)]), ES2024) == []
    assert topics(evaluate(facts(age=40, levels=[level(160)]), ES2024)) == [
        ("vitd-high-level", "critical")
    ]


def test_deceased_patients_get_nothing():
    f = facts(levels=[level(5)], deceasedBoolean=True)
    assert evaluate(f, DEFAULT) == []


def _calcium(mg_dl: float) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"ca-{mg_dl}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "17861-6"}]},
        "subject": {"reference": "Patient/pat-1"},
        "effectiveDateTime": days_ago(5),
        "valueQuantity": {"value": mg_dl, "unit": "mg/dL"},
    }


@pytest.mark.parametrize(
    ("extra", "watch"),
    [
        ({"conditions": [condition("31541009")]}, True),  # sarcoidosis
        ({"conditions": [condition("36348003")]}, True),  # primary hyperparathyroidism
        ({"conditions": [condition("66931009")]}, True),  # hypercalcaemia
        ({"calcium": 10.6}, True),
        ({"calcium": 10.5}, False),
        ({}, False),
    ],
)
@pytest.mark.parametrize("value", [12, 25])
def test_no_dose_is_prefilled_when_vitamin_d_needs_calcium_monitoring(extra, watch, value):
    levels = [level(value)] + ([_calcium(extra["calcium"])] if "calcium" in extra else [])
    f = facts(levels=levels, conditions=extra.get("conditions", ()))
    (found,) = evaluate(f, DEFAULT)
    assert found.data["calcium_watch"] is watch
    assert bool(found.proposals) is not watch
