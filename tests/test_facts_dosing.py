"""Timing and dose arithmetic: administrations per day, doses, course length, strengths."""

from __future__ import annotations

import pytest

from cds_service.facts import dosing
from cds_service.facts.model import Ingredient as I


@pytest.mark.parametrize(
    "dosage,per_day",
    [
        ({"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}}, 1),
        ({"timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}}}, 3),
        ({"timing": {"repeat": {"period": 8, "periodUnit": "h"}}}, 3),
        ({"timing": {"repeat": {"frequency": 1, "period": 30, "periodUnit": "min"}}}, 48),
        ({"timing": {"repeat": {"frequency": 1, "period": 3, "periodUnit": "wk"}}}, 1 / 21),
        ({"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "a"}}}, 1 / 365),
        ({"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "fortnight"}}}, None),
        ({"timing": {"repeat": {"frequency": 2}}}, None),
        ({"timing": {"repeat": {"timeOfDay": ["08:00:00", "20:00:00", "22:00:00"]}}}, 3),
        ({"timing": {"code": {"coding": [{"code": "QID"}]}}}, 4),
        ({"timing": {"code": {"coding": [{"code": "WK"}]}}}, 1 / 7),
        ({"timing": {"code": {"coding": [{"code": "MO"}]}}}, 1 / 30),
        ({"timing": {"code": {"coding": [{"code": "PRN"}]}}}, None),
        ({"text": "Take one capsule weekly"}, 1 / 7),
        ({"text": "twice a day with food"}, 2),
        ({"text": "once a month"}, 1 / 30),
        ({"text": "as directed"}, None),
        ({"timing": "daily"}, None),
        ({}, None),
    ],
)
def test_administrations_per_day(dosage, per_day):
    result = dosing.administrations_per_day(dosage)
    assert result == (pytest.approx(per_day) if per_day is not None else None)


@pytest.mark.parametrize(
    "dosage,dose",
    [
        (
            {"doseAndRate": [{"doseQuantity": {"value": 50000, "code": "[iU]"}}]},
            dosing.Dose(iu=50000),
        ),
        ({"doseAndRate": [{"doseQuantity": {"value": 2, "unit": "mg"}}]}, dosing.Dose(ug=2000)),
        (
            {"doseAndRate": [{"doseQuantity": {"value": 1, "unit": "capsule"}}]},
            dosing.Dose(count=1),
        ),
        (
            {"doseAndRate": [{"type": {"text": "ordered"}}], "doseQuantity": {"value": 3}},
            dosing.Dose(count=3),
        ),
        ({"doseAndRate": [{"doseQuantity": {"value": -1, "unit": "IU"}}]}, None),
        ({"doseAndRate": [{"doseQuantity": {"value": "1", "unit": "IU"}}]}, None),
        ({"doseAndRate": "x"}, None),
        ({}, None),
    ],
)
def test_read_dose(dosage, dose):
    assert dosing.read_dose(dosage) == dose


@pytest.mark.parametrize(
    "component,parsed",
    [
        ("Vitamin K 2 0.09 MG", (0.09, "mg")),
        ("MK-7 100 mcg", (100.0, "mcg")),
        ("Vitamin D3 50,000 IU", (50000.0, "iu")),
        ("Cholecalciferol 1000 UNT", (1000.0, "unt")),
        ("Cholecalciferol", None),
    ],
)
def test_parse_strength(component, parsed):
    assert dosing.parse_strength(component) == parsed


@pytest.mark.parametrize(
    "number,unit,ingredient,amount",
    [
        (1000, "unt", I.VITAMIN_D3, 1000),
        (25, "mcg", I.VITAMIN_D3, 1000),
        (1.25, "mg", I.VITAMIN_D2, 50000),
        (100, "mg", I.VITAMIN_D2, None),  # 4,000,000 IU per unit: a data error, left unknown
        (0.09, "mg", I.VITAMIN_K2, 90),
        (1250, "mg", I.CALCIUM, 1250),
        (5, "ml", I.VITAMIN_D3, None),
    ],
)
def test_strength_in_base_units(number, unit, ingredient, amount):
    result = dosing.strength_in_base(number, unit, ingredient)
    assert (result.amount if result else None) == (
        pytest.approx(amount) if amount is not None else None
    )


@pytest.mark.parametrize(
    "repeat,days",
    [
        ({"boundsDuration": {"value": 8, "code": "wk"}}, 56),
        ({"boundsDuration": {"value": 6, "unit": "wk"}}, 42),
        ({"frequency": 1, "period": 1, "periodUnit": "wk", "count": 8}, 56),
        ({"frequency": 1, "period": 1, "periodUnit": "d"}, None),
    ],
)
def test_course_days(repeat, days):
    assert dosing.course_days({"timing": {"repeat": repeat}}) == days


def test_combine_daily():
    assert dosing.combine_daily([(None, 1000), (None, 1000)]) == 2000
    assert dosing.combine_daily([(1, 6000), (2, 1000)]) == 6000
    assert dosing.combine_daily([]) is None


class _Float(float):
    """A float subclass: takes the general path, to the same answer."""


@pytest.mark.parametrize(
    "value,expected",
    [
        (1.5, 1.5), (0.0, 0.0), (-2.5, -2.5), (3, 3.0), (0, 0.0), (_Float(2.5), 2.5),
        (float("inf"), None), (float("-inf"), None), (float("nan"), None), (10**400, None),
        (True, None), (False, None), (None, None), ("1", None), ([1], None), ({"value": 1}, None),
    ],
)  # fmt: skip
def test_finite_reads_only_finite_json_numbers(value, expected):
    number = dosing.finite(value)
    assert number == expected and (number is None or type(number) is float)
