"""Two EHRs, one running service, two answers (client profiles, contract §7).

    .venv/bin/python dev/two_clients.py

Starts `cds-service serve` on a free loopback port with authentication on, two trusted
issuers (keys made now, in a temporary directory) and a clients file giving them different
profiles; sends each the same patient-view and order-select request, signed by its own issuer,
and prints what each got. Nothing is left behind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.builders import full_record, hook_request, medication_request  # noqa: E402
from tests.jwt_helpers import jwks, signer  # noqa: E402

EHRS = {
    "https://epic-like.example.org": signer("ES384", n=21),
    "https://oracle-like.example.com": signer("RS384", n=22),
}
CLIENTS = """
[[clients]]
name = "epic-like"
iss = "https://epic-like.example.org"
profile = "es2024"
dedupe_order_sign = true

[[clients]]
name = "oracle-like"
iss = "https://oracle-like.example.com"
hooks = ["patient-view"]
links = "none"
detail = "text"
silent_topics = ["osteoporosis-calcium-vitd"]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="vitd-two-clients-") as tmp:
        issuers = Path(tmp, "issuers.json")
        issuers.write_text(json.dumps([{"iss": i, "jwks": jwks(k)} for i, k in EHRS.items()]))
        clients = Path(tmp, "clients.toml")
        clients.write_text(CLIENTS)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp}/store.sqlite3",
            "CDS_TRUSTED_ISSUERS_FILE": str(issuers),
            "CDS_CLIENTS_FILE": str(clients),
            "CDS_PUBLIC_BASE_URL": base,
            "CDS_SMART_CLIENT_ID": "demo",
            "CDS_SMART_ALLOWED_ISSUERS": "https://fhir.example.org",
            "CDS_SECRET_KEY": "x" * 40,
        }
        cli = Path(sys.executable).parent / "cds-service"
        server = subprocess.Popen(
            [str(cli), "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if requests.get(f"{base}/healthz", timeout=5).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.2)
            draft = medication_request(
                "316672", "Cholecalciferol 50000 UNT Oral Capsule", mid="d1", status="draft",
                dose=50000,
            )
            for service, body in (
                ("vitamin-d-patient-view", hook_request(prefetch=full_record())),
                (
                    "vitamin-d-order-select",
                    hook_request("vitamin-d-order-select", prefetch=full_record(), drafts=[draft]),
                ),
            ):
                for iss, key in EHRS.items():
                    url = f"{base}/cds-services/{service}"
                    token = key.sign(iss=iss, aud=url)
                    reply = requests.post(
                        url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
                    )
                    cards = reply.json()["cards"]
                    print(f"\n{service} as {iss} -> HTTP {reply.status_code}, {len(cards)} card(s)")
                    for card in cards:
                        detail = card["detail"].splitlines()[0][:90]
                        es2024 = "yes" if "Endocrine Society 2024" in card["detail"] else "no"
                        print(
                            f"  {card['source']['topic']['code']:<26} links: "
                            f"{len(card.get('links', []))}  names ES 2024: {es2024}"
                            f"\n    detail: {detail}"
                        )
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
