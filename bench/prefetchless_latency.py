"""Latency of `gather` when the EHR sends no prefetch: every key comes from the FHIR server.

Starts the loopback stub FHIR server with a fixed delay on every query, gathers five prefetch
keys shaped like the services' (patient, observations, medication requests and statements with
`_include`, conditions) with no prefetch N times, and prints median and max wall time and
their ratio to one query's delay. Parallel fetching should keep the ratio near 1 (sequential
fetching would be about 5).

    .venv/bin/python bench/prefetchless_latency.py [-n 30] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fhir_stub

from cds_service.fhir_client import FhirClient  # noqa: E402
from cds_service.gather import GatherSettings, PrefetchKey, gather  # noqa: E402
from tests.fhir_stub import FhirStub, searchset  # noqa: E402

PATIENT_ID = "bench-1"
SEARCHED = ("Observation", "MedicationRequest", "MedicationStatement", "Condition")
# 25(OH)D and serum calcium LOINC codes as listed in ../shared/reference/clinical.md
CODES = ",".join(
    f"http://loinc.org|{code}"
    for code in ("62292-8", "1989-3", "49054-0", "14635-7", "35365-6", "17861-6", "2000-8")
)
PID = "{{context.patientId}}"
KEYS = (
    PrefetchKey("patient", f"Patient/{PID}"),
    PrefetchKey("observations", f"Observation?patient={PID}&code={CODES}"),
    PrefetchKey(
        "medicationRequests",
        f"MedicationRequest?patient={PID}&status=active",
        include="_include=MedicationRequest:medication",
    ),
    PrefetchKey(
        "medicationStatements",
        f"MedicationStatement?patient={PID}&status=active",
        include="_include=MedicationStatement:medication",
    ),
    PrefetchKey("conditions", f"Condition?patient={PID}"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="gathers to time (default 30)")
    parser.add_argument("--delay", type=float, default=0.2, help="stub delay per query, s")
    args = parser.parse_args()

    keys = KEYS
    settings = GatherSettings()
    request = {
        "hook": "patient-view",
        "hookInstance": "00000000-0000-4000-8000-000000000000",
        "context": {"userId": "Practitioner/bench", "patientId": PATIENT_ID},
        "fhirAuthorization": {"access_token": "bench-token", "token_type": "Bearer"},
    }
    walls: list[float] = []
    with FhirStub(delay_s=args.delay) as stub, FhirClient(settings.max_workers) as client:
        stub.add(f"Patient/{PATIENT_ID}", {"resourceType": "Patient", "id": PATIENT_ID})
        for resource_type in SEARCHED:
            stub.add(resource_type, searchset([{"resourceType": resource_type, "id": "r1"}]))
        request["fhirServer"] = stub.base_url
        for _ in range(args.n):
            started = time.perf_counter()
            gathered = gather(request, keys, settings, client)
            walls.append(time.perf_counter() - started)
            assert len(gathered.fetched) == len(keys)

    median, worst = statistics.median(walls), max(walls)
    print(f"keys fetched per gather: {len(keys)}; stub delay per query: {args.delay * 1000:.0f} ms")
    print(f"runs: {args.n}")
    print(f"median: {median * 1000:.1f} ms  ({median / args.delay:.2f} x delay)")
    print(f"max:    {worst * 1000:.1f} ms  ({worst / args.delay:.2f} x delay)")
    print(f"sequential would be about {len(keys) * args.delay * 1000:.0f} ms")


if __name__ == "__main__":
    main()
