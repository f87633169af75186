"""Caches added for speed (bench/run.py) keep answers identical and stay bounded."""

from __future__ import annotations

from cds_service.facts import medications
from cds_service.facts.model import Ingredient


def test_recognised_text_is_cached_only_when_short():
    medications._recognise_text_cached.cache_clear()
    short = "Warfarin Sodium 5 MG Oral Tablet"
    first = medications.recognise_text(short)
    assert medications.recognise_text(short) == first == medications._recognise_text(short)
    assert medications._recognise_text_cached.cache_info().hits == 1
    long = "Cholecalciferol 1000 IU " + "x" * 5000
    assert Ingredient.VITAMIN_D3 in medications.recognise_text(long)
    assert medications._recognise_text_cached.cache_info().currsize == 1  # the long one is not kept
    assert medications._recognise_text_cached.cache_info().maxsize == 4096
