"""The one registry of services: it drives discovery (`GET /cds-services`) and routing.

Service ids and hooks are fixed by the contract (§2). All three services read the same record,
so they share one set of prefetch templates; the codes in them come from `knowledge/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from .gather import PrefetchKey
from .guideline import load_guideline
from .knowledge import load

LOINC = "http://loinc.org"


def _observation_codes() -> list[str]:
    """25(OH)D, serum calcium and BMI LOINC codes the rules read (knowledge/labs.json)."""
    labs = load("labs")
    codes = [*labs["vitamin_d_25oh"]["accepted"], *labs["calcium"]["codes"], *labs["bmi"]["codes"]]
    return [c["code"] for c in codes]


@cache
def prefetch_keys() -> tuple[PrefetchKey, ...]:
    """Templates within the CDS Hooks 2.0 query subset; `include` is added to our own queries."""
    codes = ",".join(f"{LOINC}|{code}" for code in _observation_codes())
    patient = "{{context.patientId}}"
    return (
        PrefetchKey("patient", f"Patient/{patient}"),
        PrefetchKey("observations", f"Observation?patient={patient}&code={codes}"),
        PrefetchKey(
            "medicationRequests",
            f"MedicationRequest?patient={patient}&status=active",
            include="_include=MedicationRequest:medication",
        ),
        PrefetchKey(
            "medicationStatements",
            f"MedicationStatement?patient={patient}&status=active",
            include="_include=MedicationStatement:medication",
        ),
        PrefetchKey("conditions", f"Condition?patient={patient}"),
    )


@dataclass(frozen=True)
class ServiceSpec:
    id: str
    hook: str
    title: str
    description: str

    @property
    def prefetch(self) -> tuple[PrefetchKey, ...]:
        return prefetch_keys()

    def discovery_entry(self, profile: str) -> dict:
        guideline = load_guideline(profile)
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": (
                f"{self.description} Guideline profile: {guideline.profile} "
                f"({guideline.title}; version {guideline.version})."
            ),
            "prefetch": {key.key: key.template for key in self.prefetch},
        }


SERVICES: dict[str, ServiceSpec] = {
    spec.id: spec
    for spec in (
        ServiceSpec(
            id="vitamin-d-patient-view",
            hook="patient-view",
            title="Vitamin D status and safety",
            description=(
                "Reads 25(OH)D results, vitamin D, calcium and vitamin K products, vitamin K "
                "antagonists and related diagnoses; advises on vitamin D status and regimens, "
                "osteoporosis supplements, and vitamin K with a VKA."
            ),
        ),
        ServiceSpec(
            id="vitamin-d-order-select",
            hook="order-select",
            title="Vitamin D, calcium and vitamin K order check",
            description=(
                "Checks the selected draft orders of vitamin D, calcium, vitamin K and vitamin K "
                "antagonists against the patient's levels, diagnoses and current products."
            ),
        ),
        ServiceSpec(
            id="vitamin-d-order-sign",
            hook="order-sign",
            title="Vitamin D, calcium and vitamin K signing check",
            description=(
                "Checks every draft order of vitamin D, calcium, vitamin K and vitamin K "
                "antagonists at signing: doses, interactions and the patient's levels."
            ),
        ),
    )
}


@cache
def discovery_document(profile: str) -> dict:
    """The discovery response for the active guideline profile, built once per process."""
    return {"services": [spec.discovery_entry(profile) for spec in SERVICES.values()]}
