"""The history picture: which points, bars and INR values it draws, from the typed facts, as
well-formed SVG; the page's tables; the CLI; the card link."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from click.testing import CliRunner

from cds_service.cli import main
from cds_service.config import Settings
from cds_service.guideline import load_guideline
from cds_service.history.bands import Bands, bands_for
from cds_service.history.links import history_link
from cds_service.history.picture import picture_from_facts
from cds_service.history.records import RecordError, facts_from_bundle
from cds_service.history.render import render_page, render_svg

from . import history_patients as hp

SVG = "{http://www.w3.org/2000/svg}"


def default_bands() -> Bands:
    return bands_for(load_guideline("default"))


def picture_of(bundle: dict, bands: Bands | None = None):
    return picture_from_facts(facts_from_bundle(bundle, now=hp.NOW), bands or default_bands())


def svg_of(bundle: dict, bands: Bands | None = None) -> ET.Element:
    return ET.fromstring(render_svg(picture_of(bundle, bands)).encode("utf-8"))


def level_marks(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "level-point"]


def inr_marks(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "inr-point"]


def bars(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "use"]


def title_of(element: ET.Element) -> str:
    return element.find(f"{SVG}title").text


def test_deficient_then_corrected():
    root = svg_of(hp.deficient_then_corrected())
    marks = level_marks(root)
    assert [float(m.get("data-ng-ml")) for m in marks] == [12.0, 24.0, 34.0, pytest.approx(34.46, abs=0.01)]
    assert [m.get("data-band") for m in marks] == ["deficient", "insufficient", "target", "target"]
    assert [m.get("data-date") for m in marks] == ["2025-01-10", "2025-02-25", "2025-05-20", "2025-11-04"]
    # ng/mL on the chart, nmol/L in the hover title, as reported for the nmol/L result
    assert title_of(marks[0]) == "2025-01-10: 12 ng/mL (30 nmol/L), deficient"
    assert "(86 nmol/L)" in title_of(marks[3])
    # one line through the points, left to right in time
    (line,) = [p for p in root.iter(f"{SVG}polyline") if p.get("class") == "trend"]
    xs = [float(pair.split(",")[0]) for pair in line.get("points").split()]
    assert len(xs) == 4 and xs == sorted(xs)
    # the loading course (completed) and the maintenance dose (active), with daily equivalents
    labels = [title_of(b) for b in bars(root)]
    assert labels[0].startswith("Cholecalciferol 50000 UNT Oral Capsule: 7,143 IU/day vitamin D; completed")
    assert "2025-01-15 to 2025-03-12" in labels[0]
    assert labels[1].startswith("Cholecalciferol 1000 UNT Oral Tablet: 1,000 IU/day vitamin D; active")
    assert "no end stated" in labels[1]
    assert inr_marks(root) == []  # no VKA: no INR panel
    assert root.find(f"{SVG}title").text == "Vitamin D history: 25(OH)D over time with doses"


def test_warfarin_with_inr():
    root = svg_of(hp.warfarin_with_inr())
    assert [float(m.get("data-inr")) for m in inr_marks(root)] == [2.4, 2.8, 1.9, 2.3]
    assert [float(m.get("data-ng-ml")) for m in level_marks(root)] == [28.0]
    families = [b.get("data-family") for b in bars(root)]
    assert families == ["vitamin-d", "vitamin-k", "vka"]
    assert "100 µg/day vitamin K" in title_of(bars(root)[1])
    assert root.find(f"{SVG}title").text.endswith("with doses and INR")


def test_no_results():
    picture = picture_of(hp.no_results())
    root = ET.fromstring(render_svg(picture).encode("utf-8"))
    assert level_marks(root) == [] and bars(root) == [] and inr_marks(root) == []
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "No 25(OH)D results on file" in texts
    assert "No vitamin D, vitamin K, calcium or VKA products on file" in texts
    page = render_page(picture)
    assert "No 25(OH)D results on file." in page and "<table" not in page


def test_one_result():
    pid = "one"
    root = svg_of(hp.bundle(hp.patient(pid), hp.level(pid, "o", "2026-05-01", 41)))
    (mark,) = level_marks(root)
    assert mark.get("data-ng-ml") == "41.00" and mark.get("data-band") == "target"
    circle = mark.find(f"{SVG}circle")
    assert 70 < float(circle.get("cx")) < 850  # inside the plot, not on an edge


def test_fifty_results_in_record_order():
    pid = "many"
    start = hp.NOW - timedelta(days=50 * 30)
    values = [8 + (n * 7) % 60 for n in range(50)]
    observations = [
        hp.level(pid, f"o{n}", (start + timedelta(days=30 * n)).date().isoformat(), v)
        for n, v in enumerate(values)
    ]
    observations.reverse()  # the record may list them newest first
    picture = picture_of(hp.bundle(hp.patient(pid), *observations))
    root = ET.fromstring(render_svg(picture).encode("utf-8"))
    marks = level_marks(root)
    assert [float(m.get("data-ng-ml")) for m in marks] == values
    assert [m.get("data-date") for m in marks] == sorted(m.get("data-date") for m in marks)
    # too many to print every value beside its point: the values stay in titles and the table
    assert all(m.find(f"{SVG}text") is None for m in marks)
    page = render_page(picture)
    assert len(re.findall(r'<tr class="level-row">', page)) == 50


def test_uninterpretable_censored_and_undated_results():
    pid = "odd"
    undated = hp.level(pid, "u", "2026-01-01", 30)
    del undated["effectiveDateTime"]
    bundle = hp.bundle(
        hp.patient(pid),
        hp.level(pid, "a", "2026-01-01", 12, "mg"),  # unknown unit: as the rules, not read
        hp.level(pid, "b", "2026-02-01", 5, comparator="<"),
        hp.level(pid, "c", "2026-03-01", 150, comparator=">"),
        hp.level(pid, "d", "2026-04-01", 101),
        undated,
    )
    picture = picture_of(bundle)
    root = ET.fromstring(render_svg(picture).encode("utf-8"))
    marks = level_marks(root)
    assert [m.get("data-kind") for m in marks] == ["unreadable", "censored", "censored", "value"]
    assert title_of(marks[0]) == "2026-01-01: result could not be read (12 mg)"
    assert [m.get("data-band") for m in marks[1:]] == ["deficient", "high", "high"]
    assert "<5 ng/mL" in title_of(marks[1])
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "1 result(s) without a date" in texts
    page = render_page(picture)
    assert "could not be read" in page and "date not stated" in page
    assert len(re.findall(r'<tr class="level-row">', page)) == 5


def test_bands_come_from_the_bands_given():
    strict = Bands(deficiency_below=25, insufficiency_below=40, high_above=80, source="test")
    marks = level_marks(svg_of(hp.deficient_then_corrected(), strict))
    assert [m.get("data-band") for m in marks] == ["deficient", "deficient", "insufficient", "insufficient"]
    assert "deficiency &lt; 25 ng/mL" in render_page(picture_of(hp.no_results(), strict))


@pytest.mark.parametrize(
    "value,comparator,band",
    [
        (19.9, None, "deficient"),
        (20, None, "insufficient"),
        (29.9, None, "insufficient"),
        (30, None, "target"),
        (100, None, "target"),
        (100.1, None, "high"),
        (20, "<", "deficient"),
        (30, "<", "insufficient"),
        (100, ">", "high"),
        (5, "<=", "deficient"),
    ],
)
def test_default_bands(value, comparator, band):
    assert default_bands().band(value, comparator) == band


def test_bands_follow_the_guideline_profile():
    default = default_bands()
    assert (default.deficiency_below, default.insufficiency_below, default.high_above) == (20, 30, 100)
    assert "profile default" in default.source and "Endocrine Society 2011" in default.source
    es2024 = bands_for(load_guideline("es2024"))
    assert "profile es2024" in es2024.source and "reference only" in es2024.source


def test_inr_only_while_a_vka_is_active():
    bundle = hp.warfarin_with_inr()
    for entry in bundle["entry"]:
        if entry["resource"]["id"] == "warfarin":
            entry["resource"]["status"] = "completed"
    picture = picture_of(bundle)
    assert not picture.vka_active and picture.inr == ()
    root = ET.fromstring(render_svg(picture).encode("utf-8"))
    assert inr_marks(root) == []
    assert "vka" in [b.get("data-family") for b in bars(root)]  # still on the timeline


def test_record_text_is_escaped():
    pid = "x"
    hostile = 'Vitamin D3 1000 IU <script>alert("x")</script> & co\x0b'
    bundle = hp.bundle(hp.patient(pid), hp.statement(pid, "s", hostile, "2026-01-01"))
    picture = picture_of(bundle)
    svg = render_svg(picture)
    ET.fromstring(svg.encode("utf-8"))  # still well-formed
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert "\x0b" not in svg and "co\ufffd" in svg  # not allowed in XML: replaced
    page = render_page(picture)
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize(
    "bundle,message",
    [
        ({"resourceType": "Patient", "id": "p"}, "not a FHIR Bundle"),
        ({"resourceType": "Bundle", "entry": []}, "exactly one Patient"),
        (hp.bundle(hp.patient("a"), hp.patient("b")), "exactly one Patient"),
    ],
)
def test_a_bundle_must_be_one_patients_record(bundle, message):
    with pytest.raises(RecordError, match=message):
        facts_from_bundle(bundle, now=hp.NOW)


def test_other_patients_resources_in_the_bundle_are_ignored():
    bundle = hp.deficient_then_corrected()
    bundle["entry"].append({"resource": hp.level("someone-else", "z", "2025-06-01", 99)})
    assert len(picture_of(bundle).levels) == 4


def test_cli_writes_svg_and_html(tmp_path):
    patient = tmp_path / "patient.json"
    patient.write_text(json.dumps(hp.warfarin_with_inr()))
    svg, html = tmp_path / "out.svg", tmp_path / "out.html"
    result = CliRunner().invoke(main, ["history", "--patient", str(patient), "--out", str(svg)])
    assert result.exit_code == 0, result.output
    assert "1 25(OH)D result(s), 3 product use(s), 4 INR result(s)" in result.output
    root = ET.fromstring(svg.read_bytes())
    assert len(level_marks(root)) == 1 and len(inr_marks(root)) == 4
    result = CliRunner().invoke(main, ["history", "--patient", str(patient), "--out", str(html)])
    assert result.exit_code == 0 and "<table" in html.read_text()


@pytest.mark.parametrize("content", ["{not json", json.dumps({"resourceType": "Patient"})])
def test_cli_refuses_what_is_not_a_record(tmp_path, content):
    patient = tmp_path / "patient.json"
    patient.write_text(content)
    result = CliRunner().invoke(
        main, ["history", "--patient", str(patient), "--out", str(tmp_path / "o.svg")]
    )
    assert result.exit_code == 1 and "Error:" in result.output
    assert not (tmp_path / "o.svg").exists()


def test_card_link_to_the_launch_url():
    settings = Settings(
        public_base_url="https://cds.example.org/",
        smart_client_id="vitd-history",
        smart_allowed_issuers=("https://ehr.example.org/fhir",),
        secret_key="s" * 32,
    )
    assert history_link(settings) == {
        "label": "Vitamin D history",
        "url": "https://cds.example.org/launch",
        "type": "smart",
    }
    assert history_link(Settings()) is None  # no public URL: no link (never a null field)
    # a public URL without SMART launch: /launch would answer 404, so no link either
    assert history_link(Settings(public_base_url="https://cds.example.org/")) is None


def test_cli_draws_a_fixture_patient_by_name(tmp_path):
    from cds_service import fixtures

    name = "osteoporosis-warfarin"
    fixture = fixtures.load(name)
    expected = [
        r for r in fixture.resources
        if r["resourceType"] == "Observation"
        and any(c.get("code") == "62292-8" for c in r["code"]["coding"])
    ]
    out = tmp_path / "fixture.svg"
    result = CliRunner().invoke(main, ["history", "--patient", name, "--out", str(out)])
    assert result.exit_code == 0, result.output
    marks = level_marks(ET.fromstring(out.read_bytes()))
    assert sorted(float(m.get("data-ng-ml")) for m in marks) == sorted(
        float(r["valueQuantity"]["value"]) for r in expected
    )
    assert ET.fromstring(out.read_bytes()).find(f"{SVG}title").text.endswith("and INR")  # warfarin


def test_cli_unknown_patient(tmp_path):
    result = CliRunner().invoke(main, ["history", "--patient", "no-such-one", "--out", str(tmp_path / "x.svg")])
    assert result.exit_code == 1 and "no fixture named" in result.output


def test_cli_uses_the_configured_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("CDS_GUIDELINE_PROFILE", "es2024")
    patient = tmp_path / "patient.json"
    patient.write_text(json.dumps(hp.deficient_then_corrected()))
    out = tmp_path / "out.html"
    result = CliRunner().invoke(main, ["history", "--patient", str(patient), "--out", str(out)])
    assert result.exit_code == 0 and "profile es2024" in out.read_text()


def test_every_fixture_patient_draws_well_formed(tmp_path):
    from cds_service import fixtures
    from cds_service.history import picture_for_bundle

    for name in fixtures.names():
        picture = picture_for_bundle(fixtures.load(name, hp.NOW).bundle, load_guideline(), now=hp.NOW)
        root = ET.fromstring(render_svg(picture).encode("utf-8"))
        assert len(level_marks(root)) == len([p for p in picture.levels if p.when]), name
        assert len(bars(root)) == len(picture.uses), name
        assert render_page(picture).count('<tr class="level-row">') == len(picture.levels), name


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_results = st.lists(
    st.tuples(
        st.dates(),
        st.one_of(st.floats(min_value=0, max_value=2000, allow_nan=False), st.just(0), st.text(max_size=5)),
        st.sampled_from(["ng/mL", "nmol/L", "mg", None]),
        st.sampled_from([None, "<", ">", "<=", ">="]),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(results=_results, inr_values=st.lists(st.tuples(st.dates(), st.floats(0, 50)), max_size=10))
def test_any_record_draws_well_formed(results, inr_values):
    pid = "p"
    resources = [hp.patient(pid), hp.order(pid, "w", "Warfarin Sodium 5 MG Oral Tablet", "active", hp.DAILY)]
    for n, (day, value, unit, comparator) in enumerate(results):
        resources.append(hp.level(pid, f"o{n}", day.isoformat(), value, unit, comparator=comparator))
    for n, (day, value) in enumerate(inr_values):
        resources.append(hp.inr(pid, f"i{n}", day.isoformat(), value))
    picture = picture_of(hp.bundle(*resources))
    root = ET.fromstring(render_svg(picture).encode("utf-8"))
    # a result dated more than a day after the call's time is ignored (contract §5)
    latest = (hp.NOW + timedelta(days=1)).date()
    assert len(level_marks(root)) == len([r for r in results if r[0] <= latest])
    for mark in level_marks(root):
        for circle in mark.iter(f"{SVG}circle"):
            assert 0 <= float(circle.get("cx")) <= 880 and 0 <= float(circle.get("cy")) <= float(root.get("height"))
