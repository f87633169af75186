"""Medication uses (MedicationRequest, MedicationStatement, DSTU2 MedicationOrder) as facts:
which ingredients we recognise (knowledge/medications.json), strengths and daily doses.

The product is found in `medicationCodeableConcept`, or through `medicationReference` in a
contained Medication ("#id") or one given beside the order (`_include`, same Bundle). Codes are
matched exactly (ATC classes by prefix); text is matched per '/'-separated name component,
word-aware and case-insensitive. Odd shapes are read as missing, never raised on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any

from ..knowledge import load
from . import dosing
from .fhirdates import parse_instant
from .model import DrugClass, Ingredient, IngredientAmount, Medication, MedicationSource

Kind = Ingredient | DrugClass  # what a code or a name tells: an ingredient or a drug class

USE_TYPES = frozenset({"MedicationRequest", "MedicationStatement", "MedicationOrder"})


@dataclass(frozen=True)
class _Matchers:
    rxnorm_system: str
    atc_system: str
    rxnorm: dict[str, frozenset[Kind]]
    atc_exact: dict[str, frozenset[Kind]]
    atc_prefix: tuple[tuple[str, Kind], ...]
    patterns: tuple[tuple[re.Pattern[str], Kind], ...]
    calcium_exclusion: re.Pattern[str]
    text_exclusions: tuple[tuple[Kind, re.Pattern[str]], ...]


@cache
def _matchers() -> _Matchers:
    data = load("medications")
    rxnorm: dict[str, set[Kind]] = {}
    atc_exact: dict[str, set[Kind]] = {}
    atc_prefix: list[tuple[str, Kind]] = []
    patterns: list[tuple[re.Pattern[str], Kind]] = []
    for name, entry in data["ingredients"].items():
        ingredient: Kind = (
            DrugClass(name) if entry.get("kind") == "class" else Ingredient(name)
        )
        for code in entry["rxnorm"]:
            rxnorm.setdefault(code["code"], set()).add(ingredient)
        for code in entry["atc"]:
            if code.get("prefix"):
                atc_prefix.append((code["code"].upper(), ingredient))
            else:
                atc_exact.setdefault(code["code"].upper(), set()).add(ingredient)
        for pattern in entry["patterns"]:
            patterns.append((re.compile(pattern["regex"], re.IGNORECASE), ingredient))
    exclusion = data["ingredients"]["calcium"]["not_in_component_with"]["regex"]
    text_exclusions = tuple(
        (
            DrugClass(name) if entry.get("kind") == "class" else Ingredient(name),
            re.compile(entry["not_in_text_with"]["regex"], re.IGNORECASE),
        )
        for name, entry in data["ingredients"].items()
        if "not_in_text_with" in entry
    )
    return _Matchers(
        rxnorm_system=data["systems"]["rxnorm"],
        atc_system=data["systems"]["atc"],
        rxnorm={k: frozenset(v) for k, v in rxnorm.items()},
        atc_exact={k: frozenset(v) for k, v in atc_exact.items()},
        atc_prefix=tuple(atc_prefix),
        patterns=tuple(patterns),
        calcium_exclusion=re.compile(exclusion, re.IGNORECASE),
        text_exclusions=text_exclusions,
    )


def components(text: str) -> list[str]:
    """RxNorm-style names list ingredients separated by ' / '; brands sit in [brackets]."""
    return [part.strip() for part in re.split(r"\s/\s|\s\+\s|/", text) if part.strip()]


# Product names repeat from call to call ("Warfarin Sodium 5 MG Oral Tablet"): matching one is
# a few dozen regex searches, so results are cached. Only short texts, so that a hostile
# request cannot fill the cache with megabytes.
_CACHED_TEXT_CHARS = 200


def recognise_text(text: str) -> frozenset[Kind]:
    if len(text) <= _CACHED_TEXT_CHARS:
        return _recognise_text_cached(text)
    return _recognise_text(text)


@lru_cache(maxsize=4096)
def _recognise_text_cached(text: str) -> frozenset[Kind]:
    return _recognise_text(text)


def _recognise_text(text: str) -> frozenset[Kind]:
    matchers = _matchers()
    found: set[Kind] = set()
    for component in components(text):
        for pattern, ingredient in matchers.patterns:
            if pattern.search(component):
                if ingredient is Ingredient.CALCIUM and matchers.calcium_exclusion.search(
                    component
                ):
                    continue
                found.add(ingredient)
    # A local form (cream, inhaler, eye drops) of a systemic drug class is not that class.
    for ingredient, exclusion in matchers.text_exclusions:
        if ingredient in found and exclusion.search(text):
            found.discard(ingredient)
    # A specific form makes the unspecified one redundant ("Vitamin D3" is not also "vitamin D").
    if found & {Ingredient.VITAMIN_D3, Ingredient.VITAMIN_D2}:
        found.discard(Ingredient.VITAMIN_D_UNSPECIFIED)
    if found & {Ingredient.VITAMIN_K1, Ingredient.VITAMIN_K2}:
        found.discard(Ingredient.VITAMIN_K_UNSPECIFIED)
    return frozenset(found)


def recognise(codings: Iterable[tuple[Any, Any]], texts: Iterable[Any]) -> frozenset[Kind]:
    """Ingredients named by any coding (system, code) or any text."""
    matchers = _matchers()
    found: set[Kind] = set()
    for system, code in codings:
        if not isinstance(code, str):
            continue
        code = code.strip()
        if system == matchers.rxnorm_system:
            found |= matchers.rxnorm.get(code, frozenset())
        elif system == matchers.atc_system:
            upper = code.upper()
            found |= matchers.atc_exact.get(upper, frozenset())
            found |= {i for prefix, i in matchers.atc_prefix if upper.startswith(prefix)}
    for text in texts:
        if isinstance(text, str):
            found |= recognise_text(text)
    return frozenset(found)


def _concept_parts(concept: Any) -> tuple[list[tuple[Any, Any]], list[str]]:
    """(system, code) pairs and texts (text first, then displays) of a CodeableConcept."""
    if not isinstance(concept, dict):
        return [], []
    codings = (
        [c for c in concept.get("coding", []) if isinstance(c, dict)]
        if isinstance(concept.get("coding"), list)
        else []
    )
    texts = [concept["text"]] if isinstance(concept.get("text"), str) else []
    texts += [c["display"] for c in codings if isinstance(c.get("display"), str)]
    return [(c.get("system"), c.get("code")) for c in codings], texts


def _find_medication(resource: dict, referenced: Mapping[str, dict]) -> dict | None:
    ref = resource.get("medicationReference")
    target = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(target, str):
        return None
    if target.startswith("#"):
        for contained in (
            resource.get("contained", []) if isinstance(resource.get("contained"), list) else ()
        ):
            if isinstance(contained, dict) and contained.get("id") == target[1:]:
                return contained
        return None
    if target in referenced:
        return referenced[target]
    tail = re.search(r"Medication/[^/]+$", target)
    return referenced.get(tail.group(0)) if tail else None


def _product(resource: dict, referenced: Mapping[str, dict]):
    """Codings, texts, and per-ingredient strengths stated by a Medication resource."""
    codings, texts = _concept_parts(resource.get("medicationCodeableConcept"))
    medication = _find_medication(resource, referenced)
    stated: list[IngredientAmount] = []
    if isinstance(medication, dict):
        med_codings, med_texts = _concept_parts(medication.get("code"))
        codings += med_codings
        texts += med_texts
        if not texts:
            ref = resource.get("medicationReference")
            if isinstance(ref.get("display"), str):
                texts.append(ref["display"])
        for item in (
            medication.get("ingredient", [])
            if isinstance(medication.get("ingredient"), list)
            else ()
        ):
            if not isinstance(item, dict):
                continue
            item_codings, item_texts = _concept_parts(item.get("itemCodeableConcept"))
            ref = item.get("itemReference")
            if isinstance(ref, dict) and isinstance(ref.get("display"), str):
                item_texts.append(ref["display"])
            codings += item_codings
            texts += item_texts
            stated += _stated_strength(item, recognise(item_codings, item_texts), item_texts)
    else:
        ref = resource.get("medicationReference")
        if isinstance(ref, dict) and isinstance(ref.get("display"), str):
            texts.append(ref["display"])
    return codings, texts + _rxnorm_names(codings, texts) + _atc_names(codings), stated


def _atc_names(codings: list[tuple[Any, Any]]) -> list[str]:
    """Drug names of ATC codes (knowledge `atc_names`): a product coded only by ATC is named
    by its drug ("phenprocoumon"), never "unnamed product"."""
    names = load("medications")["atc_names"]
    system = _matchers().atc_system
    return [
        names[code.strip().upper()]
        for coding_system, code in codings
        if coding_system == system and isinstance(code, str) and code.strip().upper() in names
    ]


def _rxnorm_names(codings: list[tuple[Any, Any]], texts: list[str]) -> list[str]:
    """Known RxNorm names of the coded products (knowledge `rxnorm_names`), after any text sent
    with the order, so a coded-only product is still read by name (ingredients, strength)."""
    names = load("medications")["rxnorm_names"]
    system = _matchers().rxnorm_system
    out = []
    for coding_system, code in codings:
        if coding_system == system and isinstance(code, str):
            name = names.get(code.strip())
            if name and name not in texts and name not in out:
                out.append(name)
    return out


def _stated_strength(
    item: dict, ingredients: frozenset[Ingredient], texts: list[str]
) -> list[IngredientAmount]:
    """Medication.ingredient.strength (a Ratio per one unit) for a single recognised ingredient."""
    strength = item.get("strength")
    numerator = strength.get("numerator") if isinstance(strength, dict) else None
    denominator = strength.get("denominator") if isinstance(strength, dict) else None
    if len(ingredients) != 1 or not isinstance(numerator, dict):
        return []
    value = numerator.get("value")
    per = denominator.get("value", 1) if isinstance(denominator, dict) else 1
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not isinstance(per, int | float)
        or per <= 0
    ):
        return []
    (ingredient,) = ingredients
    unit = dosing.normalise_unit(numerator.get("code")) or dosing.normalise_unit(
        numerator.get("unit")
    )
    amount = dosing.strength_in_base(value / per, unit, ingredient)
    return _elemental([amount], " ".join(texts)) if amount else []


def _elemental(amounts: list[IngredientAmount], component: str) -> list[IngredientAmount]:
    out = []
    for amount in amounts:
        if amount.ingredient is Ingredient.CALCIUM:
            fraction = dosing.calcium_fraction(component)
            if fraction is None:
                continue
            amount = IngredientAmount(amount.ingredient, amount.amount * fraction, "mg")
        out.append(amount)
    return out


def strengths_from_names(texts: Iterable[str]) -> tuple[IngredientAmount, ...]:
    """Per-unit strengths parsed from the first name that states any."""
    names = tuple(texts)
    if sum(map(len, names)) <= _CACHED_TEXT_CHARS:  # product names repeat from call to call
        return _strengths_from_names_cached(names)
    return _strengths_from_names(names)


@lru_cache(maxsize=4096)
def _strengths_from_names_cached(texts: tuple[str, ...]) -> tuple[IngredientAmount, ...]:
    return _strengths_from_names(texts)


def _strengths_from_names(texts: tuple[str, ...]) -> tuple[IngredientAmount, ...]:
    for text in texts:
        found: list[IngredientAmount] = []
        for component in components(text):
            ingredients = recognise_text(component)
            parsed = dosing.parse_strength(component)
            if len(ingredients) != 1 or parsed is None:
                continue
            (ingredient,) = ingredients
            amount = dosing.strength_in_base(parsed[0], parsed[1], ingredient)
            if amount:
                found += _elemental([amount], component)
        if found:
            return tuple(found)
    return ()


def _family_total(strengths: Iterable[IngredientAmount], family: str) -> float | None:
    amounts = [s.amount for s in strengths if _family(s.ingredient) == family]
    return sum(amounts) if amounts else None


def _family(ingredient: Ingredient) -> str | None:
    if ingredient.is_vitamin_d:
        return "d"
    if ingredient.is_vitamin_k:
        return "k"
    if ingredient is Ingredient.CALCIUM:
        return "ca"
    return None


def _per_dose(
    dose: dosing.Dose, ingredients: frozenset[Ingredient], strengths, texts
) -> dict[str, float]:
    """Amount of each family (d: IU, k: µg, ca: mg elemental) in one administration."""
    families = {_family(i) for i in ingredients} - {None}
    if dose.count is not None:
        out = {}
        for family in families:
            per_unit = _family_total(strengths, family)
            if per_unit is not None:
                out[family] = dose.count * per_unit
        return out
    if dose.iu is not None:
        return {"d": dose.iu} if "d" in families else {}
    if dose.ug is not None and len(families) == 1:
        (family,) = families
        if family == "d":
            return {"d": dose.ug * load("medications")["vitamin_d_iu_per_ug"]["value"]}
        if family == "k":
            return {"k": dose.ug}
        fraction = dosing.calcium_fraction(
            " ".join(t for t in texts if re.search("calcium", t, re.I))
        )
        return {"ca": dose.ug / 1000.0 * fraction} if fraction is not None else {}
    return {}


def _period(
    resource: dict, course: float | None, authored: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """(started, ended) of one use: what the resource states, never guessed beyond the course.

    Statements: effectivePeriod, else effectiveDateTime as the start. Orders: the first
    dosage's boundsPeriod, else authoredOn (DSTU2 dateWritten) as the start; an end not
    stated is start + course length when the course is known. `authored`: authoredOn (or
    dateWritten), read once by the caller.
    """
    if resource.get("resourceType") == "MedicationStatement":
        period = resource.get("effectivePeriod")
        if isinstance(period, dict):
            return parse_instant(period.get("start")), parse_instant(period.get("end"))
        return parse_instant(resource.get("effectiveDateTime")), None
    started = ended = None
    dosages = resource.get("dosageInstruction")
    first = dosages[0] if isinstance(dosages, list) and dosages else dosages
    timing = first.get("timing") if isinstance(first, dict) else None
    repeat = timing.get("repeat") if isinstance(timing, dict) else None
    bounds = repeat.get("boundsPeriod") if isinstance(repeat, dict) else None
    if isinstance(bounds, dict):
        started, ended = parse_instant(bounds.get("start")), parse_instant(bounds.get("end"))
    started = started or authored
    if ended is None and started is not None and course:
        try:
            ended = started + timedelta(days=course)
        except (OverflowError, ValueError):  # a course beyond the calendar: end unknown
            ended = None
    return started, ended


def read_medication(
    resource: Any,
    source: MedicationSource,
    *,
    medications: Mapping[str, dict] | None = None,
) -> Medication | None:
    """Facts for one medication use; None if it is not one, or names nothing we reason about."""
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if not isinstance(resource_type, str) or resource_type not in USE_TYPES:
        return None
    codings, texts, stated = _product(resource, medications or {})
    found = recognise(codings, texts)
    if not found:
        return None
    ingredients = frozenset(i for i in found if isinstance(i, Ingredient))
    classes = frozenset(c for c in found if isinstance(c, DrugClass))
    strengths = tuple(stated) or strengths_from_names(texts)

    per_dose: dict[str, float] = {}
    daily: dict[str, list[tuple[Any, float]]] = {}
    course = None
    timings = []
    dosages = resource.get("dosageInstruction")
    if isinstance(dosages, dict):
        dosages = [dosages]
    if resource.get("resourceType") == "MedicationStatement" and isinstance(
        resource.get("dosage"), list
    ):
        dosages = resource["dosage"]
    for dosage in dosages if isinstance(dosages, list) else ():
        if not isinstance(dosage, dict):
            continue
        dose = dosing.read_dose(dosage)
        ceiling = dosing.max_per_period(dosage) if dosing.as_needed(dosage) else None
        if dose is None and ceiling is None:
            continue
        amounts = _per_dose(dose, ingredients, strengths, texts) if dose is not None else {}
        per_day = dosing.administrations_per_day(dosage)
        course = course or dosing.course_days(dosage)
        timings.append(dosing.plain_timing(dosage))
        # by value: a VKA strength is kept under its drug class ("vka")
        vka_mg = [s.amount for s in strengths if s.ingredient == "vka" and s.unit == "mg"]
        if dose is not None and dose.count is not None and vka_mg:
            amounts["vka"] = dose.count * sum(vka_mg)
        for family, amount in amounts.items():
            per_dose[family] = max(per_dose.get(family, 0.0), amount)
        if ceiling is not None:  # as needed: counted at its most (contract §5)
            amounts = _per_dose(ceiling[0], ingredients, strengths, texts)
            per_day = ceiling[1]
        if per_day is not None and not dosing.single_administration(dosage):
            for family, amount in amounts.items():
                daily.setdefault(family, []).append((dosage.get("sequence"), amount * per_day))

    authored = parse_instant(resource.get("authoredOn") or resource.get("dateWritten"))
    started, ended = _period(resource, course, authored)
    first = dosages[0] if isinstance(dosages, list) and dosages else None
    dosage_text = first.get("text") if isinstance(first, dict) else None
    name = next((t for t in texts if t.strip()), "unnamed product")
    rid = resource.get("id")
    return Medication(
        id=rid if isinstance(rid, str) else None,
        resource_type=resource["resourceType"],
        source=source,
        status=resource.get("status") if isinstance(resource.get("status"), str) else None,
        name=name,
        codes=tuple((s, c) for s, c in codings if isinstance(s, str) and isinstance(c, str)),
        ingredients=ingredients,
        classes=classes,
        strengths=strengths,
        vitamin_d_iu_per_dose=per_dose.get("d"),
        vitamin_d_iu_per_day=dosing.combine_daily(daily.get("d", [])),
        calcium_mg_per_dose=per_dose.get("ca"),
        calcium_mg_per_day=dosing.combine_daily(daily.get("ca", [])),
        vitamin_k_ug_per_dose=per_dose.get("k"),
        vitamin_k_ug_per_day=dosing.combine_daily(daily.get("k", [])),
        vka_mg_per_day=dosing.combine_daily(daily.get("vka", [])),
        course_days=course,
        dosage_text=dosage_text if isinstance(dosage_text, str) and dosage_text.strip() else None,
        authored=authored,
        timing=timings[0] if len(timings) == 1 else None,
        started=started,
        ended=ended,
    )
