"""What the history picture shows, from typed facts only (no FHIR JSON, no second parser).

`picture_from_facts` picks the 25(OH)D results, the vitamin D / K / calcium / VKA uses (current
and past) and, when a VKA is active, the INR results, oldest first. `layout` turns a picture
into plain numbers and strings for the SVG template: the template only loops and prints.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..facts.model import DrugClass, Facts, Ingredient, Medication
from .bands import NMOL_PER_NG, Bands

if TYPE_CHECKING:  # the header's name, sex and age
    from ..facts.model import Patient

# Families shown on the timeline, in this order.
FAMILIES = ("vitamin D", "vitamin K", "calcium", "VKA")


@dataclass(frozen=True)
class LevelPoint:
    when: datetime | None
    ng_ml: float | None  # None: not interpretable (unknown unit, no number)
    comparator: str | None
    raw_value: str | None
    raw_unit: str | None
    loinc: str
    band: str  # deficient | insufficient | target | high | unreadable

    @property
    def nmol_l(self) -> float | None:
        return None if self.ng_ml is None else self.ng_ml * NMOL_PER_NG


@dataclass(frozen=True)
class Use:
    """One vitamin D / K / calcium / VKA use on the timeline."""

    name: str
    families: tuple[str, ...]
    status: str
    source: str  # MedicationRequest | MedicationStatement
    started: datetime | None
    ended: datetime | None
    daily: str  # daily-equivalent dose text, e.g. "7,143 IU/day", or "dose not stated"


@dataclass(frozen=True)
class InrPoint:
    when: datetime | None
    ratio: float | None
    comparator: str | None
    raw_value: str | None


@dataclass(frozen=True)
class Picture:
    now: datetime
    bands: Bands
    levels: tuple[LevelPoint, ...]  # oldest first, undated last
    uses: tuple[Use, ...]  # by family, then start
    vka_active: bool
    inr: tuple[InrPoint, ...] = ()  # only when a VKA is active; oldest first
    patient: Patient | None = None

    @property
    def who(self) -> str:
        """'Anna Example · female · 68 y' for the page's header; parts not stated are said so."""
        p = self.patient
        if p is None:
            return "patient not stated"
        return " · ".join(
            (p.name or "name not stated", p.sex or "sex not stated", age_text(p))
            + (("deceased",) if p.deceased else ())
        )


def age_text(patient: Patient) -> str:
    """'68 y'; under two years in months ('7 mo'), under two months in days ('20 d')."""
    if patient.age_years is None or patient.age_days is None:
        return "age not stated"
    if patient.age_years >= 2:
        return f"{patient.age_years} y"
    if patient.age_days >= 61:
        return f"{int(patient.age_days / 30.4375)} mo"
    return f"{patient.age_days} d"


def _oldest_first(items, when):
    dated = sorted((i for i in items if when(i) is not None), key=when)
    return tuple(dated + [i for i in items if when(i) is None])


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}".removesuffix(".0")


def _daily(med: Medication) -> str:
    parts = []
    if med.vitamin_d_iu_per_day is not None:
        parts.append(f"{_number(med.vitamin_d_iu_per_day)} IU/day vitamin D")
    if med.vitamin_k_ug_per_day is not None:
        parts.append(f"{_number(med.vitamin_k_ug_per_day)} µg/day vitamin K")
    if med.calcium_mg_per_day is not None:
        parts.append(f"{_number(med.calcium_mg_per_day)} mg/day calcium")
    if med.vka_mg_per_day is not None:
        parts.append(f"{_number(med.vka_mg_per_day)} mg/day")
    if parts:
        return "; ".join(parts)
    return "dose not shown (anticoagulant)" if med.has(DrugClass.VKA) else "daily dose not stated"


def _families(med: Medication) -> tuple[str, ...]:
    out = []
    if med.has_vitamin_d:
        out.append("vitamin D")
    if med.has_vitamin_k:
        out.append("vitamin K")
    if med.has(Ingredient.CALCIUM):
        out.append("calcium")
    if med.has(DrugClass.VKA):
        out.append("VKA")
    return tuple(out)


def picture_from_facts(facts: Facts, bands: Bands) -> Picture:
    levels = [
        LevelPoint(
            when=lvl.when,
            ng_ml=lvl.ng_ml,
            comparator=lvl.comparator,
            raw_value=lvl.raw_value,
            raw_unit=lvl.raw_unit,
            loinc=lvl.loinc,
            band="unreadable" if lvl.ng_ml is None else bands.band(lvl.ng_ml, lvl.comparator),
        )
        for lvl in facts.vitamin_d_levels
    ]
    uses = []
    for med in (*facts.medications, *facts.past_medications):
        families = _families(med)
        if families:
            uses.append(
                Use(
                    name=med.name,
                    families=families,
                    status=med.status or "unknown",
                    source=med.resource_type,
                    started=med.started,
                    ended=med.ended,
                    daily=_daily(med),
                )
            )
    far = datetime.max.replace(tzinfo=UTC)
    uses.sort(key=lambda u: (FAMILIES.index(u.families[0]), u.started or far, u.name))
    vka_active = any(m.has(DrugClass.VKA) for m in facts.medications)
    inr = ()
    if vka_active:
        inr = _oldest_first(
            [InrPoint(i.when, i.ratio, i.comparator, i.raw_value) for i in facts.inr_levels],
            lambda p: p.when,
        )
    return Picture(
        now=facts.now,
        bands=bands,
        levels=_oldest_first(levels, lambda p: p.when),
        uses=tuple(uses),
        vka_active=vka_active,
        inr=inr,
        patient=facts.patient,
    )


# --- layout: numbers for the SVG ---------------------------------------------------------

WIDTH = 880
LEFT = 70
RIGHT = 30
LEVEL_TOP = 56
LEVEL_HEIGHT = 230
INR_HEIGHT = 110
ROW = 32
GAP = 46
MAX_LABELLED = 16  # points with their value printed beside them
LANE = 24  # the "not readable" lane under the 25(OH)D axis, when a result could not be read
CHAR_W = 6.6  # width of one label character at font-size 12 (for collision checks)


def day(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d") if value else "date not stated"


def value_text(value: float | None, comparator: str | None = None, digits: int = 1) -> str:
    """A number as the picture and the page print it: '12.5', '<5', '—' when unknown."""
    if value is None:
        return "—"
    text = f"{value:.{digits}f}"
    if digits:
        text = text.rstrip("0").rstrip(".")
    return f"{comparator or ''}{text}"


@dataclass
class TimeAxis:
    start: datetime
    end: datetime
    left: float
    right: float

    def x(self, when: datetime) -> float:
        span = (self.end - self.start).total_seconds() or 1.0
        return round(
            self.left + (when - self.start).total_seconds() / span * (self.right - self.left), 1
        )

    def ticks(self) -> list[tuple[float, str]]:
        """At most about 8 ticks on the first day of months aligned to the step."""
        first = self.start.year * 12 + self.start.month - 1  # months since year 0
        last = self.end.year * 12 + self.end.month - 1
        months = last - first + 1
        step = next((s for s in (1, 2, 3, 6, 12, 24, 60, 120) if months / s <= 8), None)
        step = step or 12 * -(-months // (8 * 12))
        out = []
        for index in range(-(-first // step) * step, last + 1, step):
            year, month = divmod(index, 12)
            if not 1 <= year <= 9999:
                continue
            tick = datetime(year, month + 1, 1, tzinfo=UTC)
            if self.start <= tick <= self.end:
                label = str(year) if step >= 12 else f"{calendar.month_abbr[month + 1]} {year}"
                out.append((self.x(tick), label))
        return out


def _time_axis(picture: Picture) -> TimeAxis | None:
    dates = [p.when for p in picture.levels if p.when]
    dates += [p.when for p in picture.inr if p.when]
    for use in picture.uses:
        dates += [d for d in (use.started, use.ended) if d]
    if not dates:
        return None
    start, end = min(dates), max(dates)
    if any(u.status == "active" and u.ended is None and u.started for u in picture.uses):
        end = max(end, picture.now)
    pad = max(timedelta(days=20), (end - start) * 0.04)
    return TimeAxis(_shifted(start, -pad), _shifted(end, pad), LEFT, WIDTH - RIGHT)


def _shifted(when: datetime, by: timedelta) -> datetime:
    """`when + by`, kept within the calendar (records do hold year 1 and year 9999)."""
    try:
        return when + by
    except OverflowError:
        return (datetime.min if by < timedelta(0) else datetime.max).replace(tzinfo=UTC)


def _nice_ceiling(value: float, step: float) -> float:
    return step * -(-value // step)


@dataclass
class Layout:
    """Everything the SVG template prints; coordinates in SVG user units."""

    width: int
    height: int
    title: str
    description: str
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    level_panel: dict = field(default_factory=dict)
    level_points: list[dict] = field(default_factory=list)
    level_line: str = ""
    unplotted: int = 0
    inr_panel: dict | None = None
    inr_points: list[dict] = field(default_factory=list)
    inr_line: str = ""
    timeline: dict = field(default_factory=dict)
    bars: list[dict] = field(default_factory=list)


def layout(picture: Picture) -> Layout:
    bands = picture.bands
    axis = _time_axis(picture)
    readable = [p for p in picture.levels if p.ng_ml is not None]
    top_value = max([p.ng_ml for p in readable], default=0.0)
    y_max = _nice_ceiling(max(top_value * 1.1, bands.insufficiency_below + 20), 10)
    y_step = 10 if y_max <= 100 else (25 if y_max <= 250 else 100)
    y_max = _nice_ceiling(y_max, y_step)
    top, bottom = LEVEL_TOP, LEVEL_TOP + LEVEL_HEIGHT

    def y(value: float) -> float:
        return round(bottom - min(value, y_max) / y_max * LEVEL_HEIGHT, 1)

    band_rects = []
    for name, low, high in (
        ("deficient", 0.0, bands.deficiency_below),
        ("insufficient", bands.deficiency_below, bands.insufficiency_below),
        ("target", bands.insufficiency_below, bands.high_above),
        ("high", bands.high_above, y_max),
    ):
        if low < y_max:
            high = min(high, y_max)
            band_rects.append(
                {
                    "name": name,
                    "y": y(high),
                    "height": round(y(low) - y(high), 1),
                    "label_y": round((y(high) + y(low)) / 2 + 4, 1),
                }
            )
    dated = [p for p in picture.levels if p.when]
    count = len(picture.levels)
    description = (
        f"{count} 25(OH)D result{'s' if count != 1 else ''}"
        + (f" from {day(dated[0].when)} to {day(dated[-1].when)}" if dated else "")
        + f"; {len(picture.uses)} vitamin D, K, calcium or VKA use(s)"
        + (f"; {len(picture.inr)} INR result(s)" if picture.vka_active else "")
        + "."
    )
    out = Layout(
        width=WIDTH,
        height=0,
        title="Vitamin D history: 25(OH)D over time with doses"
        + (" and INR" if picture.vka_active else ""),
        description=description,
    )
    unreadable = any(p.ng_ml is None and p.when is not None for p in picture.levels)
    lane_y = bottom + LANE / 2 + 2  # off the scale: never drawn at 0, in the deficient band
    axis_labels = bottom + (LANE + 4 if unreadable and axis is not None else 0)
    out.level_panel = {
        "top": top,
        "bottom": bottom,
        "lane_y": lane_y if unreadable and axis is not None else None,
        "tick_label_y": axis_labels + 16,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "bands": band_rects,
        "y_ticks": [(y(v), f"{v:g}") for v in _range(0, y_max, y_step)],
        "label": "25(OH)D (ng/mL)",
        "empty": "No 25(OH)D results on file" if not picture.levels else "",
    }
    line = []
    labelled = len(picture.levels) <= MAX_LABELLED  # beyond that, values are in titles only
    for point in picture.levels:
        if point.when is None or axis is None:
            out.unplotted += 1
            continue
        x = axis.x(point.when)
        if point.ng_ml is None:
            mark = {"kind": "unreadable", "x": x, "y": lane_y, "label": "?"}
            reported = " ".join(v for v in (point.raw_value, point.raw_unit) if v) or "no value"
            mark["title"] = f"{day(point.when)}: result could not be read ({reported})"
        else:
            mark = {
                "kind": "censored" if point.comparator else "value",
                "x": x,
                "y": y(point.ng_ml),
                "label": value_text(point.ng_ml, point.comparator),
                "title": f"{day(point.when)}: {value_text(point.ng_ml, point.comparator)} ng/mL "
                f"({value_text(point.nmol_l, point.comparator, 0)} nmol/L), {point.band}",
            }
            line.append(f"{x},{mark['y']}")
        if not labelled and mark["kind"] != "unreadable":
            mark["label"] = ""
        mark.update({"band": point.band, "ng_ml": point.ng_ml, "date": day(point.when)})
        out.level_points.append(mark)
    out.level_line = " ".join(line)
    _place_labels([m for m in out.level_points if m["kind"] != "unreadable"], above=9)

    cursor = axis_labels + GAP
    if picture.vka_active:
        ratios = [p.ratio for p in picture.inr if p.ratio is not None]
        inr_max = _nice_ceiling(max([4.0, *(r * 1.1 for r in ratios)]), 1)
        inr_top, inr_bottom = cursor, cursor + INR_HEIGHT

        def yi(value: float) -> float:
            return round(inr_bottom - min(value, inr_max) / inr_max * INR_HEIGHT, 1)

        out.inr_panel = {
            "top": inr_top,
            "bottom": inr_bottom,
            "left": LEFT,
            "right": WIDTH - RIGHT,
            "y_ticks": [(yi(v), f"{v:g}") for v in _range(0, inr_max, 1 if inr_max <= 6 else 2)],
            "label": "INR",
            "empty": "No INR results on file" if not picture.inr else "",
        }
        inr_line = []
        for point in picture.inr:
            if point.when is None or axis is None:
                continue
            x = axis.x(point.when)
            if point.ratio is None:
                reported = point.raw_value or "no value"
                out.inr_points.append(
                    {
                        "kind": "unreadable",
                        "x": x,
                        "y": inr_bottom - 8,
                        "label": "?",
                        "title": f"{day(point.when)}: INR could not be read ({reported})",
                        "value": None,
                    }
                )
                continue
            mark_y = yi(point.ratio)
            inr_line.append(f"{x},{mark_y}")
            text = value_text(point.ratio, point.comparator)
            out.inr_points.append(
                {
                    "kind": "value",
                    "x": x,
                    "y": mark_y,
                    "label": text,
                    "title": f"{day(point.when)}: INR {text}",
                    "value": point.ratio,
                }
            )
        out.inr_line = " ".join(inr_line)
        _place_labels([m for m in out.inr_points if m["kind"] != "unreadable"], above=8)
        cursor = inr_bottom + GAP

    rows = max(1, len(picture.uses))
    no_uses = "No vitamin D, vitamin K, calcium or VKA products on file"
    out.timeline = {
        "top": cursor,
        "bottom": cursor + rows * ROW,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "empty": "" if picture.uses else no_uses,
    }
    for n, use in enumerate(picture.uses):
        row_y = cursor + n * ROW
        bar = {
            "y": row_y + 4,
            "text_y": row_y + 27,
            "family": use.families[0].replace(" ", "-").lower(),
            "label": f"{use.name} · {use.daily} · {use.status}",
            "title": f"{use.name}: {use.daily}; {use.status} ({use.source}); "
            f"{day(use.started)} to {day(use.ended) if use.ended else 'no end stated'}",
            "x": LEFT,
            "width": 0.0,
            "open_end": use.ended is None,
        }
        if axis is not None and (use.started or use.ended):
            start = axis.x(use.started) if use.started else LEFT
            end_at = use.ended or (picture.now if use.status == "active" else use.started)
            end = axis.x(min(end_at, axis.end)) if end_at else start
            bar["x"], bar["width"] = start, max(round(end - start, 1), 4.0)
            bar["undated"] = False
        else:
            # No dates: still a bar, across the whole span and drawn hatched, so a product
            # on file (the K2 of a warfarin patient) is never missing from the picture.
            bar["x"], bar["width"] = LEFT, float(WIDTH - RIGHT - LEFT)
            bar["undated"] = True
            bar["open_end"] = False
        out.bars.append(bar)
    out.x_ticks = axis.ticks() if axis else []
    out.height = int(out.timeline["bottom"] + 40)
    return out


def _place_labels(marks: list[dict], above: float) -> None:
    """Each mark's value label above its point, or below it when that would overlap the label
    before; a label that fits neither way is left off (the value stays in the title and in
    the table). Sets `label_y` on every mark."""
    placed: list[tuple[float, float, float]] = []  # (left, right, baseline) of shown labels
    for mark in sorted(marks, key=lambda m: m["x"]):
        mark["label_y"] = round(mark["y"] - above, 1)
        if not mark.get("label"):
            continue
        half = len(mark["label"]) * CHAR_W / 2 + 2
        left, right = mark["x"] - half, mark["x"] + half
        for label_y in (mark["y"] - above, mark["y"] + above + 10):
            clash = any(
                left < r and lo < right and abs(label_y - b) < 13 for lo, r, b in placed
            )
            if not clash:
                mark["label_y"] = round(label_y, 1)
                placed.append((left, right, label_y))
                break
        else:
            mark["label"] = ""


def _range(start: float, stop: float, step: float) -> list[float]:
    out, value = [], start
    while value <= stop + 1e-9:
        out.append(value)
        value += step
    return out
