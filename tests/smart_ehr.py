"""A loopback EHR for SMART launch tests: a stub FHIR server that announces a stub
authorization server in `.well-known/smart-configuration` (both are `FhirStub`s).

The authorization server approves (or, with `consent=False`, denies) at once and redirects to
the caller's `redirect_uri`; its token endpoint checks the code, redirect_uri, client_id and the
PKCE verifier (S256) before issuing a token with the launch's patient. Every authorize and token
request is in `auth.requests`; every FHIR query in `fhir.requests`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import urlencode

from .fhir_stub import FhirStub, Recorded, Reply, searchset

CLIENT_ID = "vitd-history-test"
LAUNCH_ID = "launch-123"


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class StubEhr:
    def __init__(self, bundle: dict, *, consent: bool = True) -> None:
        self.consent = consent
        self.resources = [e["resource"] for e in bundle.get("entry", [])]
        self.patient_id = next(r["id"] for r in self.resources if r["resourceType"] == "Patient")
        self.fhir = FhirStub()
        self.auth = FhirStub()
        self.codes: dict[str, dict[str, str]] = {}
        self.tokens: list[str] = []
        self.problems: list[str] = []  # what the stub found wrong in the app's requests

    def __enter__(self) -> StubEhr:
        self.fhir.start()
        self.auth.start()
        self.fhir.add(
            ".well-known/smart-configuration",
            {
                "authorization_endpoint": f"{self.auth.base_url}/authorize",
                "token_endpoint": f"{self.auth.base_url}/token",
                "capabilities": ["launch-ehr", "client-public", "context-ehr-patient"],
                "code_challenge_methods_supported": ["S256"],
            },
        )
        for resource_type in ("Observation", "MedicationRequest", "MedicationStatement"):
            self.fhir.add(
                resource_type,
                searchset([r for r in self.resources if r["resourceType"] == resource_type]),
            )
        self.auth.add("authorize", self._authorize)
        self.auth.add("token", self._token)
        return self

    def __exit__(self, *exc: object) -> None:
        self.fhir.close()
        self.auth.close()

    @property
    def iss(self) -> str:
        return self.fhir.base_url

    def _authorize(self, request: Recorded) -> Reply:
        args = request.args
        expected = {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "aud": self.iss,
            "launch": LAUNCH_ID,
            "code_challenge_method": "S256",
        }
        for name, value in expected.items():
            if args.get(name) != value:
                self.problems.append(f"authorize: {name}={args.get(name)!r}")
        if not args.get("state") or not args.get("code_challenge"):
            self.problems.append("authorize: no state or code_challenge")
        if not self.consent:
            query = {"error": "access_denied", "state": args.get("state", "")}
        else:
            code = secrets.token_urlsafe(16)
            self.codes[code] = {
                "challenge": args.get("code_challenge", ""),
                "redirect_uri": args.get("redirect_uri", ""),
            }
            query = {"code": code, "state": args.get("state", "")}
        return Reply(status=302, headers={"Location": f"{args['redirect_uri']}?{urlencode(query)}"})

    def _token(self, request: Recorded) -> Reply:
        form = request.form
        grant = self.codes.pop(form.get("code", ""), None)  # a code is used once
        if (
            request.method != "POST"
            or grant is None
            or form.get("grant_type") != "authorization_code"
            or form.get("client_id") != CLIENT_ID
            or form.get("redirect_uri") != grant["redirect_uri"]
            or _s256(form.get("code_verifier", "")) != grant["challenge"]
        ):
            self.problems.append("token: request refused")
            return Reply(status=400, body={"error": "invalid_grant"})
        token = "tok-" + secrets.token_urlsafe(24)
        self.tokens.append(token)
        return Reply(
            body={
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": "launch patient/Observation.read",
                "patient": self.patient_id,
            },
            headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
        )
