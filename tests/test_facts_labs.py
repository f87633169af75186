"""25(OH)D and calcium results: codes, statuses, units (threshold edges), comparators, dates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cds_service.facts.labs import read_calcium_levels, read_inr_levels, read_vitamin_d_levels

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def obs(
    value=None,
    unit="ng/mL",
    *,
    code="62292-8",
    status="final",
    when="2026-10-01",
    oid="o1",
    **extra,
):
    out = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": code}]},
    }
    if when:
        out["effectiveDateTime"] = when
    if value is not None:
        out["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    out.update(extra)
    return out


@pytest.mark.parametrize(
    "value,unit,ng_ml",
    [
        (19.9, "ng/mL", 19.9),
        (20, "ng/mL", 20.0),
        (29.9, "ng/mL", 29.9),
        (30, "ng/mL", 30.0),
        (12, "ng/ml", 12.0),
        (12, "ug/L", 12.0),
        (12, "µg/L", 12.0),
        (49.9, "nmol/L", 49.9 / 2.496),
        (50, "nmol/L", 50 / 2.496),
        (75, "nmol/l", 75 / 2.496),
        (100, "ng/mL", 100.0),
        (150.5, "ng/mL", 150.5),
    ],
)
def test_units_are_normalised_to_ng_ml(value, unit, ng_ml):
    (level,) = read_vitamin_d_levels([obs(value, unit)])
    assert level.ng_ml == pytest.approx(ng_ml)
    assert level.raw_unit == unit


def test_nmol_edges_fall_either_side_of_20_ng_ml():
    below, at = (read_vitamin_d_levels([obs(v, "nmol/L")])[0].ng_ml for v in (49.9, 50))
    assert below < 20 < at


@pytest.mark.parametrize("code", ["62292-8", "1989-3", "49054-0", "14635-7", "35365-6"])
def test_every_accepted_code_is_read(code):
    assert [lvl.loinc for lvl in read_vitamin_d_levels([obs(20, code=code)])] == [code]


@pytest.mark.parametrize("code", ["2236-8", "1990-1", "4548-4"])
def test_dihydroxy_d2_only_and_other_codes_are_never_counted(code):
    assert read_vitamin_d_levels([obs(20, code=code)]) == ()


def test_an_excluded_code_beside_an_accepted_one_excludes_the_result():
    both = obs(20)
    both["code"]["coding"].append({"system": LOINC, "code": "2236-8"})
    assert read_vitamin_d_levels([both]) == ()


def test_code_without_loinc_system_is_not_read():
    local = obs(20)
    local["code"]["coding"][0]["system"] = "http://acme.example/labs"
    assert read_vitamin_d_levels([local]) == ()


@pytest.mark.parametrize(
    "status,counted",
    [
        ("final", True),
        ("amended", True),
        ("corrected", True),
        ("preliminary", False),
        ("registered", False),
        ("cancelled", False),
        ("entered-in-error", False),
        ("unknown", False),
        (None, False),
    ],
)
def test_statuses(status, counted):
    assert bool(read_vitamin_d_levels([obs(20, status=status)])) is counted


@pytest.mark.parametrize(
    "quantity,ng_ml,comparator,raw",
    [
        ({"value": 5, "comparator": "<", "unit": "ng/mL"}, 5.0, "<", "5"),
        ({"value": 150, "comparator": ">=", "unit": "ng/mL"}, 150.0, ">=", "150"),
        ({"value": 12, "comparator": "~", "unit": "ng/mL"}, 12.0, None, "12"),
        ({"value": "12.5", "unit": "ng/mL"}, 12.5, None, "12.5"),
        ({"value": 12, "unit": "mg/dL"}, None, None, "12"),
        ({"value": 12}, None, None, "12"),
        ({"value": "low", "unit": "ng/mL"}, None, None, "low"),
        ({"value": -3, "unit": "ng/mL"}, None, None, "-3"),
        ({"value": 5000, "unit": "ng/mL"}, None, None, "5000"),
        ({"value": True, "unit": "ng/mL"}, None, None, "True"),
        ({"unit": "ng/mL"}, None, None, None),
    ],
)
def test_values_comparators_and_uninterpretable_results(quantity, ng_ml, comparator, raw):
    resource = obs()
    resource["valueQuantity"] = quantity
    (level,) = read_vitamin_d_levels([resource])
    assert (level.ng_ml, level.comparator, level.raw_value) == (ng_ml, comparator, raw)
    assert level.interpretable is (ng_ml is not None)


def test_ucum_code_wins_over_unit_text():
    resource = obs()
    resource["valueQuantity"] = {
        "value": 50,
        "unit": "nanomoles per litre",
        "system": UCUM,
        "code": "nmol/L",
    }
    assert read_vitamin_d_levels([resource])[0].ng_ml == pytest.approx(50 / 2.496)


@pytest.mark.parametrize(
    "text,ng_ml,comparator",
    [
        ("<5 ng/mL", 5.0, "<"),
        ("12 ng/mL", 12.0, None),
        ("see comment", None, None),
        ("12 pg", None, None),
    ],
)
def test_value_string(text, ng_ml, comparator):
    (level,) = read_vitamin_d_levels([obs(valueString=text)])
    assert (level.ng_ml, level.comparator) == (ng_ml, comparator)


def test_data_absent_reason_is_kept_as_uninterpretable():
    (level,) = read_vitamin_d_levels([obs(dataAbsentReason={"text": "hemolysed"})])
    assert level.ng_ml is None and level.raw_value is None


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({"effectiveDateTime": "2026-10-01"}, datetime(2026, 10, 1, tzinfo=UTC)),
        (
            {"effectivePeriod": {"start": "2026-09-01", "end": "2026-09-03"}},
            datetime(2026, 9, 3, tzinfo=UTC),
        ),
        (
            {"effectivePeriod": {"start": "2026-09-01"}, "issued": "2026-09-05T08:00:00Z"},
            datetime(2026, 9, 5, 8, tzinfo=UTC),
        ),
        ({"issued": "2026-09-05T08:00:00+02:00"}, datetime(2026, 9, 5, 6, tzinfo=UTC)),
        ({}, None),
    ],
)
def test_result_date(fields, expected):
    (level,) = read_vitamin_d_levels([obs(20, when=None, **fields)])
    assert level.when == expected


def test_newest_first_and_undated_last():
    levels = read_vitamin_d_levels(
        [
            obs(10, when="2025-01-01", oid="old"),
            obs(11, when=None, oid="undated"),
            obs(12, when="2026-06-01", oid="new"),
            obs(13, when="2026-01-01T00:00:00+05:00", oid="mid"),
        ]
    )
    assert [lvl.observation_id for lvl in levels] == ["new", "mid", "old", "undated"]


@pytest.mark.parametrize(
    "resource",
    [
        None,
        "x",
        [],
        {"resourceType": "Observation"},
        {"resourceType": "Observation", "status": "final", "code": "62292-8"},
        {"resourceType": "Observation", "status": "final", "code": {"coding": "x"}},
    ],
)
def test_odd_resources_are_skipped(resource):
    assert read_vitamin_d_levels([resource]) == ()


@pytest.mark.parametrize(
    "value,unit,code,mg_dl",
    [
        (10.5, "mg/dL", "17861-6", 10.5),
        (2.62, "mmol/L", "2000-8", 2.62 * 4.008),
        (2.5, "mmol/L", "2000-8", 10.02),
        (10, "g/L", "17861-6", None),
    ],
)
def test_calcium(value, unit, code, mg_dl):
    (level,) = read_calcium_levels([obs(value, unit, code=code)])
    assert level.mg_dl == (pytest.approx(mg_dl) if mg_dl is not None else None)


def test_calcium_and_vitamin_d_do_not_mix():
    both = [obs(10.5, "mg/dL", code="17861-6", oid="ca"), obs(25, oid="vd")]
    assert [lvl.observation_id for lvl in read_calcium_levels(both)] == ["ca"]
    assert [lvl.observation_id for lvl in read_vitamin_d_levels(both)] == ["vd"]


def inr(value, unit=None, *, code="6301-6", **kw):
    out = obs(None, code=code, **kw)
    if value is not None:
        quantity = {"value": value}
        if unit is not None:
            quantity.update({"unit": unit, "system": UCUM, "code": unit})
        out["valueQuantity"] = quantity
    return out


@pytest.mark.parametrize(
    "resource,ratio",
    [
        (inr(2.4), 2.4),  # INR is a ratio: no unit is the usual shape
        (inr(2.4, "{INR}"), 2.4),
        (inr(3.1, "{ratio}"), 3.1),
        (inr(1.1, "1"), 1.1),
        (inr(2.0, code="34714-6"), 2.0),
        (inr(2.4, "mg/dL"), None),  # a unit that is not a ratio: not interpreted
        (inr(45), None),  # above the sanity bound: an entry error
        (obs(None, code="6301-6", valueString="2.7"), 2.7),
        (obs(None, code="6301-6", valueString="pending"), None),
    ],
)
def test_inr_values(resource, ratio):
    (level,) = read_inr_levels([resource])
    assert level.ratio == (pytest.approx(ratio) if ratio is not None else None)
    assert level.interpretable is (ratio is not None)


def test_inr_keeps_comparator_status_rules_and_order():
    high = inr(8, when="2026-03-01", oid="new")
    high["valueQuantity"]["comparator"] = ">"
    levels = read_inr_levels(
        [inr(2.1, when="2026-01-01", oid="old"), high, inr(2.5, status="preliminary", oid="p")]
    )
    assert [(lvl.observation_id, lvl.comparator) for lvl in levels] == [("new", ">"), ("old", None)]


def test_inr_vitamin_d_and_calcium_do_not_mix():
    mixed = [inr(2.4, oid="inr"), obs(25, oid="vd"), obs(10.5, "mg/dL", code="17861-6", oid="ca")]
    assert [lvl.observation_id for lvl in read_inr_levels(mixed)] == ["inr"]
    assert [lvl.observation_id for lvl in read_vitamin_d_levels(mixed)] == ["vd"]
    assert [lvl.observation_id for lvl in read_calcium_levels(mixed)] == ["ca"]


def test_a_vitamin_d_number_with_no_unit_stays_uninterpretable():
    (level,) = read_vitamin_d_levels([obs(None, valueString="12")])
    assert level.ng_ml is None and level.raw_value == "12"


def _knowledge_codes(kind: str, field: str) -> list[str]:
    from cds_service.knowledge import load

    return [entry["code"] for entry in load("labs")[kind][field]]


def test_only_observations_a_reader_counts_are_read_at_all(monkeypatch):
    from cds_service.facts import labs

    counted = [
        *_knowledge_codes("vitamin_d_25oh", "accepted"),
        *_knowledge_codes("calcium", "codes"),
        *_knowledge_codes("inr", "codes"),
    ]
    excluded_only = _knowledge_codes("vitamin_d_25oh", "excluded")
    other = ["2345-7", "718-7"]  # glucose, haemoglobin: labs no reader counts
    record = [obs(10, code=c, oid=f"o{n}") for n, c in enumerate(counted + excluded_only + other)]
    both = obs(10, oid="both")
    both["code"]["coding"] = [
        {"system": LOINC, "code": excluded_only[0]},
        {"system": LOINC, "code": counted[0]},
    ]
    record.append(both)
    looks = []
    original = labs._loinc_codes
    monkeypatch.setattr(labs, "_loinc_codes", lambda r: looks.append(r["id"]) or original(r))
    kept = labs.lab_observations([*record, "not a resource", None, obs(10, status="preliminary")])
    assert [r["id"] for r, _codes, _when in kept.items] == [f"o{n}" for n in range(len(counted))] + [
        "both"
    ]
    assert sorted(looks) == sorted(r["id"] for r in record)  # one look at each resource
    # and the readers give the same levels from the kept ones as from the whole record
    monkeypatch.setattr(labs, "_loinc_codes", original)
    for read in (read_vitamin_d_levels, read_calcium_levels, read_inr_levels):
        assert read(kept) == read(record)
