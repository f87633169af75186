"""A card topic, declared once in the rule module that raises it.

`cds_service.rules.TOPICS` collects the declarations of every rule module; the service's start-up
check of card templates (`cards/<id>.toml`), the guideline profile validator (each topic needs one
`[topics]` entry, in `default.toml` or a profile it extends) and the tests all read that list.
Adding a topic: declare it in its rule module, write `cards/<id>.toml`, add one line to
`guidelines/default.toml` `[topics]`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    id: str  # the card's source.topic code and the name of its card file
    safety: bool = False  # prescribing safety: on in every profile, a profile cannot turn it off
