"""From gathered FHIR JSON to `Facts`: the one place where raw resources become typed values.

FHIR search results and prefetch are untrusted supersets (contract §2): every resource is
checked here for the patient it names and for its status before an extractor reads it.
Anything that cannot be read is skipped and counted, never fatal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from ..gather import Gathered
from ..knowledge import load
from .conditions import read_conditions
from .fhirdates import parse_instant
from .labs import (
    lab_observations,
    read_bmi_levels,
    read_calcium_levels,
    read_inr_levels,
    read_vitamin_d_levels,
)
from .medications import read_medication
from .model import DrugClass, Facts, LabDraft, Medication, MedicationSource
from .patient import read_patient

__all__ = ["Facts", "build_facts"]

# Orders on file that count as current (contract §2: "active MedicationRequests/Statements").
ACTIVE_STATUSES = frozenset({"active"})
# Uses on file that happened before (the history picture shows them; no rule reads them).
PAST_STATUSES = frozenset({"completed", "stopped", "on-hold"})
# MedicationStatements that count as current (contract §5), unless their period has ended.
STATEMENT_STATUSES = frozenset({"active", "intended"})
# MedicationRequest intents that are orders (contract §5: not plan or proposal).
ORDER_INTENTS = frozenset(
    {"order", "original-order", "reflex-order", "filler-order", "instance-order"}
)
# Draft orders: order-sign may carry re-signed, non-draft orders; only these are not orders.
DEAD_DRAFT_STATUSES = frozenset(
    {"entered-in-error", "cancelled", "completed", "stopped", "revoked"}
)
LOINC = "http://loinc.org"
MEDICATION_USE_TYPES = frozenset({"MedicationRequest", "MedicationOrder", "MedicationStatement"})


def _patient_pattern(patient_id: str) -> re.Pattern[str]:
    pid = re.escape(patient_id)
    return re.compile(rf"(?:^|/)Patient/{pid}(?:/_history/[^/]+)?$|^urn:uuid:{pid}$")


def _subject_reference(resource: Mapping[str, Any]) -> str | None:
    for field in ("subject", "patient"):  # DSTU2 MedicationOrder names the patient `patient`
        ref = resource.get(field)
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            return ref["reference"]
    return None


class _Reader:
    """Per-call filtering state: which patient, and how many resources were skipped."""

    def __init__(self, patient_id: str) -> None:
        self.patient_id = patient_id
        self._pattern = _patient_pattern(patient_id)
        self._usual = f"Patient/{patient_id}"  # what nearly every resource says
        self.skipped = 0
        self.standings: dict[int, str] = {}  # id(Medication) -> "current" | "past"

    def belongs(self, resource: Mapping[str, Any], *, required: bool = True) -> bool:
        subject = resource.get("subject")  # nearly every resource: "Patient/<id>" as is
        if isinstance(subject, Mapping) and subject.get("reference") == self._usual:
            return True
        ref = _subject_reference(resource)
        if ref is None:
            return not required
        return ref == self._usual or bool(self._pattern.search(ref))

    def of_type(
        self, resources: Iterable[Any], types: frozenset[str], *, subject_required: bool = True
    ) -> Iterator[dict]:
        for resource in resources:
            if not isinstance(resource, dict):
                continue
            resource_type = resource.get("resourceType")
            if not isinstance(resource_type, str) or resource_type not in types:
                continue
            if self.belongs(resource, required=subject_required):
                yield resource
            else:
                self.skipped += 1

    def medications(
        self,
        resources: list[Any],
        source: MedicationSource,
        referenced: Mapping[str, dict],
        keep: Any,
        *,
        subject_required: bool = True,
        standing: Any = None,
    ) -> list[Medication]:
        """The uses `keep(status)` keeps; with `standing(resource, med)`, those it gives a
        standing, in `self.standings` by identity."""
        out = []
        for resource in self.of_type(
            resources, MEDICATION_USE_TYPES, subject_required=subject_required
        ):
            status = resource.get("status")
            if not keep(status if isinstance(status, str) else None):  # odd shapes: no status
                continue
            med = read_medication(resource, source, medications=referenced)
            if med is not None and standing is not None:
                kind = standing(resource, med)
                if kind is None:
                    continue
                self.standings[id(med)] = kind
            if med is not None:
                out.append(med)
        return out


def _standing(now: datetime):
    """Which uses on file count (contract §5): a MedicationRequest (or DSTU2 MedicationOrder)
    `active` with an ordering `intent` (a plan or proposal is no order); a VKA `on-hold` with
    one, too (it will resume); a MedicationStatement `active` or `intended` whose
    `effectivePeriod.end` is not past. `standing(resource, med)` is "current", "past"
    (history only: completed, stopped, on hold, a statement whose period has ended) or None
    (not counted at all); the status stays as sent."""

    def standing(resource: dict, med: Medication) -> str | None:
        status = med.status
        if resource.get("resourceType") == "MedicationStatement":
            if status in STATEMENT_STATUSES:
                return "past" if _ended(resource, now) else "current"
            return "past" if status in PAST_STATUSES else None
        intent = resource.get("intent")
        if isinstance(intent, str) and intent not in ORDER_INTENTS:  # DSTU2/STU3: none
            return None
        if status == "active" or (status == "on-hold" and med.has(DrugClass.VKA)):
            return "current"
        return "past" if status in PAST_STATUSES else None

    return standing


def _ended(statement: dict, now: datetime) -> bool:
    """`effectivePeriod.end` before `now`; a date-only end lasts to the end of that day."""
    period = statement.get("effectivePeriod")
    raw = period.get("end") if isinstance(period, dict) else None
    end = parse_instant(raw)
    if end is None:
        return False
    if isinstance(raw, str) and len(raw.strip()) <= 10:
        end += timedelta(days=1)
    return end <= now


def _medication_index(resources: Iterable[Any], full_urls: Iterable[str | None] = ()) -> dict:
    """References -> Medication resources (from `_include`, or beside the orders in a Bundle)."""
    index: dict[str, dict] = {}
    urls = list(full_urls)
    for n, resource in enumerate(resources):
        if isinstance(resource, dict) and resource.get("resourceType") == "Medication":
            if isinstance(resource.get("id"), str):
                index[f"Medication/{resource['id']}"] = resource
            if n < len(urls) and urls[n]:
                index[urls[n]] = resource
    return index


def _draft_entries(context: Mapping[str, Any]) -> tuple[list[Any], list[str | None]]:
    bundle = context.get("draftOrders")
    entries = bundle.get("entry") if isinstance(bundle, Mapping) else None
    resources: list[Any] = []
    urls: list[str | None] = []
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, Mapping):
            resources.append(entry.get("resource"))
            url = entry.get("fullUrl")
            urls.append(url if isinstance(url, str) else None)
    return resources, urls


def _lab_drafts(reader: _Reader, resources: list[Any]) -> list[LabDraft]:
    """Drafted 25(OH)D tests: ServiceRequests coded with an accepted 25(OH)D LOINC code."""
    codes = {c["code"] for c in load("labs")["vitamin_d_25oh"]["accepted"]}
    out = []
    requests = reader.of_type(resources, frozenset({"ServiceRequest"}), subject_required=False)
    for resource in requests:
        status = resource.get("status")
        if isinstance(status, str) and status in DEAD_DRAFT_STATUSES:
            continue
        code = resource.get("code")
        codings = code.get("coding") if isinstance(code, dict) else None
        loinc = next(
            (
                c["code"]
                for c in (codings if isinstance(codings, list) else ())
                if isinstance(c, dict) and c.get("system") == LOINC and c.get("code") in codes
            ),
            None,
        )
        if loinc is None:
            continue
        period = resource.get("occurrencePeriod")
        when = parse_instant(resource.get("occurrenceDateTime")) or (
            parse_instant(period.get("start")) if isinstance(period, dict) else None
        )
        text = code.get("text") if isinstance(code.get("text"), str) else None
        rid = resource.get("id")
        out.append(
            LabDraft(
                id=rid if isinstance(rid, str) else None,
                resource_type="ServiceRequest",
                loinc=loinc,
                name=text or "25-hydroxyvitamin D test",
                when=when or parse_instant(resource.get("authoredOn")),
            )
        )
    return out


def build_facts(
    request: Mapping[str, Any],
    gathered: Gathered,
    *,
    service_id: str,
    now: datetime,
    tenant: str | None = None,
) -> Facts:
    """Typed facts for one call. `request` is schema-valid; `gathered` is untrusted content."""
    context = request["context"]
    reader = _Reader(context["patientId"])
    res = gathered.resources

    patients = [
        p
        for p in res.get("patient", [])
        if isinstance(p, dict) and p.get("resourceType") == "Patient"
    ]
    patient_resource = next((p for p in patients if p.get("id") == reader.patient_id), None)
    reader.skipped += len(patients) - (patient_resource is not None)

    observations = lab_observations(
        reader.of_type(res.get("observations", []), frozenset({"Observation"})), now
    )
    conditions = list(reader.of_type(res.get("conditions", []), frozenset({"Condition"})))

    used = ACTIVE_STATUSES | PAST_STATUSES | STATEMENT_STATUSES
    standing = _standing(now)
    draft_resources, draft_urls = _draft_entries(context)
    # A medicationReference is resolved from a contained resource (medications.py), then from
    # any Bundle held (every key's resources and the drafts), then from a `Medication/{id}`
    # read (gather); its `display` is the last resort.
    held = [resource for found in res.values() for resource in found]
    referenced = {
        **gathered.medications,
        **_medication_index(held),
        **_medication_index(draft_resources, draft_urls),
    }
    on_record = [
        *reader.medications(
            res.get("medicationRequests", []),
            MedicationSource.REQUEST,
            referenced,
            lambda status: status in used,
            standing=standing,
        ),
        *reader.medications(
            res.get("medicationStatements", []),
            MedicationSource.STATEMENT,
            referenced,
            lambda status: status in used,
            standing=standing,
        ),
    ]
    on_file = [m for m in on_record if reader.standings[id(m)] == "current"]
    past = [m for m in on_record if reader.standings[id(m)] == "past"]
    drafts = reader.medications(
        draft_resources,
        MedicationSource.DRAFT,
        referenced,
        lambda status: status not in DEAD_DRAFT_STATUSES,
        subject_required=False,  # drafts are this patient's by context; others' are dropped
    )

    return Facts(
        now=now,
        service_id=service_id,
        hook=request["hook"],
        patient=read_patient(patient_resource, now),
        vitamin_d_levels=read_vitamin_d_levels(observations),
        calcium_levels=read_calcium_levels(observations),
        inr_levels=read_inr_levels(observations),
        bmi_levels=read_bmi_levels(observations),
        medications=tuple(on_file),
        past_medications=tuple(past),
        drafts=tuple(drafts),
        lab_drafts=tuple(_lab_drafts(reader, draft_resources)),
        selections=tuple(context.get("selections") or ()),
        conditions=read_conditions(conditions),
        tenant=tenant,
        skipped=gathered.skipped + reader.skipped,
    )
