"""The parsed-key cache (issue 19): a JWK is parsed once, looked up by the dict it came in
without serialising it per call, and never serves a key the JWK no longer holds."""

from __future__ import annotations

import json

from jwt.algorithms import ECAlgorithm

from cds_service import auth as auth_module

from .jwt_helpers import signer


def _key(jwk: dict, alg: str):
    key, _warning = auth_module._public_key(jwk, alg)
    return key


def test_a_jwk_is_parsed_once_without_serialising_it_per_call(monkeypatch):
    auth_module._parsed_key.cache_clear()
    jwk = signer("ES256", "once").jwk
    parsed, dumped = [], []
    original_from_jwk, original_dumps = ECAlgorithm.from_jwk, json.dumps
    monkeypatch.setattr(ECAlgorithm, "from_jwk", lambda j: parsed.append(1) or original_from_jwk(j))
    monkeypatch.setattr(json, "dumps", lambda *a, **k: dumped.append(1) or original_dumps(*a, **k))
    first = _key(jwk, "ES256")
    assert all(_key(jwk, "ES256") is first for _ in range(3))
    assert len(parsed) == 1 and dumped == []


def test_a_jwk_changed_in_place_is_parsed_afresh():
    """The cache follows the JWK's content, not where it sits in memory."""
    auth_module._parsed_key.cache_clear()
    first, second = signer("ES256", "rot", 0), signer("ES256", "rot", 1)
    jwk = first.jwk
    key = _key(jwk, "ES256")
    assert _key(jwk, "ES256") is key  # cached
    jwk.update(second.jwk)  # the same dict now holds another key
    assert _key(jwk, "ES256").public_numbers() == second.private_key.public_key().public_numbers()


def test_an_equal_jwk_in_another_dict_gives_the_same_key_and_a_refreshed_set_its_own():
    auth_module._parsed_key.cache_clear()
    old, new = signer("ES256", "k", 0), signer("ES256", "k", 1)
    assert _key(old.jwk, "ES256").public_numbers() == _key(old.jwk, "ES256").public_numbers()
    assert _key(new.jwk, "ES256").public_numbers() == new.private_key.public_key().public_numbers()


def test_the_cache_is_bounded_oldest_first():
    cache = auth_module.ParsedKeys(size=2)
    jwks = [signer("ES256", f"b{n}", n).jwk for n in range(3)]
    for jwk in jwks:
        cache(jwk, "ES256")
    assert len(cache._entries) == 2
    assert (id(jwks[0]), "ES256") not in cache._entries
    assert (id(jwks[2]), "ES256") in cache._entries
