"""A client's profile applied to rendered cards (contract §7), with no I/O.

- `with_snooze_reasons`: patient-view cards offer the two snooze override reasons after their
  own (never a critical `vitd-high-level`, which is never snoozed); their own "patient
  declined" gives way to the snooze's "patient declines";
- `present`: links a client does not take are left out, and `detail` becomes plain text for a
  client that does not render markdown;
- `card_key` / `draft_digest`: what "the same card for the same draft" means at signing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from markdown_it import MarkdownIt

from .cards import OVERRIDE_SYSTEM
from .clients import ClientProfile

SNOOZE_30D = "snooze-30d"
PATIENT_DECLINES = "patient-declines"
SNOOZE_REASONS = (
    {"system": OVERRIDE_SYSTEM, "code": SNOOZE_30D, "display": "Not now: remind me in 30 days"},
    {
        "system": OVERRIDE_SYSTEM,
        "code": PATIENT_DECLINES,
        "display": "Patient declines: do not remind for 90 days",
    },
)
PATIENT_DECLINES_DAYS = 90
# A card's own override reasons that a snooze reason says better, left out where the snooze
# reasons are offered: "Patient declined" beside "Patient declines: do not remind for 90 days"
# were two choices for one answer, and only the second stopped the reminders.
_SAID_BY_A_SNOOZE = frozenset({(OVERRIDE_SYSTEM, "patient-declined")})
DEDUPE_HOURS = 12

_MD = MarkdownIt("commonmark")


def topic_of(card: Mapping[str, Any]) -> str | None:
    code = card.get("source", {}).get("topic", {}).get("code")
    return code if isinstance(code, str) else None


def never_snoozed(topic: str, indicator: str) -> bool:
    """A critical high level is a safety signal: no clinician can put it off."""
    return topic == "vitd-high-level" and indicator == "critical"


def with_snooze_reasons(card: dict[str, Any]) -> dict[str, Any]:
    topic = topic_of(card)
    if topic is None or never_snoozed(topic, card.get("indicator", "")):
        return card
    own = [
        r
        for r in card.get("overrideReasons", [])
        if (r.get("system"), r.get("code")) not in _SAID_BY_A_SNOOZE
    ]
    codes = {(r.get("system"), r.get("code")) for r in own}
    extra = [r for r in SNOOZE_REASONS if (r["system"], r["code"]) not in codes]
    card["overrideReasons"] = [*own, *(dict(r) for r in extra)]
    return card


def snooze_days(default_days: int) -> dict[tuple[str, str], int]:
    """(system, code) of each snooze reason -> days it lasts."""
    return {
        (OVERRIDE_SYSTEM, SNOOZE_30D): default_days,
        (OVERRIDE_SYSTEM, PATIENT_DECLINES): PATIENT_DECLINES_DAYS,
    }


# --- presentation ---------------------------------------------------------------------------


def present(card: dict[str, Any], client: ClientProfile) -> dict[str, Any]:
    if "links" in card and client.links != "all":
        kept = [link for link in card["links"] if client.allows_link(str(link.get("url", "")))]
        if kept:
            card["links"] = kept
        else:
            del card["links"]  # optional fields without a value are omitted
    if client.detail == "text":
        card["detail"] = plain_text(card["detail"], links=client.links != "none")
    return card


def plain_text(markdown: str, *, links: bool = True) -> str:
    """Markdown as plain text: no markup, escapes and entities resolved; lists keep a `- ` or
    `1. ` marker, paragraphs a blank line; a link is its text, then its URL in brackets when
    links are shown."""
    blocks: list[str] = []
    lists: list[list[Any]] = []  # [ordered, next number]
    prefix = ""
    for token in _MD.parse(markdown):
        kind = token.type
        if kind in ("bullet_list_open", "ordered_list_open"):
            start = int(token.attrGet("start") or 1)
            lists.append([kind == "ordered_list_open", start])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
            if not lists:
                blocks.append("")
        elif kind == "list_item_open":
            ordered, number = lists[-1]
            prefix = "  " * (len(lists) - 1) + (f"{number}. " if ordered else "- ")
            lists[-1][1] = number + 1
        elif kind == "inline":
            text = _inline(token.children or [], links)
            if prefix:
                blocks.append(prefix + text)
                prefix = ""
            elif lists:
                blocks.append("  " * len(lists) + text)
            else:
                blocks.append(text)
        elif kind in ("fence", "code_block"):
            blocks.append(token.content.rstrip("\n"))
        elif kind == "hr":
            blocks.append("----")
        elif kind in ("paragraph_close", "heading_close") and not lists:
            blocks.append("")
    out = "\n".join(blocks).strip()
    while "\n\n\n" in out:
        out = out.replace("\n\n\n", "\n\n")
    return out


def _inline(children: Iterable[Any], links: bool) -> str:
    parts: list[str] = []
    href: str | None = None
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append("\n")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "link_open":
            href = child.attrGet("href")
        elif child.type == "link_close":
            if links and href:
                parts.append(f" ({href})")
            href = None
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


# --- de-duplication at signing --------------------------------------------------------------


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def card_fingerprint(card: Mapping[str, Any]) -> str:
    """What a clinician sees of a card, without the ids that differ between calls."""
    seen = {
        "topic": topic_of(card),
        "indicator": card.get("indicator"),
        "summary": card.get("summary"),
        "detail": card.get("detail"),
        "suggestions": [
            {
                "label": s.get("label"),
                "actions": [
                    [a.get("type"), a.get("description"), a.get("resourceId")]
                    for a in s.get("actions", [])
                ],
            }
            for s in card.get("suggestions", [])
        ],
    }
    return hashlib.sha256(_canonical(seen)).hexdigest()


def card_key(client: str, patient_id: str, user_id: str, card: Mapping[str, Any]) -> str:
    who = f"{client}\x00{patient_id}\x00{user_id}\x00{card_fingerprint(card)}"
    return hashlib.sha256(who.encode()).hexdigest()


def draft_digest(resource: Mapping[str, Any]) -> str:
    """A draft's id and content: a changed dose is a new draft."""
    return hashlib.sha256(_canonical(resource)).hexdigest()


def draft_digests(request: Mapping[str, Any], *, selected_only: bool) -> frozenset[str]:
    """Digests of the draft orders in context (order-select: only the selected ones)."""
    context = request.get("context") or {}
    bundle = context.get("draftOrders") or {}
    selected = set(context.get("selections") or ())
    out = set()
    for entry in bundle.get("entry") or ():
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping):
            continue
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        if selected_only and ref not in selected:
            continue
        out.add(draft_digest(resource))
    return frozenset(out)
