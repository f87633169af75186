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

from .web import register

__all__ = ["register"]
