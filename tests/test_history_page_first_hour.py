"""The history page as a newcomer opens it from /preview (headless Chromium): who the patient
is, an unreadable result off the scale (not at 0 in the deficient band), products without dates
still drawn, the VKA's dose, value labels that never overlap, and fixtures with a real history.
Screenshots go to tests/artifacts/ for people to look at."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from cds_service import fixtures

from .browser import chromium, save_screenshot
from .live_server import LiveServer

# Rectangles of every shown value label, and of every point, in the page's coordinates.
BOXES = """
const out = [];
for (const t of document.querySelectorAll('g.level-point text.label, g.inr-point text.label')) {
  const r = t.getBoundingClientRect(); out.push([r.left, r.top, r.right, r.bottom, t.textContent]);
}
return out;
"""


def _overlaps(boxes):
    clashes = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if a[0] < b[2] - 0.5 and b[0] < a[2] - 0.5 and a[1] < b[3] - 0.5 and b[1] < a[3] - 0.5:
                clashes.append((a[4], b[4]))
    return clashes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["history-warfarin-inr", "history-deficiency-corrected"])
def test_history_fixtures_show_a_real_history(make_app, settings, name):
    expected_inr = {"history-warfarin-inr": 11, "history-deficiency-corrected": 0}[name]
    app = make_app(settings)
    with LiveServer() as live, chromium() as driver:
        live.serve(app)
        driver.get(f"{live.url}/preview/history/{name}")
        who = driver.find_element(By.ID, "patient").text
        patient = fixtures.load(name).patient
        assert who.startswith(patient["name"][0]["text"]) and patient["gender"] in who
        assert who.endswith(" y") and "." not in who.split(" · ")[-1]  # "75 y", not "75.0 y"
        points = driver.find_elements(By.CSS_SELECTOR, "g.level-point")
        assert len(points) >= 6
        dates = sorted(p.get_attribute("data-date") for p in points)
        assert (int(dates[-1][:4]) - int(dates[0][:4])) >= 2 - 1 and len(set(dates)) == len(dates)
        assert len(driver.find_elements(By.CSS_SELECTOR, "g.inr-point")) == expected_inr
        assert _overlaps(driver.execute_script(BOXES)) == []
        uses = " ".join(u.text for u in driver.find_elements(By.CSS_SELECTOR, "tr.use-row"))
        assert "50000 UNT" in uses and "completed" in uses  # the correction course
        save_screenshot(driver, f"history-page-{name}")
        if name == "history-warfarin-inr":
            assert "Warfarin Sodium 5 MG Oral Tablet 5 mg/day" in uses  # the VKA's dose
            k2 = [
                g for g in driver.find_elements(By.CSS_SELECTOR, "g.use")
                if "MK-7" in g.find_element(By.TAG_NAME, "title").get_attribute("textContent")
            ]
            (bar,) = k2
            assert bar.find_elements(By.CSS_SELECTOR, "rect.undated")  # drawn, not only named
            assert "dates not stated" in bar.text


@pytest.mark.slow
def test_an_unreadable_result_is_off_the_scale(make_app, settings):
    app = make_app(settings)
    with LiveServer() as live, chromium() as driver:
        live.serve(app)
        driver.get(f"{live.url}/preview/history/uninterpretable-latest")
        (mark,) = driver.find_elements(By.CSS_SELECTOR, 'g.level-point[data-kind="unreadable"]')
        circle = mark.find_element(By.TAG_NAME, "circle")
        axis_bottom = max(
            float(r.get_attribute("y")) + float(r.get_attribute("height"))
            for r in driver.find_elements(By.CSS_SELECTOR, "g.panel-levels rect")
        )
        assert float(circle.get_attribute("cy")) > axis_bottom  # below the scale, not at 0
        assert driver.find_elements(By.CSS_SELECTOR, "g.offscale-lane")
        save_screenshot(driver, "history-page-uninterpretable-latest")


def test_label_placement_never_overlaps():
    """Ten results a day apart (labels would sit on each other): each shown label is clear of
    the others; one that fits nowhere is left off (its value stays in the title)."""
    from cds_service.history.picture import CHAR_W, _place_labels

    marks = [{"x": 100 + i * 3, "y": 150 + (i % 2), "label": f"{30 + i}.5"} for i in range(10)]
    _place_labels(marks, above=9)
    shown = [m for m in marks if m["label"]]
    assert 1 < len(shown) < len(marks)
    boxes = [
        (m["x"] - len(m["label"]) * CHAR_W / 2, m["label_y"] - 12, m["x"] + len(m["label"]) * CHAR_W / 2, m["label_y"], m["label"])
        for m in shown
    ]
    assert _overlaps(boxes) == []


@pytest.mark.parametrize(
    "names,expected",
    [
        ([{"use": "usual", "text": "Nick"}, {"use": "official", "given": ["Ada", "B."], "family": "Lovelace"}], "Ada B. Lovelace"),
        ([{"text": "  Grace   Hopper "}], "Grace Hopper"),
        ([{"family": "Only"}], "Only"),
        ([], None),
        ("not a list", None),
        ([{"given": [3], "family": None}], None),
    ],
)
def test_the_name_shown_at_the_top(names, expected):
    from cds_service.facts.patient import display_name

    assert display_name(names) == expected


@pytest.mark.parametrize(
    "years,days,text",
    [(68, 24900, "68 y"), (2, 800, "2 y"), (1, 500, "16 mo"), (0, 200, "6 mo"), (0, 20, "20 d"), (None, None, "age not stated")],
)
def test_ages_read_naturally(years, days, text):
    from cds_service.facts.model import Patient
    from cds_service.history.picture import age_text

    patient = Patient(id="p", birth_date=None, age_years=years, age_days=days, sex="female", deceased=False)
    assert age_text(patient) == text


def test_the_library_says_ages_in_whole_years():
    """"68 y" in `fixtures list`, the preview and fixtures/README.md, not "68.0 y"."""
    assert fixtures.describe("warfarin-d3k2-draft")[0] == "female, 68 y"
    assert fixtures.describe("infant-deficient")[0] == "female, 5 mo"
