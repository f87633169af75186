"""The CDS Hooks card link that opens the history picture (a SMART app link, CDS Hooks 2.0)."""

from __future__ import annotations

from ..config import Settings
from .web import launch_url

LABEL = "Vitamin D history"


def history_link(settings: Settings) -> dict[str, str] | None:
    """`{"label", "url", "type": "smart"}` for a card's `links`; None (omit it) unless the SMART
    launch is configured: without it /launch answers 404, and a link to it would only mislead."""
    url = launch_url(settings) if settings.smart_enabled else None
    if url is None:
        return None
    return {"label": LABEL, "url": url, "type": "smart"}
