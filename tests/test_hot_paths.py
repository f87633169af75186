"""Speed-ups found by profiling bench/run.py: same answers, bounded memory, nothing lost."""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service import ids
from cds_service.facts import medications
from cds_service.facts.model import Ingredient
from cds_service.store import Store, issued_card


def test_recognised_text_is_cached_only_when_short():
    medications._recognise_text_cached.cache_clear()
    short = "Warfarin Sodium 5 MG Oral Tablet"
    first = medications.recognise_text(short)
    assert medications.recognise_text(short) == first == medications._recognise_text(short)
    assert medications._recognise_text_cached.cache_info().hits == 1
    long = "Cholecalciferol 1000 IU " + "x" * 5000
    assert Ingredient.VITAMIN_D3 in medications.recognise_text(long)
    assert medications._recognise_text_cached.cache_info().currsize == 1  # the long one is not kept
    assert medications._recognise_text_cached.cache_info().maxsize == 4096



def test_strengths_from_names_are_cached_only_when_short():
    medications._strengths_from_names_cached.cache_clear()
    names = ("Cholecalciferol 50000 UNT Oral Capsule",)
    first = medications.strengths_from_names(names)
    assert first and first == medications._strengths_from_names(names)
    assert medications.strengths_from_names(list(names)) == first  # any iterable, same key
    assert medications._strengths_from_names_cached.cache_info().hits == 1
    long = ("Cholecalciferol 1000 UNT Oral Tablet " + "x" * 5000,)
    assert medications.strengths_from_names(long) == medications._strengths_from_names(long)
    assert medications._strengths_from_names_cached.cache_info().currsize == 1
    assert medications._strengths_from_names_cached.cache_info().maxsize == 4096


@pytest.mark.parametrize(
    "sent, expected",
    [("ng/mL", "ng/mL"), ("NG/ML", "ng/mL"), (" ng/ml ", "ng/mL"), ("nmol/L", "nmol/L"),
     ("NMOL/L", "nmol/L"), ("mg/dL", None), ("", None)],
)  # fmt: skip
def test_a_unit_is_found_case_insensitively_with_the_tables_factor(sent, expected):
    from cds_service.facts import labs
    from cds_service.knowledge import load

    table = load("labs")["vitamin_d_25oh"]["units_to_ng_ml"]
    factors = labs._unit_factors("vitamin_d_25oh", "units_to_ng_ml")
    found = factors.get(sent.strip().lower())
    assert found == (table[expected]["factor"] if expected else None)
    scanned = next((k for k in table if k.lower() == sent.strip().lower()), None)
    assert found == (table[scanned]["factor"] if scanned else None)  # what a scan finds


# --- issued-card records written in the background ------------------------------------------


def _card(topic: str) -> dict:
    return {"uuid": ids.uuid4_str(), "indicator": "info", "source": {"topic": {"code": topic}}}


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'rec.sqlite3'}")
    s.migrate()
    yield s
    s.dispose()


def _rows(store: Store) -> list[tuple[str, str]]:
    with store.engine.connect() as c:
        return sorted(c.execute(sa.select(issued_card.c.card_uuid, issued_card.c.topic)).all())


def _count_commits(store: Store) -> list[int]:
    commits = [0]
    sa.event.listen(store.engine, "commit", lambda _conn: commits.__setitem__(0, commits[0] + 1))
    return commits


def test_background_recording_queues_then_writes_one_batch(store):
    store.record_in_background(interval_s=60)  # only the final flush writes
    commits = _count_commits(store)
    cards = [[_card("vitd-deficiency"), _card("k2-consideration")] for _ in range(3)]
    for batch in cards:
        store.record_cards("vitamin-d-order-sign", batch, issued_at=datetime.now(UTC))
    assert _rows(store) == []  # the calls did not wait for the database
    store.flush_and_stop()
    assert _rows(store) == sorted(
        (c["uuid"], c["source"]["topic"]["code"]) for b in cards for c in b
    )
    assert commits[0] == 1
    # Stopped: writes are direct again.
    store.record_cards(
        "vitamin-d-order-sign", [_card("vitd-high-dose")], issued_at=datetime.now(UTC)
    )
    assert len(_rows(store)) == 7


def test_background_recording_writes_on_its_interval(store):
    store.record_in_background(interval_s=0.05)
    card = _card("vitd-deficiency")
    store.record_cards("vitamin-d-patient-view", [card], issued_at=datetime.now(UTC))
    deadline = datetime.now(UTC).timestamp() + 10
    while not _rows(store) and datetime.now(UTC).timestamp() < deadline:
        threading.Event().wait(0.02)
    assert _rows(store) == [(card["uuid"], "vitd-deficiency")]


def test_a_failing_write_is_logged_with_its_cause_not_raised(store, caplog):
    store.record_in_background(interval_s=60)
    with store.engine.begin() as c:
        c.execute(sa.text("DROP TABLE issued_card"))
    store.record_cards(
        "vitamin-d-patient-view", [_card("vitd-deficiency")], issued_at=datetime.now(UTC)
    )
    with caplog.at_level(logging.WARNING, logger="cds_service.store"):
        store.flush_and_stop()
    [record] = [r for r in caplog.records if r.getMessage().startswith("could not record")]
    assert record.cause.startswith("OperationalError: ")  # the cause, and no traceback
    assert record.exc_info is None


def test_a_full_queue_drops_and_says_so(store, monkeypatch, caplog):
    from cds_service.store import StoreLimits

    monkeypatch.setattr(store, "limits", StoreLimits(card_queue_rows=2))
    store.record_in_background(interval_s=60)
    for _ in range(3):
        store.record_cards(
            "vitamin-d-patient-view", [_card("vitd-deficiency")], issued_at=datetime.now(UTC)
        )
    with caplog.at_level(logging.WARNING, logger="cds_service.store"):
        store.flush_and_stop()
    assert len(_rows(store)) == 2
    assert "queue full" in caplog.text


def _uuid4() -> uuid.UUID:
    return uuid.UUID(hex=ids.uuid4_hex())


def test_ids_are_version_4_and_unique_across_a_fork():
    first = _uuid4()
    assert first.version == 4
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the buffer inherited from the parent must not be reused
        os.write(write, _uuid4().bytes)
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 16)
    parent_next = _uuid4().bytes
    os.close(read)
    os.close(write)
    assert child != parent_next
    assert len({_uuid4() for _ in range(1000)}) == 1000



def test_each_thread_draws_ids_from_its_own_batch(monkeypatch):
    """No lock shared by the request threads: under gunicorn's 16 threads a shared one made
    them queue behind one another at every id (13% more worker CPU per call, measured)."""
    reads = []
    real = os.urandom
    monkeypatch.setattr(ids.os, "urandom", lambda n: reads.append(n) or real(n))
    ids._reset()
    drawn: list[str] = []
    barrier = threading.Barrier(4)

    def draw() -> None:
        barrier.wait()
        drawn.extend(ids.uuid4_str() for _ in range(3))

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(reads) == 4  # one batch per thread, none shared
    assert len(set(drawn)) == 12
    assert not any(isinstance(v, type(threading.Lock())) for v in vars(ids).values())


def test_ids_stay_unique_when_many_threads_draw_at_once():
    out: list[list[str]] = [[] for _ in range(8)]

    def draw(n: int) -> None:
        out[n].extend(ids.uuid4_hex() for _ in range(3000))

    threads = [threading.Thread(target=draw, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({i for chunk in out for i in chunk}) == 24_000

UUID_STR = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_id_strings_are_what_uuid_makes_of_the_same_bytes(monkeypatch):
    """`uuid4_str`/`uuid4_hex` = `str`/`.hex` of `uuid.UUID(bytes=..., version=4)` on the same
    16 bytes, every variant and version digit included."""
    batch = bytes(range(256)) * 16  # every byte value in every position of an id
    monkeypatch.setattr(ids.os, "urandom", lambda n: batch[:n])
    ids._reset()
    expected = [uuid.UUID(bytes=batch[i : i + 16], version=4) for i in range(0, 4096, 16)]
    got = [ids.uuid4_str() if i % 2 else ids.uuid4_hex() for i in range(256)]
    assert got == [str(u) if i % 2 else u.hex for i, u in enumerate(expected)]
    ids._reset()


def test_id_strings_are_version_4_rfc_4122_and_unique():
    strs = [ids.uuid4_str() for _ in range(5000)]
    hexes = [ids.uuid4_hex() for _ in range(5000)]
    assert all(UUID_STR.match(s) for s in strs)
    assert all(re.fullmatch(r"[0-9a-f]{32}", h) for h in hexes)
    for text in strs + hexes:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert len({s.replace("-", "") for s in strs} | set(hexes)) == 10_000


def test_id_strings_are_unique_across_a_fork():
    ids.uuid4_str()  # the parent holds a partly used batch
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not hand out what the parent will
        os.write(write, "".join(ids.uuid4_hex() for _ in range(100)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 3200).decode()
    os.close(read)
    os.close(write)
    child_ids = {child[i : i + 32] for i in range(0, 3200, 32)}
    parent_ids = {ids.uuid4_str().replace("-", "") for _ in range(100)}
    assert len(child_ids) == 100 and not child_ids & parent_ids


# --- order resources: validated in full once per order, not once per call --------------------


@pytest.fixture
def model_parses(monkeypatch):
    """Counts full R4B validations, by resource type."""
    from cds_service import orders

    orders._valid_orders.clear()
    seen: list[str] = []
    original = orders.validated

    def counting(resource):
        seen.append(resource["resourceType"])
        return original(resource)

    monkeypatch.setattr(orders, "validated", counting)
    yield seen
    orders._valid_orders.clear()


NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_an_order_is_validated_in_full_once_then_trusted(model_parses):
    from cds_service.guideline import Schedule
    from cds_service.orders import build
    from cds_service.rules.findings import LabOrder, MedicationOrder

    course = MedicationOrder(Schedule(dose_iu=50_000, every="wk", weeks=8, key="course"))
    later = MedicationOrder(Schedule(dose_iu=1_000, every="d"), starts_after_weeks=8)
    lab = LabOrder("vitamin-d-25oh", due_in_days=90)
    first = [build(order, "p-1", NOW) for order in (course, later, lab)]
    assert model_parses == ["MedicationRequest", "MedicationRequest", "ServiceRequest"]
    again = [build(order, f"other-{n}", NOW) for n, order in enumerate((course, later, lab))]
    assert len(model_parses) == 3  # same orders, other patients: nothing parsed again
    # ... and what they built differs only where it must, and is valid FHIR anyway
    for a, b in zip(first, again, strict=True):
        assert a["subject"] != b["subject"] and a["id"] != b["id"]
        assert {k: v for k, v in a.items() if k not in ("subject", "id")} == {
            k: v for k, v in b.items() if k not in ("subject", "id")
        }
    from fhir.resources.R4B.medicationrequest import MedicationRequest
    from fhir.resources.R4B.servicerequest import ServiceRequest

    for resource in again:
        model = (
            MedicationRequest if resource["resourceType"] == "MedicationRequest" else ServiceRequest
        )
        model.model_validate(resource)
    build(MedicationOrder(Schedule(dose_iu=2_000, every="d")), "p-1", NOW)
    assert len(model_parses) == 4  # a new order is validated


def test_a_patient_id_that_is_not_a_fhir_id_is_validated_every_time(model_parses):
    from cds_service.guideline import Schedule
    from cds_service.orders import build
    from cds_service.rules.findings import MedicationOrder

    order = MedicationOrder(Schedule(dose_iu=1_000, every="d"))
    for _ in range(3):
        build(order, "not a FHIR id/..", NOW)
    assert len(model_parses) == 3


def test_an_invalid_order_resource_is_never_remembered_as_valid(model_parses, monkeypatch):
    from cds_service import orders
    from cds_service.guideline import Schedule
    from cds_service.rules.findings import MedicationOrder

    original = orders.medication_request
    monkeypatch.setattr(
        orders,
        "medication_request",
        lambda *a: {**original(*a), "subject": "Patient/p-1"},  # not a Reference
    )
    order = MedicationOrder(Schedule(dose_iu=1_000, every="d"))
    for _ in range(2):
        with pytest.raises(orders.InvalidResource):
            orders.build(order, "p-1", NOW)
    assert order not in orders._valid_orders


# --- JSON Schemas: references inlined once, same verdicts --------------------------------------


def _bad_requests() -> list:
    from .builders import hook_request, null_prefetch

    good = hook_request(prefetch=null_prefetch())
    return [
        good,
        {**good, "context": {**good["context"], "patientId": "Patient/123"}},  # not a FHIR id
        {**good, "context": {**good["context"], "userId": "Bob"}},
        {**good, "hook": "order-sign"},  # then draftOrders etc. are required
        {**good, "prefetch": {"x": [1]}},
        {**good, "fhirAuthorization": {"access_token": "t"}},
        [],
        {},
    ]


@pytest.mark.parametrize("name", ["request", "response", "feedback"])
def test_inlined_schemas_have_no_local_references_and_the_same_verdicts(name):
    import json
    from importlib import resources

    from jsonschema import Draft202012Validator

    from cds_service import validation

    compiled = validation.validator(name)
    assert '"#/$defs/' not in json.dumps(compiled.schema)
    text = resources.files("cds_service").joinpath(f"schemas/{name}.schema.json").read_text()
    original = Draft202012Validator(json.loads(text))
    instances = _bad_requests() + [{"cards": [{"summary": 1}]}, {"feedback": [{"card": 1}]}]
    verdicts = []
    for instance in instances:
        mine = sorted(e.message for e in compiled.iter_errors(instance))
        assert mine == sorted(e.message for e in original.iter_errors(instance))
        verdicts.append(bool(mine))
    assert True in verdicts and (name != "request" or False in verdicts)  # both kinds were seen


# --- jsonschema-rs answers "valid" first: it must agree with jsonschema -------------------------


def _fixture_documents() -> list[tuple[str, object]]:
    from cds_service import create_app, fixtures
    from cds_service.config import Settings

    app = create_app(Settings(auth_disabled=True, database_url="sqlite://"))
    client = app.test_client()
    docs: list[tuple[str, object]] = []
    for name in fixtures.names():
        fixture = fixtures.load(name)
        for service in fixtures.HOOKS:
            body = fixture.request(service, "prefetch")
            docs.append(("request", body))
            reply = client.post(f"/cds-services/{service}", json=body)
            docs.append(("response", reply.get_json()))
            for card in reply.get_json()["cards"]:
                item = {"card": card["uuid"], "outcomeTimestamp": "2026-11-25T10:00:00Z"}
                if card.get("suggestions"):
                    accepted = [{"id": card["suggestions"][0]["uuid"]}]
                    item.update(outcome="accepted", acceptedSuggestions=accepted)
                else:
                    item["outcome"] = "overridden"
                docs.append(("feedback", {"feedback": [item]}))
    return docs


FIXTURE_DOCUMENTS = _fixture_documents()


def _agree(name: str, instance) -> bool:
    from cds_service import validation

    python = validation.validator(name).is_valid(instance)
    assert validation.fast_validator(name).is_valid(instance) is python, (name, instance)
    return python


def test_both_validators_accept_every_fixture_request_response_and_feedback():
    assert {name for name, _ in FIXTURE_DOCUMENTS} == {"request", "response", "feedback"}
    assert all(_agree(name, doc) for name, doc in FIXTURE_DOCUMENTS)


_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=12
)
_json_any = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for n, child in enumerate(value):
            yield from _paths(child, (*prefix, n))


def _replaced(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, new)}
    out = list(value)
    out[head] = _replaced(value[head], rest, new)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_both_validators_give_the_same_verdict_on_altered_documents(data):
    name, doc = data.draw(st.sampled_from(FIXTURE_DOCUMENTS))
    path = data.draw(st.sampled_from(list(_paths(doc))[:400]))
    altered = _replaced(doc, path, data.draw(_json_any))
    if data.draw(st.booleans()) and isinstance(altered, dict) and altered:
        altered = {k: v for k, v in altered.items() if k != data.draw(st.sampled_from(sorted(altered)))}
    _agree(name, altered)


def test_a_refused_document_still_gets_jsonschema_messages():
    from cds_service.errors import BadRequest
    from cds_service.validation import check

    name, doc = next(d for d in FIXTURE_DOCUMENTS if d[0] == "request")
    bad = {**doc, "context": {**doc["context"], "patientId": "Patient/1"}}
    with pytest.raises(BadRequest) as refused:
        check("request", bad, "invalid CDS Hooks request")
    assert refused.value.details == ["context.patientId: 'Patient/1' does not match '^[A-Za-z0-9\\\\-.]{1,64}$'"]


# --- JWT ids in a SQLite file: a plain connection per thread, autocommit -----------------------


def test_sqlite_file_jti_inserts_bypass_the_engine_and_stay_exact(store):
    uses = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: uses.append(a[2]))
    assert store.remember_token("d-1", 2_000_000_000) is True
    assert store.remember_token("d-1", 2_000_000_000) is False  # a replay
    assert not [sql for sql in uses if "jwt_replay" in sql]  # the engine was not used

    results: dict[str, list[bool]] = {}

    def in_thread(name: str) -> None:
        results[name] = [store.remember_token(d, 2_000_000_000) for d in ("d-1", f"d-{name}")]

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {"a": [False, True], "b": [False, True]}
    assert len(store._raw) == 3  # one connection per thread that inserted
    with store.engine.connect() as c:  # what the engine (and PostgreSQL-shaped code) sees
        rows = c.execute(sa.text("SELECT token_digest FROM jwt_replay ORDER BY 1")).scalars().all()
    assert rows == ["d-1", "d-a", "d-b"]
    store.dispose()
    assert store._raw == []


def test_an_in_memory_sqlite_store_keeps_using_the_engine():
    s = Store("sqlite://")
    s.migrate()
    try:
        assert s.remember_token("d-1", 2_000_000_000) is True
        assert s.remember_token("d-1", 2_000_000_000) is False
        assert s._raw == []
    finally:
        s.dispose()


# --- facts built with a one-call __init__ -------------------------------------------------------


def test_every_facts_class_keeps_the_dataclass_behaviour_with_a_quicker_init():
    import dataclasses
    import inspect

    from cds_service.facts import model

    classes = [
        c for c in vars(model).values()
        if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == model.__name__
    ]  # fmt: skip
    assert {"Medication", "VitaminDLevel", "Facts", "Condition"} <= {c.__name__ for c in classes}
    for cls in classes:
        plain = dataclasses.dataclass(frozen=True)(
            type(cls.__name__, (), {"__annotations__": dict(cls.__annotations__), **{
                f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
            }})
        )  # fmt: skip
        assert inspect.signature(cls) == inspect.signature(plain), cls.__name__
        assert "update" in cls.__init__.__code__.co_names, cls.__name__  # the one-call init
        required = [
            f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]  # fmt: skip
        values = {name: (n,) for n, name in enumerate(required)}
        one, two = cls(**values), cls(*values.values())
        assert one == two and hash(one) == hash(two)
        for f in dataclasses.fields(cls):
            expected = values[f.name] if f.name in values else f.default
            assert getattr(one, f.name) == expected
        with pytest.raises(dataclasses.FrozenInstanceError):
            one.__setattr__(dataclasses.fields(cls)[0].name, "changed")
        with pytest.raises(TypeError):
            cls(**values, not_a_field=1)
        if required:
            with pytest.raises(TypeError):
                cls()
            changed = dataclasses.replace(one, **{required[0]: ("other",)})
            assert getattr(changed, required[0]) == ("other",) and changed != one
