"""dev/cds-hooks-sandbox.issuers.json: the development-only trusted-issuer file for the public
CDS Hooks sandbox (its private key is public: never for production)."""

from __future__ import annotations

from pathlib import Path

from cds_service.auth import load_issuers

FILE = Path(__file__).resolve().parents[1] / "dev" / "cds-hooks-sandbox.issuers.json"
SANDBOX = "https://sandbox.cds-hooks.org"


def test_the_sandbox_issuer_file_loads_and_names_only_the_sandbox():
    issuers = load_issuers(str(FILE))
    assert set(issuers) == {SANDBOX}
    issuer = issuers[SANDBOX]
    # the JWK Set the sandbox names in its `jku` header (../shared/reference/cds-hooks.md §6)
    assert issuer.jwks_url == f"{SANDBOX}/.well-known/jwks.json"
    assert issuer.jwks is None
