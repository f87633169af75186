"""Client profiles (contract §7): what each EHR gets, from `CDS_CLIENTS_FILE` (TOML or JSON).

One entry per JWT issuer (`iss`, optionally narrowed by the token's `tenant` claim) and a
`default` entry, used with authentication off and for issuers without an entry of their own.
A key an entry leaves out takes the `default` entry's value. The file is read and checked once
at start: an unknown key, hook, topic or profile, or a wrong type, stops the service with the
file and the key named (`ConfigError`).

`ClientProfile` is plain data; applying it to a response is `profiles.py`'s business.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .config import ConfigError
from .guideline import PROFILES

HOOKS = ("patient-view", "order-select", "order-sign")
DETAILS = ("markdown", "text")
_KEYS = ("hooks", "profile", "links", "detail", "silent_topics", "dedupe_order_sign")
_CLIENT_KEYS = ("iss", "tenant", "name", *_KEYS)


@dataclass(frozen=True)
class ClientProfile:
    """How one client is served. `name` labels its cards in the store, metrics and reports."""

    name: str = "default"
    hooks: frozenset[str] = frozenset(HOOKS)
    profile: str = "default"
    links: str | tuple[str, ...] = "all"  # "all", "none", or allowed URL prefixes
    detail: str = "markdown"
    silent_topics: frozenset[str] = frozenset()
    dedupe_order_sign: bool = False

    def allows_link(self, url: str) -> bool:
        if self.links == "all":
            return True
        if self.links == "none":
            return False
        return any(url.startswith(prefix) for prefix in self.links)


@dataclass(frozen=True)
class Clients:
    default: ClientProfile
    by_issuer: Mapping[tuple[str, str | None], ClientProfile]

    def for_caller(self, issuer: str | None, tenant: str | None) -> ClientProfile:
        """The entry for (issuer, tenant), else the issuer's entry without a tenant, else
        `default` (authentication off, or an issuer the file does not name)."""
        if issuer is None:
            return self.default
        return (
            self.by_issuer.get((issuer, tenant))
            or self.by_issuer.get((issuer, None))
            or self.default
        )

    @property
    def profiles(self) -> frozenset[str]:
        """Every guideline profile some client uses (loaded at start)."""
        return frozenset({self.default.profile, *(c.profile for c in self.by_issuer.values())})

    @property
    def names(self) -> tuple[str, ...]:
        return (self.default.name, *(c.name for c in self.by_issuer.values()))


def known_topics() -> tuple[str, ...]:
    """Every topic a rule can raise, as the rule modules declare them (`rules.TOPIC_IDS`)."""
    from . import rules

    return tuple(rules.TOPIC_IDS)


def default_clients(guideline_profile: str = "default") -> Clients:
    return Clients(ClientProfile(profile=guideline_profile), {})


def _strings(where: str, key: str, value: Any, allowed: tuple[str, ...]) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{where}: {key} has unknown value(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(allowed)}"
        )
    return frozenset(value)


def _links(where: str, value: Any) -> str | tuple[str, ...]:
    if value in ("all", "none"):
        return value
    if isinstance(value, list) and all(
        isinstance(v, str) and v.startswith(("https://", "http://")) for v in value
    ):
        return tuple(value)
    raise ConfigError(f'{where}: links must be "all", "none" or a list of http(s) URL prefixes')


def _entry(where: str, raw: Any, base: ClientProfile, allowed_keys: tuple[str, ...]):
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table (object)")
    unknown = sorted(set(raw) - set(allowed_keys))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    changes: dict[str, Any] = {}
    if "hooks" in raw:
        changes["hooks"] = _strings(where, "hooks", raw["hooks"], HOOKS)
    if "profile" in raw:
        if raw["profile"] not in PROFILES:
            raise ConfigError(
                f"{where}: profile {raw['profile']!r} is unknown; choose from {', '.join(PROFILES)}"
            )
        changes["profile"] = raw["profile"]
    if "links" in raw:
        changes["links"] = _links(where, raw["links"])
    if "detail" in raw:
        if raw["detail"] not in DETAILS:
            raise ConfigError(f'{where}: detail must be "markdown" or "text"')
        changes["detail"] = raw["detail"]
    if "silent_topics" in raw:
        changes["silent_topics"] = _strings(
            where, "silent_topics", raw["silent_topics"], known_topics()
        )
    if "dedupe_order_sign" in raw:
        if not isinstance(raw["dedupe_order_sign"], bool):
            raise ConfigError(f"{where}: dedupe_order_sign must be true or false")
        changes["dedupe_order_sign"] = raw["dedupe_order_sign"]
    return replace(base, **changes)


def parse_clients(data: Any, source: str, guideline_profile: str = "default") -> Clients:
    """Check and build the profiles; every error names `source` and the key at fault."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} must hold a table with [default] and [[clients]]")
    unknown = sorted(set(data) - {"default", "clients"})
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (expected default, clients)")
    default = _entry(
        f"{source} [default]",
        data.get("default", {}),
        ClientProfile(profile=guideline_profile),
        _KEYS,
    )
    entries = data.get("clients", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: clients must be a list of tables ([[clients]])")
    by_issuer: dict[tuple[str, str | None], ClientProfile] = {}
    names = {default.name}
    for index, raw in enumerate(entries):
        where = f"{source} clients[{index}]"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a table (object)")
        iss, tenant = raw.get("iss"), raw.get("tenant")
        if not isinstance(iss, str) or not iss:
            raise ConfigError(f"{where}: iss must be a non-empty string (the JWT issuer)")
        if tenant is not None and (not isinstance(tenant, str) or not tenant):
            raise ConfigError(f"{where}: tenant must be a non-empty string")
        name = raw.get("name", iss if tenant is None else f"{iss}#{tenant}")
        if not isinstance(name, str) or not name or len(name) > 128:
            raise ConfigError(f"{where}: name must be a string of 1 to 128 characters")
        if (iss, tenant) in by_issuer:
            raise ConfigError(f"{where}: repeats iss {iss!r} with tenant {tenant!r}")
        if name in names:
            raise ConfigError(f"{where}: name {name!r} is used twice")
        names.add(name)
        by_issuer[(iss, tenant)] = _entry(where, raw, replace(default, name=name), _CLIENT_KEYS)
    return Clients(default, by_issuer)


def load_clients(path: str | None, guideline_profile: str = "default") -> Clients:
    """`CDS_CLIENTS_FILE` (`.json` is JSON, anything else TOML); defaults when unset."""
    if not path:
        return default_clients(guideline_profile)
    source = f"CDS_CLIENTS_FILE {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source} cannot be read: {exc.strerror}") from None
    kind = "JSON" if path.endswith(".json") else "TOML"
    try:
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{source} is not valid {kind}: {exc}") from None
    return parse_clients(data, source, guideline_profile)
