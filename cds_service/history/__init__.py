"""The vitamin D history picture: 25(OH)D over time against the guideline's bands, the vitamin
D / K / calcium (and VKA) products as a timeline with daily-equivalent doses, and INR when a VKA
is active. Served as a SMART on FHIR app (`web.py`), written by the CLI, linked from cards.

picture.py  facts -> what to draw, and the layout numbers (no FHIR JSON here)
render.py   Jinja2 (autoescaped) SVG and HTML from templates/
records.py  facts from a Bundle file or from the FHIR server after a launch (build_facts)
bands.py    the 25(OH)D bands (the one place that reads the guideline's thresholds)
web.py      /launch, /history/callback, /history
sessions.py server-side launch sessions (encrypted, in the store)
links.py    the CDS Hooks card link to the launch URL
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..guideline import Guideline
from .bands import bands_for
from .picture import Picture, picture_from_facts
from .records import RecordError, facts_from_bundle
from .render import render_page, render_svg
from .web import register

__all__ = [
    "Picture",
    "RecordError",
    "picture_for_bundle",
    "register",
    "render_page",
    "render_svg",
]


def picture_for_bundle(bundle: Any, guideline: Guideline, *, now: datetime) -> Picture:
    """The picture of the one patient in a FHIR Bundle (CLI, preview page): no SMART, no
    network. Raises RecordError when the Bundle is not one patient's record."""
    return picture_from_facts(facts_from_bundle(bundle, now=now), bands_for(guideline))
