"""Guideline profiles: both ship valid, every value is cited, a bad file stops the start."""

from __future__ import annotations

import copy

import pytest

from cds_service import Settings, create_app, guideline
from cds_service.config import ConfigError
from cds_service.guideline import GuidelineError, load_guideline


@pytest.mark.parametrize("name", guideline.PROFILES)
def test_profiles_load_and_every_value_names_a_known_source(name):
    g = load_guideline(name)
    assert g.profile == name and g.version and g.title
    for group in (g.topics, g.levels, g.windows, g.ages, g.doses):
        for key, cited in group.items():
            assert cited.cite in g.citations, (name, key)
    for regimen in g.regimens.values():
        assert regimen.cite in g.citations
    for citation in g.citations.values():
        assert citation.label
        assert citation.url is None or citation.url.startswith("https://")


def test_default_profile_follows_the_contract():
    g = load_guideline("default")
    assert g.level("deficiency_below_ng_ml") == 20
    assert g.level("insufficiency_below_ng_ml") == 30
    assert (g.level("high_above_ng_ml"), g.level("critical_above_ng_ml")) == (100, 150)
    adult = g.regimens["adult"]
    assert [(c.dose_iu, c.every, c.weeks) for c in adult.courses] == [
        (50000, "wk", 8),
        (6000, "d", 8),
    ]
    assert 800 <= adult.maintenance.dose_iu <= 2000
    assert not g.enabled("vitd-empiric")


def test_es2024_spares_healthy_people_but_keeps_established_indications():
    """ES 2024 does not apply to an established indication (contract §4): a measured deficiency
    and the risk indications for a test stay on; only insufficiency (a target) goes."""
    g = load_guideline("es2024")
    assert g.enabled("vitd-deficiency") and not g.enabled("vitd-insufficiency")
    assert g.enabled("vitd-no-recent-level")
    assert g.enabled("vitd-empiric") and g.enabled("vitd-high-level")
    assert g.empiric.adult_from_years == 75


def _broken(monkeypatch, mutate):
    real = guideline._read

    def fake(name):
        data = copy.deepcopy(real(name))
        if name == "default":
            mutate(data)
        return data

    monkeypatch.setattr(guideline, "_read", fake)
    load_guideline.cache_clear()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["levels"].pop("deficiency_below_ng_ml"), "levels.deficiency_below_ng_ml"),
        (
            lambda d: d["levels"]["deficiency_below_ng_ml"].update(cite="nowhere"),
            "not in [citations]",
        ),
        (lambda d: d["levels"]["deficiency_below_ng_ml"].update(value="20"), "not a number"),
        (lambda d: d["doses"]["absolute_ceiling_iu"].update(value=-1), "above 0"),
        (lambda d: d["topics"]["vitd-deficiency"].update(value=1), "true or false"),
        (lambda d: d["levels"].update(extra={"value": 1, "cite": "es2011"}), "unknown keys"),
        (
            lambda d: d["regimens"]["pregnancy"]["courses"].append(
                {"key": "weekly", "dose_iu": 50000, "every": "wk", "weeks": 8}
            ),
            "regimens.pregnancy",
        ),
        (lambda d: d["citations"]["es2011"].update(url="http://insecure"), "https URL"),
        (lambda d: d["regimens"]["adult"]["courses"][0].pop("weeks"), "needs `weeks`"),
    ],
)
def test_a_bad_profile_is_refused_with_the_key_named(monkeypatch, mutate, message):
    _broken(monkeypatch, mutate)
    try:
        with pytest.raises(GuidelineError, match="guidelines/default.toml") as caught:
            load_guideline("default")
        assert message in str(caught.value)
    finally:
        load_guideline.cache_clear()


def test_a_bad_profile_stops_the_app_factory(monkeypatch, tmp_path):
    _broken(monkeypatch, lambda d: d["levels"].pop("high_above_ng_ml"))
    try:
        with pytest.raises(GuidelineError):
            create_app(Settings(database_url=f"sqlite:///{tmp_path}/s.db", auth_disabled=True))
    finally:
        load_guideline.cache_clear()


def test_unknown_profile_is_a_configuration_error():
    with pytest.raises(ConfigError, match="CDS_GUIDELINE_PROFILE"):
        Settings.from_env({"CDS_GUIDELINE_PROFILE": "es2099"})
    assert Settings.from_env({"CDS_GUIDELINE_PROFILE": "es2024"}).guideline_profile == "es2024"


@pytest.mark.parametrize("profile", guideline.PROFILES)
def test_discovery_names_the_active_profile(make_app, settings, profile):
    client = make_app(settings.with_overrides(guideline_profile=profile)).test_client()
    services = client.get("/cds-services").get_json()["services"]
    title = load_guideline(profile).title
    assert all(f"Guideline profile: {profile} ({title}" in s["description"] for s in services)


def test_each_topic_is_declared_once_and_found_by_cards_and_every_profile():
    """One declaration per topic (its rule module's TOPICS) drives the card check and the
    profile validator: every declared topic has a card file and a [topics] entry in each
    profile, and nothing else does (issue 16 item 1)."""
    from cds_service.cards import CARDS_DIR
    from cds_service.guideline import PROFILES
    from cds_service.rules import MODULES, SAFETY_TOPICS, TOPIC_IDS

    assert len(set(TOPIC_IDS)) == len(TOPIC_IDS)
    assert {t.id for m in MODULES for t in m.TOPICS} == set(TOPIC_IDS)
    assert {p.stem for p in CARDS_DIR.glob("*.toml")} == set(TOPIC_IDS)
    for name in PROFILES:
        g = load_guideline(name)
        assert set(g.topics) == set(TOPIC_IDS), name
        assert all(g.enabled(t) for t in SAFETY_TOPICS), name


def test_a_profile_entry_for_an_undeclared_topic_is_refused(monkeypatch):
    def mutate(data):
        data["topics"]["vitd-made-up"] = {"value": True, "cite": "es2011"}

    _broken(monkeypatch, mutate)
    try:
        with pytest.raises(guideline.GuidelineError, match="vitd-made-up"):
            load_guideline("default")
    finally:
        load_guideline.cache_clear()
