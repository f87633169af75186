"""The active guideline profile: thresholds, regimens, windows and ceilings, each with a citation.

Profiles live in `guidelines/<name>.toml` (one file each; `extends` inherits another profile).
`load_guideline(name)` reads, merges and validates one; anything missing or malformed raises
`GuidelineError` naming the key, which stops the service at start. Rules read values only
through the typed `Guideline` object, never from literals.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

PROFILES = ("default", "es2024", "nice")
NMOL_PER_NG = 2.496  # 25(OH)D: ng/mL x 2.496 = nmol/L (contract §4)

LEVELS = (
    "deficiency_below_ng_ml",
    "insufficiency_below_ng_ml",
    "high_above_ng_ml",
    "critical_above_ng_ml",
)
WINDOWS = (
    "status_level_months",
    "recent_level_months",
    "deficiency_course_months",
    "repeat_level_months",
)
AGES = (
    "child_from_years",
    "adult_from_years",
    "liquid_below_years",
    "older_adult_years",
    "uspstf_women_from_years",
    "uspstf_anyone_from_years",
)
DOSES = (
    "risk_daily_iu_above",
    "no_deficiency_ceiling_iu",
    "absolute_ceiling_iu",
    "single_dose_ceiling_iu",
    "pregnancy_max_daily_iu",
    "infant_absolute_ceiling_iu",
    "osteoporosis_min_daily_iu",
    "k2_min_vitamin_d_iu",
    "uspstf_max_daily_iu",
    "uspstf_max_calcium_mg",
    "insufficiency_daily_iu",
    "insufficiency_no_risk_daily_iu",
)
# Prescribing-safety values (interaction, calcium, INR), each cited like the others.
SAFETY = (
    "calcium_max_per_dose_mg",
    "calcium_split_dose_mg",
    "serum_calcium_above_mg_dl",
    "inr_check_within_days",
    "phytonadione_reversal_min_mg",
    "phytonadione_reversal_max_mg",
    "kidney_stones_hazard_ratio",
)
BANDS = ("adult", "higher_need", "child", "infant", "pregnancy")
HIGHER_NEED = ("bmi_from", "bmi_months", "ceiling_iu", "insufficiency_daily_iu")
PERIODS = {"d": 1, "wk": 7}


class GuidelineError(ValueError):
    """The guideline file cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Citation:
    key: str
    label: str
    url: str | None
    short: str = ""  # the guideline's name as card prose names it ("Endocrine Society 2011")


@dataclass(frozen=True)
class Cited:
    """A number with its source."""

    value: float
    cite: str


# Period units a Schedule may repeat over (guideline files use only "d" and "wk"); days each.
EVERY_DAYS = {"h": 1 / 24, "d": 1, "wk": 7, "mo": 30, "a": 365}


@dataclass(frozen=True)
class Schedule:
    """A vitamin D dose repeated every day or week, for `weeks` or (None) ongoing.

    A schedule copied from a prescriber's order (D2 -> D3, a vitamin K combination replaced by
    plain D3) may also say `frequency` times per `period` `every`, a `count` of doses, or a
    course `duration` in another unit, e.g. (2, "mo"); the defaults keep guideline schedules.
    """

    dose_iu: int
    every: str  # "d" | "wk" (guideline files); EVERY_DAYS keys for copied schedules
    weeks: int | None = None
    key: str = "maintenance"
    frequency: int = 1
    period: float = 1
    count: int | None = None
    duration: tuple[float, str] | None = None  # boundsDuration (value, UCUM unit) besides weeks

    @property
    def daily_iu(self) -> float:
        return self.dose_iu * self.frequency / (self.period * EVERY_DAYS[self.every])


@dataclass(frozen=True)
class Regimen:
    """Correction of a deficiency for one band: alternative courses, then one maintenance."""

    band: str
    courses: tuple[Schedule, ...]
    maintenance: Schedule
    maintenance_range: str
    cite: str
    # The maintenance starts this many weeks after the course ends (NICE: about 1 month).
    maintenance_gap_weeks: int = 0
    # The follow-up test (a key of knowledge/orderables.json `labs`): by default a repeat
    # 25(OH)D `windows.repeat_level_months` after the start; with `follow_up_weeks_after_course`
    # that many weeks after the course ends (NICE: adjusted calcium 1 month after loading).
    follow_up_lab: str = "vitamin-d-25oh"
    follow_up_weeks_after_course: int | None = None
    offered: bool = True  # False: the card names the finding and suggests no regimen


@dataclass(frozen=True)
class UpperLimit:
    """A tolerable upper intake level for ages below `below_months` (IOM 2011)."""

    below_months: int
    iu: float
    ages: str  # "1-3 years", for card text
    cite: str


@dataclass(frozen=True)
class Empiric:
    """es2024: empiric daily vitamin D by group (dose and the range the guideline names)."""

    adult_from_years: int
    max_child_years: int
    already_on_daily_iu: float
    doses: Mapping[str, Schedule]
    ranges: Mapping[str, str]
    cite: str


@dataclass(frozen=True)
class Guideline:
    profile: str
    version: str
    title: str
    citations: Mapping[str, Citation]
    topics: Mapping[str, Cited]  # value 1.0 = enabled
    levels: Mapping[str, Cited]
    windows: Mapping[str, Cited]
    ages: Mapping[str, Cited]
    doses: Mapping[str, Cited]
    safety: Mapping[str, Cited]
    regimens: Mapping[str, Regimen]
    empiric: Empiric
    upper_limits: tuple[UpperLimit, ...] = ()  # youngest first; from 9 years: doses
    # vitd-test-overuse: a repeat 25(OH)D sooner than this after the last result; and whether
    # healthy adults (19-74, no indication) are spared routine tests (ES 2024).
    display_unit: str = "ng/mL"  # the unit levels are shown in first: "ng/mL" or "nmol/L"
    higher_need: Mapping[str, Cited] = field(default_factory=dict)
    higher_need_regimens: bool = True
    retest_after_days: Cited = Cited(90, "es2011")
    spare_healthy_adults: Cited = Cited(0.0, "es2024")

    def enabled(self, topic: str) -> bool:
        return bool(self.topics[topic].value)

    def level(self, name: str) -> float:
        return self.levels[name].value

    def window_days(self, name: str) -> float:
        return self.windows[name].value * 365.25 / 12

    def age(self, name: str) -> int:
        return int(self.ages[name].value)

    def dose(self, name: str) -> float:
        return self.doses[name].value

    def safety_value(self, name: str) -> float:
        return self.safety[name].value

    def citation(self, key: str) -> Citation:
        return self.citations[key]

    def topic_citation(self, topic: str) -> Citation:
        return self.citations[self.topics[topic].cite]


# --- loading ----------------------------------------------------------------------------------


def _read(name: str) -> dict[str, Any]:
    if name not in PROFILES:
        raise GuidelineError(
            f"unknown guideline profile {name!r}: choose one of {', '.join(PROFILES)}"
        )
    path = resources.files(__package__).joinpath("guidelines", f"{name}.toml")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise GuidelineError(f"guidelines/{name}.toml cannot be read: {exc}") from None


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _raw(name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name in seen:
        raise GuidelineError(f"guideline profiles extend each other in a loop: {seen + (name,)}")
    data = _read(name)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(_raw(str(parent), seen + (name,)), data)


class _Checker:
    def __init__(self, name: str, data: Mapping[str, Any]) -> None:
        self.name = name
        self.data = data
        self.citations: dict[str, Citation] = {}

    def fail(self, where: str, why: str) -> GuidelineError:
        return GuidelineError(f"guidelines/{self.name}.toml: {where}: {why}")

    def table(self, where: str, value: Any = None) -> Mapping[str, Any]:
        value = self.data.get(where) if value is None else value
        if not isinstance(value, Mapping):
            raise self.fail(where, "missing or not a table")
        return value

    def text(self, where: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "missing or not a text")
        return value

    def cite(self, where: str, value: Any) -> str:
        key = self.text(f"{where}.cite", value)
        if key not in self.citations:
            raise self.fail(f"{where}.cite", f"{key!r} is not in [citations]")
        return key

    def number(self, where: str, value: Any, *, positive: bool = True) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(where, "missing or not a number")
        if positive and not value > 0:
            raise self.fail(where, "must be above 0")
        return float(value)

    def cited_group(self, section: str, names: tuple[str, ...], *, flags: bool = False) -> dict:
        table = self.table(section)
        unknown = sorted(set(table) - set(names))
        if unknown:
            raise self.fail(section, f"unknown keys {unknown}")
        out = {}
        for key in names:
            where = f"{section}.{key}"
            entry = table.get(key)
            if not isinstance(entry, Mapping) or "value" not in entry:
                raise self.fail(where, "missing (write { value = ..., cite = ... })")
            if flags:
                if not isinstance(entry["value"], bool):
                    raise self.fail(where, "value must be true or false")
                value = float(entry["value"])
            else:
                value = self.number(where, entry["value"])
                unit = entry.get("unit")
                if unit == "nmol/L" and section == "levels":  # 25(OH)D thresholds: to ng/mL,
                    value = value * _nmol_factor()  # with the factor results are read with
                elif unit is not None:
                    raise self.fail(f"{where}.unit", 'only levels may say unit = "nmol/L"')
            out[key] = Cited(value, self.cite(where, entry.get("cite")))
        return out

    def flag(self, where: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "must be true or false")
        return value

    def schedule(self, where: str, entry: Any, *, key: str | None = None) -> Schedule:
        entry = self.table(where, entry)
        every = entry.get("every", "d")
        if every not in PERIODS:
            raise self.fail(f"{where}.every", "must be 'd' or 'wk'")
        weeks = entry.get("weeks")
        return Schedule(
            dose_iu=int(self.number(f"{where}.dose_iu", entry.get("dose_iu"))),
            every=every,
            weeks=None if weeks is None else int(self.number(f"{where}.weeks", weeks)),
            key=key or str(entry.get("key") or "maintenance"),
            frequency=int(self.number(f"{where}.frequency", entry.get("frequency", 1))),
        )


def _check(name: str, data: Mapping[str, Any]) -> Guideline:
    c = _Checker(name, data)
    for key, entry in c.table("citations").items():
        entry = c.table(f"citations.{key}", entry)
        url = entry.get("url")
        if url is not None and not (isinstance(url, str) and url.startswith("https://")):
            raise c.fail(f"citations.{key}.url", "must be an https URL")
        label = c.text(f"citations.{key}.label", entry.get("label"))
        short = entry.get("short", label)
        c.citations[key] = Citation(key, label, url, c.text(f"citations.{key}.short", short))

    regimens = {}
    for band in BANDS:
        where = f"regimens.{band}"
        entry = c.table(where, c.table("regimens").get(band))
        courses = entry.get("courses")
        if not isinstance(courses, list) or not courses:
            raise c.fail(f"{where}.courses", "missing or empty")
        maintenance = c.table(f"{where}.maintenance", entry.get("maintenance"))
        regimen = Regimen(
            band=band,
            courses=tuple(
                c.schedule(f"{where}.courses[{n}]", course) for n, course in enumerate(courses)
            ),
            maintenance=c.schedule(f"{where}.maintenance", maintenance, key="maintenance"),
            maintenance_range=c.text(f"{where}.maintenance.range", maintenance.get("range")),
            cite=c.cite(where, entry.get("cite")),
            maintenance_gap_weeks=int(
                c.number(
                    f"{where}.maintenance_gap_weeks",
                    entry.get("maintenance_gap_weeks", 0),
                    positive=False,
                )
            ),
            follow_up_lab=c.text(
                f"{where}.follow_up_lab", entry.get("follow_up_lab", "vitamin-d-25oh")
            ),
            follow_up_weeks_after_course=(
                None
                if entry.get("follow_up_weeks_after_course") is None
                else int(
                    c.number(
                        f"{where}.follow_up_weeks_after_course",
                        entry.get("follow_up_weeks_after_course"),
                    )
                )
            ),
            offered=c.flag(f"{where}.offered", entry.get("offered", True)),
        )
        if any(course.weeks is None for course in regimen.courses):
            raise c.fail(f"{where}.courses", "every course needs `weeks`")
        regimens[band] = regimen

    doses = c.cited_group("doses", DOSES)
    ceiling = doses["pregnancy_max_daily_iu"].value
    for schedule in (*regimens["pregnancy"].courses, regimens["pregnancy"].maintenance):
        # A safety rule of the engine, enforced on the file: no megadose in pregnancy.
        if schedule.every != "d" or schedule.daily_iu > ceiling:
            raise c.fail("regimens.pregnancy", f"daily dosing of at most {ceiling:g} IU only")

    from .rules import SAFETY_TOPICS, TOPIC_IDS  # the topics the rule modules declare

    topics = c.cited_group("topics", TOPIC_IDS, flags=True)
    for topic in SAFETY_TOPICS:
        if not topics[topic].value:
            raise c.fail(f"topics.{topic}", "a prescribing-safety topic cannot be turned off")

    limits = c.table("upper_limits")
    bands = limits.get("bands")
    if not isinstance(bands, list) or not bands:
        raise c.fail("upper_limits.bands", "missing or empty")
    cite = c.cite("upper_limits", limits.get("cite"))
    upper_limits = tuple(
        UpperLimit(
            below_months=int(
                c.number(f"upper_limits.bands[{n}].below_months", b.get("below_months"))
            ),
            iu=c.number(f"upper_limits.bands[{n}].iu", b.get("iu")),
            ages=c.text(f"upper_limits.bands[{n}].ages", b.get("ages")),
            cite=cite,
        )
        for n, b in enumerate(c.table(f"upper_limits.bands[{n}]", b) for n, b in enumerate(bands))
    )
    if [u.below_months for u in upper_limits] != sorted({u.below_months for u in upper_limits}):
        raise c.fail("upper_limits.bands", "ages must rise from one band to the next")

    higher = dict(c.table("higher_need"))
    changes = c.table("higher_need.changes_regimens", higher.pop("changes_regimens", None))
    if not isinstance(changes.get("value"), bool):
        raise c.fail("higher_need.changes_regimens", "value must be true or false")
    c.cite("higher_need.changes_regimens", changes.get("cite"))
    higher_need = _Checker(name, {"higher_need": higher})
    higher_need.citations = c.citations

    testing = c.table("testing")
    retest = c.table("testing.retest_after_days", testing.get("retest_after_days"))
    spare = c.table("testing.spare_healthy_adults", testing.get("spare_healthy_adults"))
    if not isinstance(spare.get("value"), bool):
        raise c.fail("testing.spare_healthy_adults", "value must be true or false")
    unknown = sorted(set(testing) - {"retest_after_days", "spare_healthy_adults"})
    if unknown:
        raise c.fail("testing", f"unknown keys {unknown}")

    empiric = c.table("empiric")
    groups = ("older_adult", "pregnancy", "child")
    return Guideline(
        profile=c.text("profile", data.get("profile")),
        version=c.text("version", data.get("version")),
        title=c.text("title", data.get("title")),
        citations=c.citations,
        topics=topics,
        levels=c.cited_group("levels", LEVELS),
        windows=c.cited_group("windows", WINDOWS),
        ages=c.cited_group("ages", AGES),
        doses=doses,
        safety=c.cited_group("safety", SAFETY),
        regimens=regimens,
        empiric=Empiric(
            adult_from_years=int(
                c.number("empiric.adult_from_years", empiric.get("adult_from_years"))
            ),
            max_child_years=int(
                c.number("empiric.max_child_years", empiric.get("max_child_years"))
            ),
            already_on_daily_iu=c.number(
                "empiric.already_on_daily_iu", empiric.get("already_on_daily_iu")
            ),
            doses={g: c.schedule(f"empiric.{g}", empiric.get(g), key=g) for g in groups},
            ranges={
                g: c.text(
                    f"empiric.{g}.range", c.table(f"empiric.{g}", empiric.get(g)).get("range")
                )
                for g in groups
            },
            cite=c.cite("empiric", empiric.get("cite")),
        ),
        upper_limits=upper_limits,
        display_unit=_display_unit(c, data),
        higher_need=higher_need.cited_group("higher_need", HIGHER_NEED),
        higher_need_regimens=bool(changes["value"]),
        retest_after_days=Cited(
            c.number("testing.retest_after_days", retest.get("value")),
            c.cite("testing.retest_after_days", retest.get("cite")),
        ),
        spare_healthy_adults=Cited(
            float(spare["value"]), c.cite("testing.spare_healthy_adults", spare.get("cite"))
        ),
    )


def _nmol_factor() -> float:
    from .knowledge import load

    return load("labs")["vitamin_d_25oh"]["units_to_ng_ml"]["nmol/L"]["factor"]


def _display_unit(c: _Checker, data: Mapping[str, Any]) -> str:
    unit = data.get("display_unit", "ng/mL")
    if unit not in ("ng/mL", "nmol/L"):
        raise c.fail("display_unit", "must be 'ng/mL' or 'nmol/L'")
    return unit


@cache
def load_guideline(name: str = "default") -> Guideline:
    """The validated profile `name` (cached per process)."""
    guideline = _check(name, _raw(name))
    if guideline.profile != name:
        raise GuidelineError(f"guidelines/{name}.toml says profile = {guideline.profile!r}")
    return guideline
