"""JWT signing for tests: keys are generated at run time (no private key is ever committed)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISS = "https://ehr.example.org"
PUBLIC_BASE = "https://cds.example.org/vitd"
SERVICE = "vitamin-d-patient-view"
SERVICE_URL = f"{PUBLIC_BASE}/cds-services/{SERVICE}"

_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


@dataclass(frozen=True)
class Signer:
    alg: str
    kid: str
    private_key: Any

    @property
    def jwk(self) -> dict:
        public = self.private_key.public_key()
        family = ECAlgorithm if self.alg.startswith("ES") else RSAAlgorithm
        out = family.to_jwk(public, as_dict=True)
        out.update(kid=self.kid, alg=self.alg, use="sig")
        return out

    def sign(
        self,
        *,
        aud: Any = SERVICE_URL,
        iss: str = ISS,
        exp_in: float | None = 300,
        iat_offset: float = 0,
        jti: str | None = "fresh",
        headers: dict | None = None,
        **claims: Any,
    ) -> str:
        now = time.time()
        payload: dict[str, Any] = {"iss": iss, "aud": aud, "iat": int(now + iat_offset)}
        if exp_in is not None:
            payload["exp"] = int(now + exp_in)
        if jti is not None:
            payload["jti"] = uuid.uuid4().hex if jti == "fresh" else jti
        payload.update(claims)
        return jwt.encode(
            payload,
            self.private_key,
            algorithm=self.alg,
            headers={"kid": self.kid, "typ": "JWT", **(headers or {})},
        )


@cache
def _key(alg: str, n: int) -> Any:
    """One key per (alg, n) per test session: RSA generation is slow."""
    del n
    if alg.startswith("ES"):
        return ec.generate_private_key(_CURVES[alg]())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signer(alg: str = "ES384", kid: str | None = None, n: int = 0) -> Signer:
    return Signer(alg, kid or f"{alg.lower()}-{n}", _key(alg, n))


def jwks(*signers: Signer) -> dict:
    return {"keys": [s.jwk for s in signers]}


def write_issuers(path: Path, entries: list[dict]) -> str:
    path.write_text(json.dumps(entries), "utf-8")
    return str(path)


def b64(data: bytes | dict) -> str:
    if isinstance(data, dict):
        data = json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, payload: dict, signature: bytes = b"") -> str:
    """A token assembled by hand (alg none, HMAC forgeries): PyJWT refuses to make those."""
    return f"{b64(header)}.{b64(payload)}.{b64(signature) if signature else ''}"


def claims(aud: str = SERVICE_URL, **extra: Any) -> dict:
    now = int(time.time())
    return {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex, **extra}


class MemoryReplay:
    """In-process replay store for unit tests of key handling (the real ones: test_replay)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def remember_token(self, digest: str, expires_at: float) -> bool:
        new = digest not in self.seen
        self.seen.add(digest)
        return new
