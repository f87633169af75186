"""Findings → CDS Hooks cards, with text from `cards/<topic>.toml` and FHIR from `orders.py`.

Templates are Jinja2 with StrictUndefined. In `detail` (markdown that clients render with raw
HTML) every interpolated value is escaped for markdown and HTML, so text that came from the
record (product names, raw units) can never become markup; the template's own literal
markdown is kept. `summary` is plain text, at most 140 characters.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from . import ids, orders
from .guideline import Guideline
from .rules.findings import Create, Delete, Finding, LabOrder, MedicationOrder

# The top-level cards/ directory; `card_templates` is a link to it, so wheels carry the
# templates as package data (setuptools copies the files the link points to).
CARDS_DIR = Path(__file__).resolve().parent / "card_templates"
TOPIC_SYSTEM = "urn:vitd-cds:topic"
OVERRIDE_SYSTEM = "urn:vitd-cds:override-reason"
SUMMARY_MAX = 140

_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}()#+!|~])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class CardTemplateError(ValueError):
    """A card template is missing or malformed; raised at start."""


def md_escape(value: Any) -> str:
    """Text safe inside markdown rendered with raw HTML."""
    text = _CONTROL.sub(" ", str(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _finalize_detail(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Markup):  # the service's own text (guideline labels), not the record's
        return str(value)
    return md_escape(value)


def _finalize_summary(value: Any) -> str:
    return "" if value is None else " ".join(_CONTROL.sub(" ", str(value)).split())


def fmt_number(value: float | int | None) -> str:
    """50000 -> '50,000'; 12.5 -> '12.5'; 7142.857 -> '7,143'."""
    if value is None:
        return "unknown"
    if abs(value - round(value)) < 1e-9 or abs(value) >= 1000:
        return f"{round(value):,}"
    return f"{value:,.1f}".rstrip("0").rstrip(".")


def fmt_ng(value: float | None) -> str:
    """A level, never rounded across a threshold: 19.99 -> '19.99', 12.0 -> '12'."""
    if value is None:
        return "unknown"
    return f"{value:.2f}".rstrip("0").rstrip(".")


def fmt_date(value: datetime | None) -> str:
    return value.date().isoformat() if isinstance(value, datetime) else "date unknown"


NMOL_PER_NG = 2.496


def fmt_ug(value: float | None) -> str:
    """A vitamin K amount: '90 µg', or from 1 mg in mg ('5 mg', not '5,000 µg')."""
    if value is None:
        return "unknown"
    if value >= 1000:
        return f"{fmt_number(value / 1000)} mg"
    return f"{fmt_number(value)} µg"


def fmt_threshold(ng_ml: float, unit: str = "ng/mL") -> str:
    """A threshold in the profile's unit first: '20 ng/mL (50 nmol/L)', '25 nmol/L (about
    10.0 ng/mL)'."""
    if unit == "nmol/L":
        return f"{fmt_number(round(ng_ml * NMOL_PER_NG, 1))} nmol/L (about {ng_ml:.1f} ng/mL)"
    return f"{fmt_number(ng_ml)} ng/mL ({round(ng_ml * NMOL_PER_NG)} nmol/L)"


def fmt_level(data: Mapping[str, Any], unit: str = "ng/mL") -> str:
    """'12 ng/mL', '<5 ng/mL', or as the lab reported it first with the conversion rounded to
    one decimal: '45 nmol/L (about 18.0 ng/mL)' (contract §4; classification uses the exact
    value, never this rounding). With `unit` "nmol/L" (profile nice) nmol/L comes first:
    '21 nmol/L (about 8.4 ng/mL)', 'about 29.9 nmol/L (12 ng/mL as reported)'."""
    comparator = data.get("comparator") or ""
    raw_unit = data.get("raw_unit")
    reported = data.get("raw_value")
    if unit == "nmol/L" and data["ng_ml"] is not None:
        if raw_unit == "nmol/L" and reported:
            return f"{comparator}{reported} nmol/L (about {comparator}{data['ng_ml']:.1f} ng/mL)"
        nmol = data["ng_ml"] * NMOL_PER_NG
        ng = fmt_ng(data["ng_ml"])
        return f"about {comparator}{nmol:.1f} nmol/L ({comparator}{ng} ng/mL as reported)"
    if raw_unit and raw_unit not in ("ng/mL", "ng/ml") and reported and data["ng_ml"] is not None:
        return f"{comparator}{reported} {raw_unit} (about {comparator}{data['ng_ml']:.1f} ng/mL)"
    return f"{comparator}{fmt_ng(data['ng_ml'])} ng/mL"


def _environment(finalize) -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters.update(
        num=fmt_number,
        ng=fmt_ng,
        date=fmt_date,
        level=fmt_level,
        threshold=fmt_threshold,
        ug=fmt_ug,
    )
    # No globals (Jinja's range, dict, lipsum, cycler, joiner, namespace): a card names only
    # what its finding gives, and a name the finding lacks is an error (StrictUndefined), not
    # the repr of a builtin. It also saves copying them into every render's context.
    env.globals.clear()
    return env


_DETAIL_ENV = _environment(_finalize_detail)
_SUMMARY_ENV = _environment(_finalize_summary)


class CardTemplate:
    def __init__(self, topic: str, raw: Mapping[str, Any]) -> None:
        try:
            self.topic = topic
            self.title = str(raw["title"])
            self.summary = _SUMMARY_ENV.from_string(raw["summary"])
            self.detail = _DETAIL_ENV.from_string(raw["detail"])
            self.labels = {
                key: _SUMMARY_ENV.from_string(text)
                for key, text in (raw.get("suggestions") or {}).items()
            }
            self.override_reasons = [
                {"system": OVERRIDE_SYSTEM, "code": str(r["code"]), "display": str(r["display"])}
                for r in raw.get("override_reasons", [])
            ]
        except (KeyError, TypeError, jinja2.TemplateSyntaxError) as exc:
            raise CardTemplateError(f"cards/{topic}.toml: {exc}") from None


@cache
def template(topic: str) -> CardTemplate:
    path = CARDS_DIR / f"{topic}.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CardTemplateError(f"cards/{topic}.toml cannot be read: {exc}") from None
    return CardTemplate(topic, raw)


def check_templates(topics: list[str] | tuple[str, ...]) -> None:
    """Load every template once at start, so a broken one stops the service, not a call."""
    for topic in topics:
        template(topic)


def _summary(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip() + "…"


def _action(action: Create | Delete, patient_id: str, now: datetime) -> dict[str, Any]:
    if isinstance(action, Delete):
        return {
            "type": "delete",
            "description": f"Remove the draft order: {action.name}",
            "resourceId": f"{action.resource_type}/{action.resource_id}",
        }
    resource = orders.build(action.order, patient_id, now)
    if isinstance(action.order, MedicationOrder):
        concept = resource["medicationCodeableConcept"]["text"]
        dosage = resource["dosageInstruction"][0]["text"]
        description = f"Order {concept}: {dosage}"
    else:
        assert isinstance(action.order, LabOrder)
        if action.order.within_days is not None:
            when = (
                f"within {action.order.within_days} days (by {resource['occurrencePeriod']['end']})"
            )
        elif action.order.due_in_days == 0:
            when = "now"
        else:
            when = f"on or after {resource['occurrenceDateTime']}"
        description = f"Order {orders.lab_text(action.order.lab)} {when}"
    return {"type": "create", "description": description, "resource": resource}


def render(finding: Finding, guideline: Guideline, patient_id: str, now: datetime) -> dict:
    """One card. Optional fields without a value are left out (CDS Hooks "Use of JSON")."""
    tpl = template(finding.topic)
    context = {**finding.data, "g": guideline, "indicator": finding.indicator}
    citation = guideline.citation(finding.cite)
    source: dict[str, Any] = {"label": citation.label}
    if citation.url:
        source["url"] = citation.url
    source["topic"] = {"system": TOPIC_SYSTEM, "code": finding.topic, "display": tpl.title}
    card: dict[str, Any] = {
        "uuid": ids.uuid4_str(),
        "summary": _summary(" ".join(tpl.summary.render(context).split())),
        "indicator": finding.indicator,
        "detail": tpl.detail.render(
            {
                **context,
                "citation": {
                    "label": Markup(citation.label),
                    "short": Markup(citation.short),
                    "url": citation.url,
                },
            }
        ).strip(),
        "source": source,
    }
    if finding.proposals:
        card["suggestions"] = [
            {
                "label": tpl.labels[p.key].render({**context, **p.data}),
                "uuid": ids.uuid4_str(),
                "actions": [_action(a, patient_id, now) for a in p.actions],
            }
            for p in finding.proposals
        ]
        card["selectionBehavior"] = "at-most-one"
    if finding.indicator in ("warning", "critical") and tpl.override_reasons:
        card["overrideReasons"] = tpl.override_reasons
    return card


# Cards whose reader wants the picture of levels, doses and INR (issue 9).
_HISTORY_TOPICS = re.compile(r"^(vitd-[a-z0-9-]+|vka-vitamin-k-interaction)$")


def with_history_link(card: dict[str, Any], link: Mapping[str, str] | None) -> dict[str, Any]:
    """`card` with the SMART link to the vitamin D history page in `links`, for the vitd-* and
    vka-vitamin-k-interaction topics; unchanged when there is no link (no public base URL)."""
    topic = card.get("source", {}).get("topic", {}).get("code", "")
    if link and _HISTORY_TOPICS.match(topic):
        card["links"] = [*card.get("links", []), dict(link)]
    return card
