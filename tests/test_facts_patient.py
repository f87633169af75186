"""Patient facts: age at the hook's time (threshold birthdays), sex, deceased, odd input."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds_service.facts.fhirdates import parse_date, parse_instant
from cds_service.facts.patient import read_patient

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def patient(**fields):
    return {"resourceType": "Patient", "id": "p", **fields}


@pytest.mark.parametrize(
    "birth,age",
    [
        ("2026-11-25", 0),
        ("2025-11-26", 0),  # one day before the first birthday
        ("2025-11-25", 1),
        ("2008-11-26", 17),
        ("2008-11-25", 18),
        ("1977-11-26", 48),
        ("1976-11-25", 50),
        ("1961-11-26", 64),
        ("1961-11-25", 65),
        ("1951-11-26", 74),
        ("1951-11-25", 75),
        ("1950", 76),  # year only: read as 1 January (never younger than the truth)
        ("1950-12", 75),  # month only: read as 1 December
    ],
)
def test_age_in_whole_years_at_the_hooks_time(birth, age):
    assert read_patient(patient(birthDate=birth), NOW).age_years == age


@pytest.mark.parametrize(
    "birth,on,age",
    [
        ("2008-02-29", datetime(2026, 2, 28, tzinfo=UTC), 17),
        ("2008-02-29", datetime(2026, 3, 1, tzinfo=UTC), 18),
        ("2008-02-29", datetime(2028, 2, 29, tzinfo=UTC), 20),
    ],
)
def test_leap_day_birthdays(birth, on, age):
    assert read_patient(patient(birthDate=birth), on).age_years == age


def test_infants_have_age_in_days():
    p = read_patient(patient(birthDate="2026-10-26"), NOW)
    assert (p.age_years, p.age_days, p.birth_date) == (0, 30, date(2026, 10, 26))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"birthDate": "unknown"},
        {"birthDate": 1950},
        {"birthDate": "2030-01-01"},
        {"birthDate": "1950-13-01"},
    ],
)
def test_no_usable_birth_date_means_no_age(fields):
    p = read_patient(patient(**fields), NOW)
    assert p is not None and p.age_years is None and p.age_days is None and p.birth_date is None


@pytest.mark.parametrize(
    "fields,deceased",
    [
        ({}, False),
        ({"deceasedBoolean": False}, False),
        ({"deceasedBoolean": True}, True),
        ({"deceasedBoolean": "true"}, False),  # not a boolean: not read as deceased
        ({"deceasedDateTime": "2020-01-01"}, True),
    ],
)
def test_deceased(fields, deceased):
    assert read_patient(patient(**fields), NOW).deceased is deceased


@pytest.mark.parametrize("resource", [None, [], "Patient", {"resourceType": "Observation"}, {}])
def test_not_a_patient(resource):
    assert read_patient(resource, NOW) is None


def test_sex_and_id_are_read_only_when_strings():
    assert read_patient(patient(gender="female"), NOW).sex == "female"
    odd = read_patient({"resourceType": "Patient", "id": 7, "gender": ["x"]}, NOW)
    assert odd.sex is None and odd.id is None


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2024", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-05", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00+02:00", datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-01T10:00:00", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.123-05:00", datetime(2024, 5, 1, 15, 0, 0, 123000, tzinfo=UTC)),
        ("yesterday", None),
        ("2024-02-30", None),
        (20240501, None),
        (None, None),
    ],
)
def test_parse_instant(value, expected):
    assert parse_instant(value) == expected


def _parse_instant_before(value):
    """parse_instant as it was before its fast path for 10-character dates (issue 19): the
    oracle the fast path must agree with."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) <= 10:
        day = parse_date(text)
        if day is not None:
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


_DATE_LIKE = st.one_of(
    st.text(alphabet="0123456789-WTZ:+. \u0663\u00b2", min_size=8, max_size=12),
    st.dates().map(date.isoformat),
    st.dates().map(lambda d: d.strftime("%G-W%V-%u")),
    st.dates().map(lambda d: f" {d.isoformat()} "),
)


@given(_DATE_LIKE)
def test_parse_instant_fast_path_agrees_with_the_old_reading(value):
    assert parse_instant(value) == _parse_instant_before(value)


@pytest.mark.parametrize(
    "value", ["2024-02-29", "2023-02-29", "2024-W01-1", "2024-13-01", "٢٠٢٤-٠٥-٠١", "2024-5-01 "]
)
def test_parse_instant_ten_character_edges(value):
    assert parse_instant(value) == _parse_instant_before(value)


def test_parse_date_rejects_times():
    assert parse_date("2024-05-01T10:00:00Z") is None and parse_date("2024-05-01") == date(
        2024, 5, 1
    )
