"""Limits on hostile input (issue 6): each exceeded limit is a clear 4xx or 412, never a 5xx."""

from __future__ import annotations

import json
import time
from itertools import accumulate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.config import ConfigError, Settings
from cds_service.limits import json_depth

from .builders import PREFETCH_KEYS, hook_request, medication_request, null_prefetch, searchset
from .fhir_stub import FhirStub, Reply

PV = "/cds-services/vitamin-d-patient-view"
SIGN = "/cds-services/vitamin-d-order-sign"
SELECT = "/cds-services/vitamin-d-order-select"


def post(client, url, body):
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json")


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def parsed_depth(value) -> int:
    """The reference: depth of a parsed value, walked recursively."""
    if isinstance(value, dict):
        return 1 + max(map(parsed_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(parsed_depth, value), default=0)
    return 0


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        (1, 0),
        ("x", 0),
        ([], 1),
        ({}, 1),
        ({"a": [1, {"b": []}]}, 4),
        (nested(50), 50),
        # brackets, quotes and backslashes inside strings are text, not nesting
        ({"[[[": "]]]{{{", "k": ["\\", '\\"[', '"}}'], "q": '\\"'}, 2),
        ("[[[[[", 0),
        (["\\", ["\\\\"], {"x": '\\\\\\"]]]'}], 2),
    ],
)
def test_json_depth_reads_the_text(value, depth):
    assert parsed_depth(value) == depth  # the table itself is right
    text = json.dumps(value)
    assert json_depth(text) == depth
    assert json_depth(text.encode()) == depth
    assert json_depth(json.dumps(value, ensure_ascii=False, indent=2).encode()) == depth


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ ab\u00e9\n'),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}"\\ k'), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_json_depth_of_any_text_is_the_depth_of_its_value(value):
    assert json_depth(json.dumps(value)) == parsed_depth(value)
    assert json_depth(json.dumps(value, ensure_ascii=False).encode()) == parsed_depth(value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="[]{} "))
def test_json_depth_of_bare_brackets_is_the_highest_count_of_open_ones(text):
    """Malformed text too: the number is the highest running count of open brackets."""
    steps = [{"[": 1, "{": 1, "]": -1, "}": -1}[c] for c in text if c != " "]
    assert json_depth(text) == max(accumulate(steps), default=0)


@settings(max_examples=300, deadline=None)
@given(json_values, st.integers(min_value=0, max_value=6))
def test_json_depth_with_a_limit_stops_counting_past_it(value, limit):
    depth = parsed_depth(value)
    counted = json_depth(json.dumps(value), limit)
    if depth <= limit:
        assert counted == depth
    else:
        assert limit < counted <= depth


def test_json_depth_with_a_limit_reads_a_very_deep_text_only_that_far():
    text = "[" * 200_000 + "]" * 200_000
    assert json_depth(text, 64) == 65
    assert json_depth(text) == 200_000  # without a limit, the whole way down


def test_nesting_deeper_than_the_limit_is_a_400(client):
    body = hook_request(prefetch=null_prefetch())
    body["context"]["deep"] = nested(70)
    reply = post(client, PV, body)
    assert reply.status_code == 400
    assert reply.get_json() == {
        "error": "request exceeds a limit",
        "details": ["JSON nested deeper than 64 levels"],
    }


def test_nesting_beyond_the_parser_is_a_400_before_parsing(client, monkeypatch):
    import cds_service.api

    def parser_must_not_run(raw):
        raise AssertionError("the parser saw a body nested too deeply")

    monkeypatch.setattr(cds_service.api, "parse_json", parser_must_not_run)
    raw = b'{"hook":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    reply = post(client, PV, raw)
    assert reply.status_code == 400
    assert reply.get_json() == {
        "error": "request exceeds a limit",
        "details": ["JSON nested deeper than 64 levels"],
    }


def test_nesting_limit_on_feedback(client):
    body = {"feedback": [nested(80)]}
    assert post(client, f"{PV}/feedback", body).status_code == 400


def test_nesting_within_the_limit_is_read(client):
    body = hook_request(prefetch=null_prefetch())
    body["context"]["deep"] = nested(40)
    assert post(client, PV, body).status_code == 200


def drafts(n: int) -> list[dict]:
    return [medication_request("855332", "Warfarin", mid=f"d{i}", status="draft") for i in range(n)]


def test_too_many_draft_orders(make_app, settings):
    client = make_app(settings.with_overrides(max_draft_orders=5)).test_client()
    ok = post(
        client,
        SIGN,
        hook_request("vitamin-d-order-sign", prefetch=null_prefetch(), drafts=drafts(5)),
    )
    assert ok.status_code == 200
    reply = post(
        client,
        SIGN,
        hook_request("vitamin-d-order-sign", prefetch=null_prefetch(), drafts=drafts(6)),
    )
    assert reply.status_code == 400
    assert reply.get_json()["details"] == ["context.draftOrders: 6 entries, at most 5"]
    select = post(
        client,
        SELECT,
        hook_request("vitamin-d-order-select", prefetch=null_prefetch(), drafts=drafts(6)),
    )
    assert select.get_json()["details"] == [
        "context.draftOrders: 6 entries, at most 5",
        "context.selections: 6 items, at most 5",
    ]


def test_too_many_prefetch_entries(make_app, settings):
    client = make_app(settings.with_overrides(max_prefetch_entries=10)).test_client()
    prefetch = null_prefetch()
    prefetch["observations"] = searchset(
        *[{"resourceType": "Observation", "id": f"o{i}"} for i in range(9)]
    )
    prefetch["patient"] = {"resourceType": "Patient", "id": "pat-1"}
    assert post(client, PV, hook_request(prefetch=prefetch)).status_code == 200
    prefetch["conditions"] = {"resourceType": "Condition", "id": "c"}
    reply = post(client, PV, hook_request(prefetch=prefetch))
    assert reply.status_code == 400
    assert reply.get_json()["details"] == ["prefetch: 11 resources, at most 10"]


def test_body_over_the_size_limit_is_a_413(make_app, settings):
    client = make_app(settings.with_overrides(max_body_bytes=4096)).test_client()
    body = hook_request(prefetch=null_prefetch())
    body["context"]["pad"] = "x" * 5000
    reply = post(client, PV, body)
    assert reply.status_code == 413
    assert reply.get_json() == {
        "error": "request entity too large",
        "details": ["at most 4096 bytes"],
    }


def _fetch_observations(client, stub, reply: Reply):
    stub.add("Observation", reply)
    prefetch = {k: None for k in PREFETCH_KEYS if k != "observations"}
    return post(client, PV, hook_request(prefetch=prefetch, fhir_server=stub.base_url))


def test_deeply_nested_fhir_response_fails_the_key(client):
    with FhirStub() as stub:
        reply = _fetch_observations(
            client, stub, Reply(body={"resourceType": "Bundle", "x": nested(100)})
        )
    assert reply.status_code == 412
    assert reply.get_json()["details"] == ["observations: nested too deeply"]


def test_oversized_fhir_response_fails_the_key(make_app, settings):
    client = make_app(settings.with_overrides(fhir_max_response_bytes=2048)).test_client()
    with FhirStub() as stub:
        big = {"resourceType": "Bundle", "type": "searchset", "pad": "x" * 5000}
        reply = _fetch_observations(client, stub, Reply(body=big, content_length=False))
    assert reply.status_code == 412
    assert reply.get_json()["details"] == ["observations: response too large"]


def test_slow_fhir_server_is_cut_at_the_budget(make_app, settings):
    client = make_app(settings.with_overrides(fhir_budget_s=0.3)).test_client()
    with FhirStub() as stub:
        started = time.monotonic()
        reply = _fetch_observations(client, stub, Reply(body={"resourceType": "Bundle"}, delay_s=5))
        elapsed = time.monotonic() - started
    assert reply.status_code == 412
    assert reply.get_json()["details"] == ["observations: timeout"]
    assert elapsed < 2  # no hang (a loose bound; speed itself is measured by bench/)


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"CDS_MAX_JSON_DEPTH": "32"}, "max_json_depth", 32),
        ({"CDS_MAX_DRAFT_ORDERS": "20"}, "max_draft_orders", 20),
        ({"CDS_MAX_PREFETCH_ENTRIES": "100"}, "max_prefetch_entries", 100),
        ({}, "max_json_depth", 64),
        ({}, "max_draft_orders", 100),
        ({}, "max_prefetch_entries", 5000),
    ],
)
def test_limit_settings(env, field, expected):
    assert getattr(Settings.from_env(env), field) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"CDS_MAX_JSON_DEPTH": "2"},
        {"CDS_MAX_DRAFT_ORDERS": "0"},
        {"CDS_MAX_PREFETCH_ENTRIES": "many"},
    ],
)
def test_bad_limit_settings(env):
    with pytest.raises(ConfigError, match=next(iter(env))):
        Settings.from_env(env)
