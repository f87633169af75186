"""Clinical knowledge as data: code sets, names and brands, each entry with its source.

The JSON files beside this module are the single place where codes live; code only loads
them. `load(name)` reads `<name>.json` once per process.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def load(name: str) -> Any:
    """Parsed content of `knowledge/<name>.json` (cached; treat it as read-only)."""
    text = resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)
