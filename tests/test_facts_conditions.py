"""Conditions grouped into the contract's categories, with clinical/verification status."""

from __future__ import annotations

import pytest

from cds_service.facts.conditions import categorise, read_conditions
from cds_service.facts.model import ConditionCategory as C

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


@pytest.mark.parametrize(
    "system,code,expected",
    [
        (SCT, "64859006", {C.OSTEOPOROSIS}),
        (SCT, "102447009", {C.OSTEOPOROSIS, C.FRAGILITY_FRACTURE}),
        (ICD, "M81.0", {C.OSTEOPOROSIS}),
        (ICD, "M810", {C.OSTEOPOROSIS}),
        (ICD, "M80.08XA", {C.OSTEOPOROSIS, C.FRAGILITY_FRACTURE}),
        (ICD, "M81.1", set()),
        (ICD, "M85.80", {C.OSTEOPENIA}),
        (SCT, "312894000", {C.OSTEOPENIA}),
        (ICD, "E55.9", {C.VITAMIN_D_DEFICIENCY}),
        (SCT, "34713006", {C.VITAMIN_D_DEFICIENCY}),
        (ICD, "E83.52", {C.HYPERCALCEMIA}),
        (ICD, "N20.0", {C.NEPHROLITHIASIS}),
        (ICD, "Z87.442", {C.NEPHROLITHIASIS}),
        (ICD, "N18.2", set()),
        (ICD, "N18.3", {C.CKD_3_5}),
        (ICD, "N18.31", {C.CKD_3_5}),
        (ICD, "N18.6", {C.CKD_3_5}),
        (ICD, "N18.9", set()),
        (ICD, "D86.0", {C.SARCOIDOSIS}),
        (ICD, "E21.0", {C.PRIMARY_HYPERPARATHYROIDISM}),
        (ICD, "E21.1", set()),
        (ICD, "Z91.81", {C.FALLS}),
        (ICD, "R29.6", {C.FALLS}),
        (SCT, "161898004", {C.FALLS}),
        (ICD, "K90.0", {C.MALABSORPTION}),
        (ICD, "Z98.84", {C.MALABSORPTION}),
        (ICD, "Z33.1", {C.PREGNANCY}),
        (SCT, "77386006", {C.PREGNANCY}),
        ("http://hl7.org/fhir/sid/icd-10", "M81.0", {C.OSTEOPOROSIS}),
        ("http://acme.example/codes", "M81.0", set()),
        (SCT, "M81.0", set()),
        (ICD, 810, set()),
    ],
)
def test_categories_by_code(system, code, expected):
    assert categorise(system, code) == frozenset(expected)


def condition(code="64859006", system=SCT, clinical="active", verification=None, **extra):
    out = {
        "resourceType": "Condition",
        "id": "c",
        "code": {"coding": [{"system": system, "code": code}]},
    }
    if clinical is not None:
        out["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": clinical}]}
    if verification is not None:
        out["verificationStatus"] = {"coding": [{"system": VERIFICATION, "code": verification}]}
    out.update(extra)
    return out


@pytest.mark.parametrize(
    "resource,counted",
    [
        (condition(), True),
        (condition(clinical="recurrence"), True),
        (condition(clinical="relapse"), True),
        (condition(clinical="resolved"), False),
        (condition(clinical="inactive"), False),
        (condition(clinical="remission"), False),
        (condition(verification="confirmed"), True),
        (condition(verification="provisional"), True),
        (condition(verification="entered-in-error"), False),
        (condition(verification="refuted"), False),
        (condition(clinical=None), True),
        (condition(clinical=None, abatementDateTime="2020-01-01"), False),
        ({**condition(clinical=None), "clinicalStatus": "active"}, True),  # STU3 string
        ({**condition(clinical=None), "clinicalStatus": "resolved"}, False),
        ({**condition(), "verificationStatus": "entered-in-error"}, False),
    ],
)
def test_status_rules(resource, counted):
    assert bool(read_conditions([resource])) is counted


def test_text_only_conditions_are_not_counted():
    assert (
        read_conditions(
            [
                {
                    "resourceType": "Condition",
                    "clinicalStatus": "active",
                    "code": {"text": "osteoporosis"},
                }
            ]
        )
        == ()
    )


def test_several_codings_merge_categories_and_keep_the_first_match():
    resource = condition()
    resource["code"]["coding"] += [
        {"system": ICD, "code": "E55.9", "display": "Vitamin D deficiency"}
    ]
    (c,) = read_conditions([resource])
    assert c.categories == {C.OSTEOPOROSIS, C.VITAMIN_D_DEFICIENCY}
    assert c.code == (SCT, "64859006")


@pytest.mark.parametrize(
    "resource",
    [
        None,
        3,
        {"resourceType": "Condition"},
        {"resourceType": "Condition", "code": []},
        {"resourceType": "Condition", "code": {"coding": [None, "x"]}},
    ],
)
def test_odd_resources_are_skipped(resource):
    assert read_conditions([resource]) == ()
