"""Client profiles (contract §7): the file is checked at start; each key has its effect through
HTTP, with authentication on and two issuers served differently by one running app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds_service import create_app
from cds_service.clients import ClientProfile, load_clients
from cds_service.config import ConfigError
from cds_service.profiles import plain_text

from .builders import full_record, hook_request, medication_request
from .jwt_helpers import ISS, PUBLIC_BASE, jwks, signer, write_issuers
from .test_metrics import scrape, value

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "clients.example.toml"
OTHER_ISS = "https://other-ehr.example.net/fhir"


def _write(tmp_path, text: str, name: str = "clients.toml") -> str:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return str(path)


# --- the file, checked at start ----------------------------------------------------------------


def test_the_shipped_example_file_is_valid_and_describes_three_clients():
    clients = load_clients(str(EXAMPLE))
    by_name = {c.name: c for c in clients.by_issuer.values()}
    assert set(by_name) == {"epic-like", "oracle-health-like", "sandbox"}
    oracle = by_name["oracle-health-like"]
    assert oracle.hooks == {"patient-view"} and oracle.links == "none"
    assert oracle.detail == "text"
    assert by_name["epic-like"].dedupe_order_sign is True
    assert by_name["sandbox"].profile == "es2024"


def test_a_key_left_out_takes_the_default_entrys_value(tmp_path):
    path = _write(
        tmp_path,
        '[default]\ndetail = "text"\nlinks = "none"\n\n'
        '[[clients]]\niss = "https://a.example.org"\nlinks = "all"\n',
    )
    clients = load_clients(path, "es2024")
    a = clients.for_caller("https://a.example.org", None)
    assert (a.detail, a.links, a.profile) == ("text", "all", "es2024")
    assert clients.for_caller(None, None) == clients.default
    assert clients.for_caller("https://unlisted.example.org", None) == clients.default
    assert load_clients(None).default == ClientProfile()


def test_a_tenant_entry_matches_only_tokens_with_that_tenant(tmp_path):
    path = _write(
        tmp_path,
        '[[clients]]\niss = "https://a.example.org"\ndetail = "text"\n\n'
        '[[clients]]\niss = "https://a.example.org"\ntenant = "north"\nname = "north"\n',
    )
    clients = load_clients(path)
    assert clients.for_caller("https://a.example.org", "north").name == "north"
    assert clients.for_caller("https://a.example.org", "south").name == "https://a.example.org"
    assert clients.for_caller("https://a.example.org", None).detail == "text"


@pytest.mark.parametrize(
    "text, named",
    [
        ('[default]\ncolour = "blue"\n', "'colour'"),
        ('[[clients]]\niss = "https://a.example.org"\nsilent = true\n', "'silent'"),
        ('[[clients]]\niss = "https://a.example.org"\nsilent_topics = ["vitd-nope"]\n', "silent_topics"),
        ('[[clients]]\niss = "https://a.example.org"\nprofile = "mars"\n', "profile 'mars'"),
        ('[[clients]]\niss = "https://a.example.org"\nhooks = ["order-dispatch"]\n', "hooks"),
        ('[[clients]]\niss = "https://a.example.org"\ndetail = "html"\n', "detail"),
        ('[[clients]]\niss = "https://a.example.org"\nlinks = "some"\n', "links"),
        ('[[clients]]\niss = "https://a.example.org"\ndedupe_order_sign = "yes"\n', "dedupe_order_sign"),
        ('[[clients]]\ntenant = "x"\n', "iss"),
        ('[[clients]]\niss = "https://a.example.org"\n[[clients]]\niss = "https://a.example.org"\n', "repeats"),
        ("[default\n", "not valid TOML"),
    ],
)
def test_a_bad_file_stops_the_start_naming_the_file_and_key(tmp_path, settings, text, named):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        create_app(settings.with_overrides(clients_file=path))
    assert path in str(caught.value) and named in str(caught.value)


def test_json_has_the_same_structure(tmp_path):
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"clients": [{"iss": "https://a.example.org", "hooks": ["order-sign"]}]}))
    assert load_clients(str(path)).for_caller("https://a.example.org", None).hooks == {"order-sign"}
    path.write_text(json.dumps({"clients": [{"iss": "https://a.example.org", "hooks": "order-sign"}]}))
    with pytest.raises(ConfigError, match="hooks must be a list"):
        load_clients(str(path))


def test_serve_refuses_to_start_with_a_bad_file(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cds_service.cli import main

    path = _write(tmp_path, '[default]\nshadow = ["x"]\n')
    monkeypatch.setenv("CDS_CLIENTS_FILE", path)
    monkeypatch.setenv("CDS_AUTH_DISABLED", "1")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 's.sqlite3'}")
    result = CliRunner().invoke(main, ["serve", "--port", "0"])
    assert result.exit_code != 0
    assert path in result.output and "'shadow'" in result.output


# --- plain-text detail -------------------------------------------------------------------------


def test_plain_text_removes_markdown_and_keeps_lists_readable():
    text = plain_text(
        "**25(OH)D 12 ng/mL** on 2026\\-10\\-01 \\(LOINC 62292\\-8\\) &lt;b&gt;\n\n"
        "Vitamin D on file:\n- D3 *1,000 IU*\n- [ES 2011](https://example.org/es)\n\n"
        "1. first\n2. second\n",
        links=False,
    )
    assert text == (
        "25(OH)D 12 ng/mL on 2026-10-01 (LOINC 62292-8) <b>\n\n"
        "Vitamin D on file:\n\n- D3 1,000 IU\n- ES 2011\n\n1. first\n2. second"
    )
    assert plain_text("[ES](https://example.org/es)") == "ES (https://example.org/es)"


# --- through HTTP: two issuers, one app ----------------------------------------------------------

A, B = signer("ES384", n=7), signer("ES256", n=8)


@pytest.fixture
def two_issuer_app(make_app, settings, tmp_path):
    issuers = write_issuers(
        tmp_path / "issuers.json",
        [{"iss": ISS, "jwks": jwks(A)}, {"iss": OTHER_ISS, "jwks": jwks(B)}],
    )
    clients = _write(
        tmp_path,
        f"""
[default]
detail = "markdown"

[[clients]]
name = "oracle-like"
iss = "{ISS}"
hooks = ["patient-view"]
links = "none"
detail = "text"
silent_topics = ["osteoporosis-calcium-vitd"]

[[clients]]
name = "epic-like"
iss = "{OTHER_ISS}"
profile = "es2024"
links = ["{PUBLIC_BASE}/"]

[[clients]]
name = "epic-north"
iss = "{OTHER_ISS}"
tenant = "north"
links = ["https://elsewhere.example.org/"]
""",
    )
    return make_app(
        settings.with_overrides(
            auth_disabled=False,
            trusted_issuers_file=issuers,
            public_base_url=PUBLIC_BASE,
            smart_client_id="vitd-history",  # the history link exists only with SMART launch
            clients_file=clients,
        )
    )


def call(client, key, iss, service="vitamin-d-patient-view", body=None, **claims):
    token = key.sign(iss=iss, aud=f"{PUBLIC_BASE}/cds-services/{service}", **claims)
    body = body or hook_request(service, prefetch=full_record())
    reply = client.post(
        f"/cds-services/{service}", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status_code == 200, reply.get_json()
    return reply.get_json()["cards"]


def by_topic(cards):
    return {c["source"]["topic"]["code"]: c for c in cards}


def test_two_issuers_get_different_answers_from_one_app(two_issuer_app):
    client = two_issuer_app.test_client()
    oracle = by_topic(call(client, A, ISS))
    epic = by_topic(call(client, B, OTHER_ISS))

    # profile: the es2024 client reads the same deficiency under the 2024 guideline
    assert "sets no threshold" in epic["vitd-deficiency"]["detail"]
    assert "sets no threshold" not in oracle["vitd-deficiency"]["detail"]
    # detail: markdown for one, plain text for the other (same facts)
    assert "**25(OH)D" in epic["vitd-deficiency"]["detail"]
    assert "**" not in oracle["vitd-deficiency"]["detail"]
    assert oracle["vitd-deficiency"]["detail"].startswith("25(OH)D 12 ng/mL on 2026-10-01")
    # links: none for one, allowed prefix for the other, another prefix for a tenant
    assert "links" not in oracle["vitd-deficiency"]
    assert epic["vitd-deficiency"]["links"][0]["url"].startswith(f"{PUBLIC_BASE}/")
    north = by_topic(call(client, B, OTHER_ISS, tenant="north"))
    assert "links" not in north["vitd-deficiency"] and "**" in north["vitd-deficiency"]["detail"]
    # silent topics: evaluated for both, returned to one only
    assert "osteoporosis-calcium-vitd" in epic
    assert "osteoporosis-calcium-vitd" not in oracle


def test_hooks_a_client_does_not_take_answer_no_cards(two_issuer_app):
    client = two_issuer_app.test_client()
    draft = medication_request("316672", "Cholecalciferol 50000 UNT Oral Capsule", mid="d1", status="draft", dose=50000)
    body = hook_request("vitamin-d-order-select", prefetch=full_record(), drafts=[draft])
    assert call(client, A, ISS, "vitamin-d-order-select", body) == []
    assert [c["source"]["topic"]["code"] for c in call(client, B, OTHER_ISS, "vitamin-d-order-select", body)] == ["vitd-high-dose"]


def test_shadow_mode_records_and_counts_silent_cards_but_never_returns_them(two_issuer_app):
    client = two_issuer_app.test_client()
    cards = call(client, A, ISS)
    assert "osteoporosis-calcium-vitd" not in by_topic(cards)
    store = two_issuer_app.extensions["vitd.runtime"].store
    import sqlalchemy as sa

    with store.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT topic, client, disposition FROM issued_card ORDER BY topic")
        ).all()
    assert ("osteoporosis-calcium-vitd", "oracle-like", "silent") in rows
    assert ("vitd-deficiency", "oracle-like", None) in rows
    samples = scrape(client)
    assert value(
        samples,
        "vitd_cds_cards_withheld_total",
        service="vitamin-d-patient-view",
        topic="osteoporosis-calcium-vitd",
        reason="silent",
    ) == 1
    assert value(
        samples,
        "vitd_cds_cards_total",
        service="vitamin-d-patient-view",
        topic="vitd-deficiency",
        indicator="warning",
    ) == 1


def test_a_snooze_is_per_client(two_issuer_app):
    client = two_issuer_app.test_client()
    card = by_topic(call(client, A, ISS))["vitd-deficiency"]
    url = f"{PUBLIC_BASE}/cds-services/vitamin-d-patient-view/feedback"
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-01T09:00:00Z",
        "overrideReason": {"reason": {"system": "urn:vitd-cds:override-reason", "code": "snooze-30d"}},
    }
    reply = client.post(
        "/cds-services/vitamin-d-patient-view/feedback",
        json={"feedback": [item]},
        headers={"Authorization": f"Bearer {A.sign(iss=ISS, aud=url)}"},
    )
    assert reply.status_code == 200
    assert "vitd-deficiency" not in by_topic(call(client, A, ISS))
    assert "vitd-deficiency" in by_topic(call(client, B, OTHER_ISS))
