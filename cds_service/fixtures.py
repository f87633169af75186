"""Synthetic patients in `fixtures/patients/`, for tests, the CLI and the preview page.

A fixture is a FHIR R4 `collection` Bundle of one patient's record. Its `timestamp` is the
anchor: every date in it is written relative to that day, and `load()` shifts them all by
(today − anchor) so results never go stale and ages stay the same. MedicationRequests with
status `draft` (and DSTU2 MedicationOrders with status `draft`) are the draft orders of
order-select / order-sign; everything else is the record on file. `fixtures/expected.json`
says which topics each service must return for each patient.

`Fixture.request(service_id, mode)` builds the CDS Hooks request three ways: `prefetch` (all keys
filled), `fhir` (no prefetch: every key fetched from `fhirServer`) and `outcome` (every key an
OperationOutcome, so fetched too). `Fixture.search(key)` answers the FHIR searches of our
prefetch templates from the record.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

# The top-level fixtures/ directory; `fixture_data` is a link to it, so a wheel (and the image
# built from it) carries the library as package data, as `card_templates` carries cards/.
FIXTURES_DIR = (Path(__file__).resolve().parent / "fixture_data").resolve()
PATIENTS_DIR = FIXTURES_DIR / "patients"
EXPECTED_FILE = FIXTURES_DIR / "expected.json"
MODES = ("prefetch", "fhir", "outcome")
HOOKS = {
    "vitamin-d-patient-view": "patient-view",
    "vitamin-d-order-select": "order-select",
    "vitamin-d-order-sign": "order-sign",
}

_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?$")
# Keys whose values are dates or dateTimes in the resources our fixtures use.
_DATE_KEYS = frozenset(
    {
        "birthDate",
        "deceasedDateTime",
        "effectiveDateTime",
        "issued",
        "start",
        "end",
        "authoredOn",
        "onsetDateTime",
        "abatementDateTime",
        "recordedDate",
        "dateAsserted",
        "occurrenceDateTime",
    }
)
_KEYS_BY_TYPE = {
    "Patient": "patient",
    "Observation": "observations",
    "MedicationRequest": "medicationRequests",
    "MedicationStatement": "medicationStatements",
    "Condition": "conditions",
}


class FixtureError(ValueError):
    """No such fixture, or a fixture file that is not a usable Bundle."""


def _shift(value: Any, days: int) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in _DATE_KEYS and isinstance(item, str) and (m := _DATE.match(item)):
                shifted = date.fromisoformat(m.group(1)) + timedelta(days=days)
                out[key] = shifted.isoformat() + (m.group(2) or "")
            else:
                out[key] = _shift(item, days)
        return out
    if isinstance(value, list):
        return [_shift(item, days) for item in value]
    return value


def names() -> list[str]:
    return sorted(p.stem for p in PATIENTS_DIR.glob("*.json"))


def expectations() -> dict[str, Any]:
    return json.loads(EXPECTED_FILE.read_text(encoding="utf-8"))


def searchset(resources: list[dict]) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
    }
    if resources:
        bundle["entry"] = [
            {
                "fullUrl": f"{r['resourceType']}/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in resources
        ]
    return bundle


def _outcome() -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "diagnostics": "prefetch timed out"}],
    }


@dataclass(frozen=True)
class Fixture:
    name: str
    bundle: dict[str, Any]  # dates already shifted

    @property
    def resources(self) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.bundle.get("entry", [])]

    @property
    def patient(self) -> dict[str, Any]:
        return next(r for r in self.resources if r["resourceType"] == "Patient")

    @property
    def patient_id(self) -> str:
        return self.patient["id"]

    def _of(self, resource_type: str) -> Iterator[dict[str, Any]]:
        return (r for r in self.resources if r["resourceType"] == resource_type)

    @property
    def drafts(self) -> list[dict[str, Any]]:
        """Draft orders: R4 MedicationRequests, DSTU2 MedicationOrders and ServiceRequests (a
        drafted test) with status draft."""
        return [
            r
            for kind in ("MedicationRequest", "MedicationOrder", "ServiceRequest")
            for r in self._of(kind)
            if r.get("status") == "draft"
        ]

    def search(self, key: str) -> dict[str, Any]:
        """The resource or searchset Bundle a FHIR server would answer for prefetch `key`."""
        if key == "patient":
            return copy.deepcopy(self.patient)
        wanted = next(t for t, k in _KEYS_BY_TYPE.items() if k == key)
        found = [
            r
            for r in self._of(wanted)
            if not (wanted == "MedicationRequest" and r.get("status") == "draft")
        ]
        if key in ("medicationRequests", "medicationStatements"):
            found += list(self._of("Medication"))  # as `_include`d, referenced or not
        return searchset(copy.deepcopy(found))

    def prefetch(self) -> dict[str, Any]:
        return {key: self.search(key) for key in _KEYS_BY_TYPE.values()}

    def request(
        self,
        service_id: str,
        mode: str = "prefetch",
        *,
        fhir_server: str | None = None,
        drafts: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A CDS Hooks request for this patient; `drafts` replaces the fixture's own drafts."""
        if mode not in MODES:
            raise FixtureError(f"mode must be one of {', '.join(MODES)}")
        hook = HOOKS[service_id]
        context: dict[str, Any] = {"userId": "Practitioner/example", "patientId": self.patient_id}
        orders = copy.deepcopy(self.drafts if drafts is None else drafts)
        if drafts is not None:  # orders from elsewhere are drafted for this patient
            for order in orders:
                if isinstance(order.get("subject"), dict):
                    order["subject"] = {"reference": f"Patient/{self.patient_id}"}
        if hook != "patient-view":
            context["draftOrders"] = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": d} for d in orders],
            }
        if hook == "order-select":
            context["selections"] = [f"{d['resourceType']}/{d['id']}" for d in orders] or [
                "MedicationRequest/none"
            ]
        body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
        if mode == "prefetch":
            body["prefetch"] = self.prefetch()
        elif mode == "outcome":
            body["prefetch"] = {key: _outcome() for key in _KEYS_BY_TYPE.values()}
        if fhir_server:
            body["fhirServer"] = fhir_server
        elif mode != "prefetch":
            raise FixtureError(f"mode {mode!r} needs a fhir_server")
        return body


def load(name: str, now: datetime | None = None) -> Fixture:
    """Fixture `name` with its dates moved so that its anchor falls on `now` (default: today)."""
    path = PATIENTS_DIR / f"{name}.json"
    if not re.fullmatch(r"[a-z0-9-]+", name) or not path.is_file():
        raise FixtureError(f"no fixture named {name!r}; see `cds-service fixtures list`")
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        anchor = datetime.fromisoformat(bundle["timestamp"]).date()
    except (ValueError, KeyError, TypeError) as exc:
        raise FixtureError(f"fixtures/patients/{name}.json: {exc}") from None
    today = (now or datetime.now(UTC)).date()
    return Fixture(name=name, bundle=_shift(bundle, (today - anchor).days))


def draft_library() -> dict[str, dict[str, Any]]:
    """Every draft order of the library by "<fixture>/<id>", to try on any patient."""
    return {
        f"{name}/{order['id']}": order for name in names() for order in load(name).drafts
    }


# --- The library's README: generated from the fixture files and expected.json, never by hand ---

README_FILE = FIXTURES_DIR / "README.md"
SERVICE_IDS = tuple(HOOKS)


def _raw(name: str) -> dict[str, Any]:
    """Fixture `name` as written (dates relative to its anchor, not shifted)."""
    return json.loads((PATIENTS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def _days(value: str | None, anchor: date) -> str:
    if not value or not (m := _DATE.match(value)):
        return "no date"
    delta = (date.fromisoformat(m.group(1)) - anchor).days
    return "today" if delta == 0 else f"{-delta} d ago" if delta < 0 else f"in {delta} d"


_SYSTEMS = {
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://www.whocc.no/atc": "ATC",
    "http://loinc.org": "LOINC",
    "http://snomed.info/sct": "SNOMED CT",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
}


def _code_text(concept: Any) -> str:
    """'Name (RxNorm 123)', 'Name (text only)' or '(ATC B01AA04)' when there is no name."""
    if not isinstance(concept, dict):
        return "?"
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    name = concept.get("text") or next((c["display"] for c in codings if c.get("display")), "")
    codes = ", ".join(
        f"{_SYSTEMS.get(c.get('system', ''), c.get('system', '?'))} {c['code']}"
        for c in codings
        if c.get("code")
    )
    if not codes:
        return f"{name} (text only)"
    return f"{name} ({codes})" if name else f"({codes})"


def medication_text(resource: dict[str, Any]) -> str:
    """The product of a medication use: its concept, or its contained Medication's code and
    ingredients."""
    ref = (resource.get("medicationReference") or {}).get("reference", "")
    contained = {c.get("id"): c for c in resource.get("contained", []) if isinstance(c, dict)}
    if ref.startswith("#") and ref[1:] in contained:
        medication = contained[ref[1:]]
        parts = [
            _code_text(i.get("itemCodeableConcept"))
            for i in medication.get("ingredient", [])
            if isinstance(i, dict) and "itemCodeableConcept" in i
        ]
        text = _code_text(medication.get("code")) if medication.get("code") else "Medication"
        if parts:
            text += " with " + "; ".join(parts)
        return text + " [contained Medication]"
    return _code_text(resource.get("medicationCodeableConcept"))


def _age(birth: date, on: date) -> str:
    """'68 y'; under two years in months ('7 mo'), under two months in days ('20 d')."""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    if years >= 2:
        return f"{years} y"
    days = (on - birth).days
    return f"{int(days / 30.4375)} mo" if days >= 61 else f"{days} d"


def describe(name: str) -> list[str]:
    """One line per resource of the record, for people: what the fixture holds."""
    bundle = _raw(name)
    anchor = datetime.fromisoformat(bundle["timestamp"]).date()
    lines: list[str] = []
    for entry in bundle.get("entry", []):
        r = entry["resource"]
        kind = r["resourceType"]
        if kind == "Patient":
            birth = r.get("birthDate")
            age = _age(date.fromisoformat(birth), anchor) if birth else "no birthDate"
            dead = ", deceased" if r.get("deceasedDateTime") or r.get("deceasedBoolean") else ""
            lines.append(f"{r.get('gender', 'unknown')}, {age}{dead}")
        elif kind == "Observation":
            q = r.get("valueQuantity") or {}
            value = f"{q.get('comparator', '')}{q.get('value')} {q.get('unit', '')}".strip()
            codes = ", ".join(c.get("code", "") for c in r.get("code", {}).get("coding", []))
            lines.append(
                f"Observation LOINC {codes}: {value}, {r.get('status')}, "
                f"{_days(r.get('effectiveDateTime'), anchor)}"
            )
        elif kind in ("MedicationRequest", "MedicationStatement", "MedicationOrder"):
            lines.append(f"{kind} {r.get('status')}: {medication_text(r)}")
        elif kind == "Condition":
            lines.append(f"Condition: {_code_text(r.get('code'))}")
        else:
            lines.append(kind)
    return lines


def _cell(topics: list[str] | None) -> str:
    if topics is None:
        return "?"
    return ", ".join(f"`{t}`" for t in topics) if topics else "—"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def readme() -> str:
    """fixtures/README.md, generated (`cds-service fixtures readme --write`)."""
    expected = expectations()
    out = [
        "# Synthetic patients",
        "",
        "<!-- Generated by `cds-service fixtures readme --write` from the fixture files and",
        "     expected.json; edit those, not this file (a test checks they agree). -->",
        "",
        "Each `patients/<name>.json` is a FHIR R4 `collection` Bundle of one synthetic patient.",
        "Dates are written relative to `Bundle.timestamp` and moved to today when loaded",
        "(`cds_service/fixtures.py`), so results never go stale. MedicationRequests with status",
        "`draft` are the draft orders of order-select / order-sign. `expected.json` lists the",
        "topics each service must return per guideline profile; `cds-service check` and the test",
        "suite hold the service to it.",
        "",
        "```sh",
        ".venv/bin/cds-service fixtures list",
        ".venv/bin/cds-service invoke vitamin-d-order-sign --patient warfarin-d3k2-draft",
        ".venv/bin/cds-service check",
        "```",
        "",
        f"{len(names())} patients. Cards expected under the default profile (patient-view / "
        "order-select / order-sign); the `es2024` column lists the profile's cards where "
        "`expected.json` gives them (— none, blank: not stated).",
        "",
        "| patient | record | what it exercises | patient-view | order-select | order-sign "
        "| es2024 (view / select / sign) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names():
        entry = expected.get(name, {})
        default = entry.get("default", {})
        es = entry.get("es2024")
        es_cell = " / ".join(_cell(es.get(s)) for s in SERVICE_IDS) if es else ""
        out.append(
            f"| `{name}` | {_md('; '.join(describe(name)))} | {_md(entry.get('about', '?'))} | "
            + " | ".join(_cell(default.get(s)) for s in SERVICE_IDS)
            + f" | {es_cell} |"
        )
    return "\n".join(out) + "\n"
