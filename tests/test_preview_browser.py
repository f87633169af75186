"""/preview in a real browser (headless Debian Chromium): choose a patient and a hook, see the
warning card as an EHR shows it, accept its suggestion, and find the feedback in the store.
Screenshots go to tests/artifacts/ (git-ignored) for people to look at."""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from cds_service import fixtures

from .browser import chromium, save_screenshot
from .live_server import LiveServer

WAIT_S = 15


def _run(driver, base_url: str, patient: str, service: str) -> None:
    driver.get(f"{base_url}/preview")
    Select(driver.find_element(By.ID, "patient")).select_by_value(patient)
    Select(driver.find_element(By.ID, "service")).select_by_value(service)
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, WAIT_S).until(
        lambda d: "card(s)" in d.find_element(By.ID, "status").text
        or "HTTP" in d.find_element(By.ID, "status").text
    )
    status = driver.find_element(By.ID, "status").text
    assert "card(s)" in status, status


def _card(driver, topic: str):
    cards = driver.find_elements(By.CSS_SELECTOR, f'article.card[data-topic="{topic}"]')
    assert len(cards) == 1, [c.get_attribute("data-topic") for c in driver.find_elements(By.CSS_SELECTOR, "article.card")]
    return cards[0]


def _wait_feedback(driver, card) -> str:
    WebDriverWait(driver, WAIT_S).until(
        lambda d: card.find_element(By.CSS_SELECTOR, ".feedback-result").text.startswith("Feedback")
    )
    return card.find_element(By.CSS_SELECTOR, ".feedback-result").text


@pytest.mark.slow
@pytest.mark.parametrize(
    "patient,topic,action",
    [
        # warfarin + D3/K2 drafted: remove the draft (and offer plain D3), INR check
        ("warfarin-d3k2-draft", "vka-vitamin-k-interaction", "DELETE MedicationRequest/draft-d3k2"),
        # deficient with an under-dosed draft: a correction course replacing the draft
        ("adult-deficient", "vitd-deficiency", "CREATE MedicationRequest"),
    ],
)
def test_accept_a_suggestion_and_send_feedback(make_app, settings, patient, topic, action):
    app = make_app(settings)
    store = app.extensions["vitd.runtime"].store
    with LiveServer() as live, chromium() as driver:
        live.serve(app)
        _run(driver, live.url, patient, "vitamin-d-order-sign")
        card = _card(driver, topic)
        assert "null" not in card.text.split("\n")  # no absent part shown as text
        assert card.get_attribute("data-indicator") == "warning"
        assert card.find_element(By.CSS_SELECTOR, ".badge").text == "WARNING"
        border = card.value_of_css_property("border-left-color")
        assert border in ("rgba(210, 153, 34, 1)", "rgb(210, 153, 34)"), border  # --warning
        detail = card.find_element(By.CSS_SELECTOR, ".detail")
        assert detail.find_elements(By.TAG_NAME, "strong")  # markdown rendered ...
        assert "**" not in detail.text  # ... not shown raw
        source = card.find_element(By.CSS_SELECTOR, ".source a")
        assert source.get_attribute("href").startswith("https://")
        reasons = card.find_elements(By.CSS_SELECTOR, "select.override-reason option")
        assert reasons, "a warning card carries override reasons"

        button = card.find_element(By.CSS_SELECTOR, "button.accept")
        suggestion_id = button.get_attribute("data-suggestion")
        button.click()
        applied = card.find_element(By.CSS_SELECTOR, ".applied")
        assert any(li.text.startswith(action) for li in applied.find_elements(By.CSS_SELECTOR, "li.action")), applied.text
        resources = [json.loads(p.text) for p in applied.find_elements(By.CSS_SELECTOR, "pre.resource")]
        assert all(r["subject"]["reference"] == f"Patient/{patient}" for r in resources)
        assert _wait_feedback(driver, card).endswith("received 1, stored 1.")
        card_uuid = card.get_attribute("data-uuid")
        shot = save_screenshot(driver, f"preview-{patient}")
        # the patient's history picture is one link away
        history = driver.find_element(By.ID, "patient-history").get_attribute("href")
        assert history == f"{live.url}/preview/history/{patient}"
        driver.get(history)
        assert driver.title == "Vitamin D history"
        assert driver.find_elements(By.CSS_SELECTOR, "svg")
        save_screenshot(driver, f"preview-history-{patient}")

    (row,) = store.feedback_for_card(card_uuid)
    assert row["outcome"] == "accepted" and row["topic"] == topic
    assert json.loads(row["accepted_suggestion_ids"]) == [suggestion_id]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_dismiss_a_card_with_an_override_reason(make_app, settings):
    app = make_app(settings)
    store = app.extensions["vitd.runtime"].store
    with LiveServer() as live, chromium() as driver:
        live.serve(app)
        # a link with the choices in its query shows the cards without a click
        driver.get(f"{live.url}/preview?patient=high-level-critical&service=vitamin-d-patient-view")
        WebDriverWait(driver, WAIT_S).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "article.card")
        )
        assert Select(driver.find_element(By.ID, "patient")).first_selected_option.text == "high-level-critical"
        card = _card(driver, "vitd-high-level")
        assert card.get_attribute("data-indicator") == "critical"
        select = Select(card.find_element(By.CSS_SELECTOR, "select.override-reason"))
        select.select_by_index(len(select.options) - 1)
        chosen = select.first_selected_option.text
        card.find_element(By.CSS_SELECTOR, "button.dismiss").click()
        assert "(overridden)" in _wait_feedback(driver, card)
        assert all(not b.is_enabled() for b in card.find_elements(By.TAG_NAME, "button"))
        card_uuid = card.get_attribute("data-uuid")
    (row,) = store.feedback_for_card(card_uuid)
    assert row["outcome"] == "overridden" and row["override_reason_code"]
    assert chosen  # the reason shown to the user is one the card offered


@pytest.mark.slow
def test_record_text_never_becomes_markup_in_the_browser(make_app, settings, monkeypatch):
    """A product name full of HTML and markdown reaches summary and detail as plain text."""
    hostile = '<img src=x onerror="document.title=\'pwned\'"> **K2** [x](javascript:alert(1))'
    real_load = fixtures.load

    def load(name, now=None):
        fixture = real_load(name, now)
        if name == "warfarin-d3k2-draft":
            for draft in fixture.drafts:
                draft["medicationCodeableConcept"]["text"] = hostile
        return fixture

    monkeypatch.setattr(fixtures, "load", load)
    app = make_app(settings)
    with LiveServer() as live, chromium() as driver:
        live.serve(app)
        _run(driver, live.url, "warfarin-d3k2-draft", "vitamin-d-order-sign")
        card = _card(driver, "vka-vitamin-k-interaction")
        assert "<img" in card.find_element(By.CSS_SELECTOR, ".detail").text  # shown, as text
        assert not driver.find_elements(By.CSS_SELECTOR, "#cards img")
        assert not driver.find_elements(By.CSS_SELECTOR, '#cards a[href^="javascript"]')
        assert driver.title == "vitd-cds · card preview"


@pytest.mark.slow
def test_the_page_itself_never_injects_card_text_as_html(make_app, settings, monkeypatch):
    """Even a card that carries raw HTML in every text field (as a faulty rule or template
    might) is shown as text: the page's own escaping, not only the card templates'."""
    from cds_service import engine

    evil = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"

    def cards_for(facts, guideline, patient_id):
        return [
            {
                "uuid": "00000000-0000-4000-8000-000000000001",
                "summary": "S " + evil,
                "indicator": "warning",
                "detail": "**D** " + evil + " [x](javascript:alert(1))",
                "source": {"label": "L " + evil, "url": "javascript:alert(1)"},
                "selectionBehavior": "at-most-one",
                "suggestions": [
                    {
                        "uuid": "00000000-0000-4000-8000-000000000002",
                        "label": "G " + evil,
                        "actions": [{"type": "delete", "description": "A " + evil, "resourceId": "MedicationRequest/x"}],
                    }
                ],
                "overrideReasons": [{"code": "r", "display": "R " + evil}],
                "links": [
                    {"label": "K " + evil, "url": "javascript:alert(1)", "type": "absolute"},
                    {"label": "History", "url": "https://ehr.example.org/launch", "type": "smart"},
                ],
            }
        ]

    monkeypatch.setattr(engine, "cards_for", cards_for)
    app = make_app(settings.with_overrides(validate_responses=False))
    with LiveServer() as live, chromium() as driver:
        live.serve(app)
        _run(driver, live.url, "adult-deficient", "vitamin-d-patient-view")
        card = driver.find_element(By.CSS_SELECTOR, "article.card")
        card.find_element(By.CSS_SELECTOR, "button.accept").click()
        assert "<script>" in card.find_element(By.CSS_SELECTOR, ".summary").text
        assert "<img" in card.find_element(By.CSS_SELECTOR, ".detail").text
        assert "<img" in card.find_element(By.CSS_SELECTOR, ".applied").text
        links = card.find_elements(By.CSS_SELECTOR, ".links a")
        assert [(a.text, a.get_attribute("href")) for a in links] == [
            ("History (SMART app)", "https://ehr.example.org/launch")
        ]
        assert "<img" in card.find_element(By.CSS_SELECTOR, ".links").text
        assert not driver.find_elements(By.CSS_SELECTOR, "#cards img, #cards script")
        assert not driver.find_elements(By.CSS_SELECTOR, '#cards a[href^="javascript"]')
        assert driver.title == "vitd-cds · card preview"


def _wait_cards(driver) -> None:
    WebDriverWait(driver, WAIT_S).until(
        lambda d: "card(s)" in d.find_element(By.ID, "status").text
    )


@pytest.mark.slow
def test_changing_the_patient_clears_the_old_cards(make_app, settings):
    """The warfarin warning must not stay on screen under a patient without warfarin."""
    app = make_app(settings)
    with LiveServer() as live, chromium() as driver:
        live.serve(app)
        _run(driver, live.url, "warfarin-d3k2-draft", "vitamin-d-order-sign")
        assert _card(driver, "vka-vitamin-k-interaction")
        save_screenshot(driver, "preview-warfarin-d3k2-draft-order-sign")
        Select(driver.find_element(By.ID, "patient")).select_by_value("healthy-no-level")
        assert driver.find_element(By.ID, "patient-name").text == "healthy-no-level"
        assert driver.find_elements(By.CSS_SELECTOR, "#cards article.card") == []
        assert driver.find_element(By.ID, "status").text == ""
        assert driver.find_element(By.ID, "response-json").get_attribute("textContent") == ""
        # and a new call shows the new patient's own answer
        driver.find_element(By.ID, "run").click()
        _wait_cards(driver)
        topics = [c.get_attribute("data-topic") for c in driver.find_elements(By.CSS_SELECTOR, "article.card")]
        assert "vka-vitamin-k-interaction" not in topics


@pytest.mark.slow
def test_an_unknown_patient_in_the_link_says_so(make_app, settings):
    app = make_app(settings)
    with LiveServer() as live, chromium() as driver:
        live.serve(app)
        driver.get(f"{live.url}/preview?patient=nobody-here&service=vitamin-d-patient-view")
        status = driver.find_element(By.ID, "status")
        assert 'no patient "nobody-here"' in status.text and "error" in status.get_attribute("class")
        assert "nobody-here" in driver.find_element(By.ID, "patient-name").text
        assert driver.find_elements(By.CSS_SELECTOR, "#patient-record li") == []
        assert driver.find_elements(By.CSS_SELECTOR, "#cards article.card") == []
        assert driver.find_element(By.ID, "request-json").get_attribute("textContent") == ""


@pytest.mark.slow
def test_dismiss_without_a_reason_sends_no_reason(make_app, settings):
    """Not the menu's first reason: that would skew the override figures."""
    app = make_app(settings)
    store = app.extensions["vitd.runtime"].store
    with LiveServer() as live, chromium() as driver:
        live.serve(app)
        driver.get(f"{live.url}/preview?patient=high-level-critical&service=vitamin-d-patient-view")
        _wait_cards(driver)
        card = _card(driver, "vitd-high-level")
        select = Select(card.find_element(By.CSS_SELECTOR, "select.override-reason"))
        assert select.first_selected_option.get_attribute("value") == ""
        card.find_element(By.CSS_SELECTOR, "button.dismiss").click()
        assert "(overridden)" in _wait_feedback(driver, card)
        card_uuid = card.get_attribute("data-uuid")
    (row,) = store.feedback_for_card(card_uuid)
    assert row["outcome"] == "overridden" and row["override_reason_code"] is None


@pytest.mark.slow
def test_usable_at_420_px(make_app, settings):
    app = make_app(settings)
    with LiveServer() as live, chromium(width=420, height=900) as driver:
        live.serve(app)
        # headless Chromium keeps a wider minimum window: emulate the 420 px screen itself
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 420, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        _run(driver, live.url, "warfarin-d3k2-draft", "vitamin-d-order-sign")
        card = _card(driver, "vka-vitamin-k-interaction")
        card.find_element(By.CSS_SELECTOR, "button.accept").click()
        _wait_feedback(driver, card)
        viewport = driver.execute_script("return document.documentElement.clientWidth")
        widest = driver.execute_script(
            "return Math.max(...[...document.querySelectorAll('body *')]"
            ".filter(e => !e.closest('details:not([open])'))"
            ".map(e => e.getBoundingClientRect().right))"
        )
        assert viewport == 420
        assert widest <= viewport + 1, f"content {widest}px wide in a {viewport}px window"
        assert driver.execute_script("return document.documentElement.scrollWidth") <= viewport
        save_screenshot(driver, "preview-420px", width=420)
