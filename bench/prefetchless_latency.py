"""Wall time of a whole service call when the EHR sends no prefetch.

Every prefetch key then comes from the FHIR server. This starts the loopback stub FHIR server
with a fixed delay on every query, posts a patient-view request with no prefetch to the app N
times (in-process, through the full HTTP stack: schema check, gather with the registry's own
templates, facts), and prints the median and max wall time and their ratio to one query's
delay. Parallel fetching keeps the ratio near 1; sequential fetching would be about 5.

    .venv/bin/python bench/prefetchless_latency.py [-n 30] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*

from cds_service import Settings, create_app  # noqa: E402
from cds_service.registry import prefetch_keys  # noqa: E402
from tests.fhir_stub import FhirStub, searchset  # noqa: E402

PATIENT_ID = "bench-1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30, help="calls to time (default 30)")
    parser.add_argument("--delay", type=float, default=0.2, help="stub delay per query, s")
    args = parser.parse_args()

    request = {
        "hook": "patient-view",
        "hookInstance": "00000000-0000-4000-8000-000000000000",
        "context": {"userId": "Practitioner/bench", "patientId": PATIENT_ID},
    }
    walls: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, FhirStub(delay_s=args.delay) as stub:
        settings = Settings(database_url=f"sqlite:///{tmp}/bench.sqlite3", auth_disabled=True)
        app = create_app(settings)
        client = app.test_client()
        stub.add(f"Patient/{PATIENT_ID}", {"resourceType": "Patient", "id": PATIENT_ID})
        for resource_type in (
            "Observation",
            "MedicationRequest",
            "MedicationStatement",
            "Condition",
        ):
            stub.add(resource_type, searchset([]))
        request["fhirServer"] = stub.base_url
        body = json.dumps(request)
        for _ in range(args.n + 1):  # the first call warms up (imports, schema compile)
            started = time.perf_counter()
            reply = client.post(
                "/cds-services/vitamin-d-patient-view", data=body, content_type="application/json"
            )
            walls.append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.get_json()
        walls = walls[1:]
        queries = len(stub.requests) // (args.n + 1)
        app.extensions["vitd.runtime"].fhir.close()
        app.extensions["vitd.runtime"].store.dispose()

    median, worst = statistics.median(walls), max(walls)
    print(f"FHIR queries per call: {queries} (prefetch keys: {len(prefetch_keys())})")
    print(f"stub delay per query: {args.delay * 1000:.0f} ms")
    print(f"calls timed: {args.n}")
    print(f"median: {median * 1000:.1f} ms  ({median / args.delay:.2f} x one query)")
    print(f"max:    {worst * 1000:.1f} ms  ({worst / args.delay:.2f} x one query)")
    print(f"sequential would be about {queries * args.delay * 1000:.0f} ms")


if __name__ == "__main__":
    main()
