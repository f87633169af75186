"""The token is read once (issue 19): `auth._parse` + `_check_form` + `_check_claims` give the
verdict PyJWT's `jwt.decode` gave, token by token.

The reference below is the code this replaced, kept verbatim: a lenient peek at the header and
claims to choose the issuer and key, then `jwt.decode` (PyJWT) with the same arguments and its
errors mapped to the same `Rejection`s. Every crafted token goes through both, with the clock
frozen for both, and the verdicts (the caller or the rejection, and the claims accepted) must
be equal. The base64url check is compared with PyJWT's own on arbitrary strings.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import types
import uuid
from datetime import datetime
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, RSAPSSAlgorithm
from jwt.api_jws import PyJWS

from cds_service import auth as auth_module
from cds_service.auth import (
    ALGORITHMS,
    LEEWAY_S,
    VERIFIERS,
    Authenticator,
    AuthRejected,
    Rejection,
    parse_issuers,
)
from cds_service.config import Settings

from .jwt_helpers import ISS, PUBLIC_BASE, SERVICE_URL, MemoryReplay, b64, jwks, signer

ALGS = ["RS256", "RS384", "ES256", "ES384", "PS256"]
ACCEPTED = "accepted"
COMPARED = None  # the verdict depends on the bytes drawn (e.g. whether a cut signature is
# still canonical base64url): compared with the reference, not predicted
NOW = float(int(time.time())) + 0.5  # the frozen clock: half a second past a whole second
T = int(NOW)


# --- the reference: the code before issue 19, verbatim but for names -----------------------


def _old_segment(segment: str) -> dict:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _old_peek(token: str) -> tuple[dict, dict]:
    head, payload, _signature = token.split(".")
    try:
        return _old_segment(head), _old_segment(payload)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise AuthRejected(Rejection.MALFORMED) from None


def _old_public_key(jwk: dict, alg: str) -> Any:
    family = {"ES": ECAlgorithm, "PS": RSAPSSAlgorithm}.get(alg[:2], RSAAlgorithm)
    key = family.from_jwk(json.dumps(jwk, sort_keys=True))
    return key.public_key() if hasattr(key, "private_bytes") else key


class Reference(Authenticator):
    """`_verify` and `_decode` as they were: peek, then `jwt.decode`."""

    claims: dict | None = None

    def _verify(self, authorization, audience):
        token = auth_module._bearer(authorization)
        if not self.issuers:
            raise AuthRejected(Rejection.NOT_CONFIGURED)
        header, unverified = _old_peek(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise AuthRejected(Rejection.ALG_NOT_ALLOWED)
        iss = unverified.get("iss") if isinstance(unverified, dict) else None
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthRejected(Rejection.UNKNOWN_ISSUER)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthRejected(Rejection.MALFORMED)
        candidates = self._keys(issuer, header.get("jku"), kid)
        claims = self._old_decode(token, alg, candidates, audience, issuer.iss)
        self.claims = claims
        self._check_times(claims)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > auth_module.MAX_JTI_CHARS:
            raise AuthRejected(Rejection.MISSING_CLAIM)
        self._remember(issuer.iss, jti, float(claims["exp"]))
        tenant = claims.get("tenant")
        return auth_module.Caller(
            issuer=issuer.iss, tenant=tenant if isinstance(tenant, str) else None
        )

    def _old_decode(self, token, alg, candidates, audience, iss):
        kty, curve = ALGORITHMS[alg]
        usable = [
            k
            for k in candidates
            if k.get("kty") == kty
            and (curve is None or k.get("crv") == curve)
            and k.get("alg") in (None, alg)
            and k.get("use") in (None, "sig")
        ]
        if not usable:
            raise AuthRejected(Rejection.UNKNOWN_KEY)
        last = Rejection.BAD_SIGNATURE
        for jwk in usable:
            try:
                key = _old_public_key(jwk, alg)
                return jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=audience,
                    issuer=iss,
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "iat", "jti", "iss", "aud"]},
                )
            except jwt.InvalidSignatureError:
                last = Rejection.BAD_SIGNATURE
            except jwt.ExpiredSignatureError:
                raise AuthRejected(Rejection.EXPIRED) from None
            except jwt.ImmatureSignatureError:
                raise AuthRejected(Rejection.NOT_YET_VALID) from None
            except jwt.MissingRequiredClaimError:
                raise AuthRejected(Rejection.MISSING_CLAIM) from None
            except jwt.InvalidAudienceError:
                raise AuthRejected(Rejection.AUD_MISMATCH) from None
            except jwt.InvalidIssuerError:
                raise AuthRejected(Rejection.UNKNOWN_ISSUER) from None
            except (jwt.PyJWTError, ValueError, TypeError):
                raise AuthRejected(Rejection.MALFORMED) from None
        raise AuthRejected(last)


class Current(Authenticator):
    """The service's authenticator, noting the claims `_decode` accepted."""

    claims: dict | None = None

    def _decode(self, *args, **kwargs):
        self.claims = super()._decode(*args, **kwargs)
        return self.claims


# --- the two side by side -------------------------------------------------------------------


def freeze(monkeypatch, now: float) -> None:
    """Both paths read the instant `now`: PyJWT through `datetime.now`, ours `time.time`."""

    class FrozenDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(now, tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", FrozenDatetime)
    monkeypatch.setattr(auth_module, "time", types.SimpleNamespace(time=lambda: now))


@pytest.fixture
def frozen(monkeypatch):
    freeze(monkeypatch, NOW)


SIGNERS = [signer(alg) for alg in ALGS]
# a second key for RS256 under the same kid: the first one tried does not verify
SHADOW = signer("RS256", kid=signer("RS256").kid, n=1)


def pair(*, shadow: bool = False) -> tuple[Reference, Current]:
    keys = jwks(SHADOW, *SIGNERS) if shadow else jwks(*SIGNERS)
    entries = [
        {"iss": ISS, "jwks": keys, "jku_allowed": ["https://ehr.example.org/jwks"]},
        {"iss": "https://other.example.org", "jwks": jwks(signer("ES256", "other-1", 1))},
    ]
    made = []
    for cls in (Reference, Current):
        settings = Settings(auth_disabled=False, public_base_url=PUBLIC_BASE)
        made.append(cls(settings, MemoryReplay(), issuers=parse_issuers(entries)))
    return made[0], made[1]


def verdict(auth: Authenticator, token: str, audience: str | list[str]) -> tuple[Any, Any]:
    auth.claims = None
    try:
        outcome: Any = auth.authenticate(f"Bearer {token}", audience)
    except AuthRejected as exc:
        outcome = exc.reason
    return outcome, auth.claims


def both(token: str, *, audience: str | list[str] = SERVICE_URL, shadow: bool = False):
    reference, current = pair(shadow=shadow)
    old = verdict(reference, token, audience)
    new = verdict(current, token, audience)
    assert new == old, token
    return new[0]


def claims(**overrides: Any) -> dict:
    out = {"iss": ISS, "aud": SERVICE_URL, "iat": T - 10, "exp": T + 300, "jti": uuid.uuid4().hex}
    for name, value in overrides.items():
        if value is DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


DROP = object()


def forge(
    alg: str,
    payload: dict | str,
    *,
    header: dict | None = None,
    head: str | None = None,
    signer_=None,
) -> str:
    """A token signed over exactly the segments given (PyJWT's encoder refuses odd headers)."""
    s = signer_ or signer(alg)
    head = head if head is not None else b64(header if header is not None else {"alg": alg, "kid": s.kid})
    body = payload if isinstance(payload, str) else b64(payload)
    signing_input = f"{head}.{body}".encode()
    signature = VERIFIERS[alg].sign(signing_input, s.private_key)
    return f"{head}.{body}.{b64(signature)}"


def swap_segment(token: str, index: int, new: str) -> str:
    parts = token.split(".")
    parts[index] = new
    return ".".join(parts)


# --- the table ------------------------------------------------------------------------------

# name -> (claims overrides, the verdict both must give: None for accepted)
CLAIM_CASES: dict[str, tuple[dict, Rejection | None]] = {
    "valid": ({}, None),
    "tenant passed on": ({"tenant": "t-1"}, None),
    "expired 1 s past the leeway": ({"exp": T - LEEWAY_S - 1}, Rejection.EXPIRED),
    "expired exactly at the leeway": ({"exp": T - LEEWAY_S}, Rejection.EXPIRED),
    "expired within the leeway": ({"exp": T - LEEWAY_S + 1}, None),
    "exp float truncated as PyJWT does": ({"exp": T - LEEWAY_S + 0.7}, Rejection.EXPIRED),
    "exp float ahead": ({"exp": T + 300.5}, None),
    "exp string in the past": ({"exp": "123"}, Rejection.EXPIRED),
    "exp string ahead": ({"exp": str(T + 300)}, Rejection.MALFORMED),
    "exp not a number": ({"exp": "soon"}, Rejection.MALFORMED),
    "exp true": ({"exp": True}, Rejection.EXPIRED),
    "exp null": ({"exp": None}, Rejection.MISSING_CLAIM),
    "exp missing": ({"exp": DROP}, Rejection.MISSING_CLAIM),
    "exp a list": ({"exp": [T + 300]}, Rejection.MALFORMED),
    "exp infinite": ({"exp": float("inf")}, Rejection.MALFORMED),
    "exp NaN": ({"exp": float("nan")}, Rejection.MALFORMED),
    "exp too far ahead": ({"exp": T + 3600 + LEEWAY_S + 5}, Rejection.EXP_TOO_FAR),
    "iat ahead past the leeway": ({"iat": T + LEEWAY_S + 1}, Rejection.NOT_YET_VALID),
    "iat ahead within the leeway": ({"iat": T + LEEWAY_S}, None),
    "iat float truncated": ({"iat": T + LEEWAY_S + 0.7}, None),
    "iat not a number": ({"iat": "x"}, Rejection.MALFORMED),
    "iat null": ({"iat": None}, Rejection.MISSING_CLAIM),
    "iat missing": ({"iat": DROP}, Rejection.MISSING_CLAIM),
    "iat true": ({"iat": True}, None),
    "nbf ahead past the leeway": ({"nbf": T + LEEWAY_S + 1}, Rejection.NOT_YET_VALID),
    "nbf ahead within the leeway": ({"nbf": T + 30}, None),
    "nbf past": ({"nbf": T - 300}, None),
    "nbf not a number": ({"nbf": "later"}, Rejection.MALFORMED),
    "nbf null": ({"nbf": None}, Rejection.MALFORMED),
    "iat ahead and expired: iat first": (
        {"iat": T + LEEWAY_S + 5, "exp": T - 500},
        Rejection.NOT_YET_VALID,
    ),
    "expired and wrong aud: exp first": (
        {"exp": T - 500, "aud": "https://x.example"},
        Rejection.EXPIRED,
    ),
    "aud another URL": ({"aud": "https://other.example.org/x"}, Rejection.AUD_MISMATCH),
    "aud list with ours": ({"aud": ["https://other.example.org", SERVICE_URL]}, None),
    "aud list without ours": ({"aud": ["https://other.example.org"]}, Rejection.AUD_MISMATCH),
    "aud an int": ({"aud": 5}, Rejection.AUD_MISMATCH),
    "aud true": ({"aud": True}, Rejection.AUD_MISMATCH),
    "aud an object": ({"aud": {"u": SERVICE_URL}}, Rejection.AUD_MISMATCH),
    "aud list with an int": ({"aud": [SERVICE_URL, 5]}, Rejection.AUD_MISMATCH),
    "aud missing": ({"aud": DROP}, Rejection.MISSING_CLAIM),
    "aud null": ({"aud": None}, Rejection.MISSING_CLAIM),
    "aud empty string": ({"aud": ""}, Rejection.MISSING_CLAIM),
    "aud empty list": ({"aud": []}, Rejection.MISSING_CLAIM),
    "aud zero": ({"aud": 0}, Rejection.MISSING_CLAIM),
    "iss another trusted issuer": ({"iss": "https://other.example.org"}, Rejection.UNKNOWN_KEY),
    "iss unknown": ({"iss": "https://evil.example"}, Rejection.UNKNOWN_ISSUER),
    "iss an int": ({"iss": 7}, Rejection.UNKNOWN_ISSUER),
    "iss missing": ({"iss": DROP}, Rejection.UNKNOWN_ISSUER),
    "jti an int": ({"jti": 7}, Rejection.MALFORMED),
    "jti empty": ({"jti": ""}, Rejection.MISSING_CLAIM),
    "jti null": ({"jti": None}, Rejection.MISSING_CLAIM),
    "jti missing": ({"jti": DROP}, Rejection.MISSING_CLAIM),
    "jti too long": ({"jti": "j" * 600}, Rejection.MISSING_CLAIM),
    "sub a string": ({"sub": "ehr"}, None),
    "sub an int": ({"sub": 5}, Rejection.MALFORMED),
    "sub null": ({"sub": None}, Rejection.MALFORMED),
}


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("case", list(CLAIM_CASES))
def test_claims_give_the_verdict_pyjwt_gave(frozen, alg, case):
    overrides, expected = CLAIM_CASES[case]
    outcome = both(forge(alg, claims(**overrides)))
    if expected is None:
        assert outcome == auth_module.Caller(
            issuer=ISS, tenant=overrides.get("tenant") if "tenant" in overrides else None
        )
    else:
        assert outcome is expected


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"exp": T - LEEWAY_S}, Rejection.EXPIRED),  # exp <= now - leeway
        ({"exp": T - LEEWAY_S + 1}, ACCEPTED),
        ({"iat": T + LEEWAY_S}, ACCEPTED),  # iat > now + leeway
        ({"iat": T + LEEWAY_S + 1}, Rejection.NOT_YET_VALID),
        ({"nbf": T + LEEWAY_S}, ACCEPTED),
        ({"nbf": T + LEEWAY_S + 1}, Rejection.NOT_YET_VALID),
    ],
)
def test_the_leeway_edges_with_the_clock_on_a_whole_second(monkeypatch, overrides, expected):
    freeze(monkeypatch, float(T))
    outcome = both(forge("ES256", claims(**overrides)))
    assert outcome == (auth_module.Caller(issuer=ISS) if expected is ACCEPTED else expected)


def test_audience_any_of_several(frozen):
    token = forge("ES384", claims(aud="https://b.example/x"))
    assert both(token, audience=["https://a.example/x", "https://b.example/x"]).issuer == ISS
    assert both(token, audience=["https://a.example/x"]) is Rejection.AUD_MISMATCH


def _flip(segment: str) -> str:
    """The same length and still canonical: the first character changed."""
    return ("B" if segment[0] == "A" else "A") + segment[1:]


def _forms(alg: str) -> dict[str, tuple[str, Rejection | str | None]]:
    """name -> (token, the verdict both must give)."""
    s = signer(alg)
    good = forge(alg, claims())
    head, body, sig = good.split(".")
    payload = claims()
    out: dict[str, tuple[str, Rejection | str | None]] = {
        "valid": (good, ACCEPTED),
        "signature tampered": (swap_segment(good, 2, _flip(sig)), Rejection.BAD_SIGNATURE),
        "signature truncated": (swap_segment(good, 2, sig[:-4]), COMPARED),
        "signature empty": (swap_segment(good, 2, ""), Rejection.BAD_SIGNATURE),
        "signature of another token": (
            swap_segment(good, 2, forge(alg, claims()).split(".")[2]),
            Rejection.BAD_SIGNATURE,
        ),
        "payload tampered": (
            swap_segment(good, 1, b64(claims(jti="other"))),
            Rejection.BAD_SIGNATURE,
        ),
        "payload a JSON array": (forge(alg, b64(b"[1, 2]")), Rejection.MALFORMED),
        "payload not JSON": (forge(alg, b64(b"{nope")), Rejection.MALFORMED),
        "header a JSON array": (forge(alg, payload, head=b64(b"[]")), Rejection.MALFORMED),
        "kid an int": (
            forge(alg, payload, header={"alg": alg, "kid": 5}),
            Rejection.MALFORMED,
        ),
        "kid missing: every key tried": (forge(alg, payload, header={"alg": alg}), ACCEPTED),
        "kid unknown": (
            forge(alg, payload, header={"alg": alg, "kid": "nope"}),
            Rejection.UNKNOWN_KEY,
        ),
        "crit b64 with b64 true": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "crit": ["b64"], "b64": True}),
            ACCEPTED,
        ),
        "crit b64 absent from the header": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "crit": ["b64"]}),
            Rejection.MALFORMED,
        ),
        "crit unsupported": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "crit": ["exp"], "exp": 1}),
            Rejection.MALFORMED,
        ),
        "crit empty": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "crit": []}),
            Rejection.MALFORMED,
        ),
        "crit a string": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "crit": "b64", "b64": True}),
            Rejection.MALFORMED,
        ),
        "crit with a number": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "crit": [1]}),
            Rejection.MALFORMED,
        ),
        "crit null": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "crit": None}),
            Rejection.MALFORMED,
        ),
        "b64 false": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "crit": ["b64"], "b64": False}),
            Rejection.MALFORMED,
        ),
        "b64 false without crit": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "b64": False}),
            Rejection.MALFORMED,
        ),
        "b64 a string": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "b64": "no"}),
            ACCEPTED,
        ),
        "jku listed, inline keys used": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "jku": "https://ehr.example.org/jwks"}),
            ACCEPTED,
        ),
        "jku not listed": (
            forge(alg, payload, header={"alg": alg, "kid": s.kid, "jku": "https://evil.example/j"}),
            Rejection.JKU_NOT_ALLOWED,
        ),
        "alg none": (forge(alg, payload, header={"alg": "none", "kid": s.kid}), Rejection.ALG_NOT_ALLOWED),
        "alg HS256": (forge(alg, payload, header={"alg": "HS256", "kid": s.kid}), Rejection.ALG_NOT_ALLOWED),
        "alg of another family": (
            forge(alg, payload, header={"alg": "ES384" if alg[0] != "E" else "RS384", "kid": s.kid}),
            Rejection.UNKNOWN_KEY,
        ),
        # non-alphabet characters fail PyJWT's decoding; the lenient peek skips them (four keep
        # the length's padding right), so the verdicts that come before decoding (the issuer,
        # the key) stay what they were
        "non-alphabet in the payload": (
            forge(alg, body[:10] + "!!!!" + body[10:]),
            Rejection.MALFORMED,
        ),
        "one non-alphabet character in the payload": (
            forge(alg, body[:10] + "!" + body[10:]),
            Rejection.MALFORMED,
        ),
        "non-alphabet in the payload, unknown issuer": (
            forge(alg, (lambda b: b[:10] + "!!!!" + b[10:])(b64(claims(iss="https://evil.example")))),
            Rejection.UNKNOWN_ISSUER,
        ),
        "non-alphabet in the header, unknown kid": (
            forge(alg, payload, head=(lambda h: h[:6] + "****" + h[6:])(b64({"alg": alg, "kid": "nope"}))),
            Rejection.UNKNOWN_KEY,
        ),
        "non-alphabet in the header": (
            forge(alg, payload, head=head[:6] + "****" + head[6:]),
            Rejection.MALFORMED,
        ),
        "standard base64 '+' for '-' in the header, unknown kid": (
            forge(alg, payload, head=_std(b64({"alg": alg, "kid": "nope>>>?"}))),
            Rejection.UNKNOWN_KEY,
        ),
        "standard base64 '+' for '-' in the header": (
            forge(alg, payload, head=_std(b64({"alg": alg, "kid": s.kid, "x": ">>>?"}))),
            Rejection.MALFORMED,
        ),
        "space in the signature": (swap_segment(good, 2, sig[:8] + " " + sig[8:]), Rejection.MALFORMED),
        "plus in the signature": (swap_segment(good, 2, "+" + sig[1:]), Rejection.MALFORMED),
        "slash in the signature": (swap_segment(good, 2, "/" + sig[1:]), Rejection.MALFORMED),
        "non-ASCII in the signature": (swap_segment(good, 2, "é" + sig[1:]), Rejection.MALFORMED),
        "non-ASCII in the payload": (swap_segment(good, 1, "é" + body[1:]), Rejection.MALFORMED),
        "non-alphabet in the signature, unknown kid": (
            (lambda t: swap_segment(t, 2, "!" + t.split(".")[2]))(
                forge(alg, payload, header={"alg": alg, "kid": "nope"})
            ),
            Rejection.UNKNOWN_KEY,
        ),
    }
    # '=' appended to each segment: PyJWT takes the padding that completes a multiple of 4 (the
    # signature covers the segments as sent), refuses any other
    for index, name in enumerate(("header", "payload", "signature")):
        for pad in ("=", "==", "==="):
            seg = good.split(".")[index]
            if index < 2:
                parts = good.split(".")
                parts[index] = seg + pad
                token = forge(alg, parts[1], head=parts[0])
            else:
                token = swap_segment(good, 2, seg + pad)
            out[f"{name} + {pad!r}"] = (token, COMPARED)
    # the unused low bits of the last character set: not the canonical encoding
    for index, name in enumerate(("header", "payload")):
        seg = good.split(".")[index]
        if len(seg) % 4 in (2, 3):
            parts = good.split(".")
            parts[index] = seg[:-1] + _non_canonical(seg[-1])
            out[f"{name} not canonical"] = (forge(alg, parts[1], head=parts[0]), Rejection.MALFORMED)
    if len(sig) % 4 in (2, 3):
        out["signature not canonical"] = (
            swap_segment(good, 2, sig[:-1] + _non_canonical(sig[-1])),
            Rejection.MALFORMED,
        )
    return out


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _non_canonical(last: str) -> str:
    return ALPHABET[ALPHABET.index(last) | 1]


def _std(segment: str) -> str:
    assert "-" in segment or "_" in segment, segment
    return segment.replace("-", "+").replace("_", "/")


@pytest.mark.parametrize("alg", ALGS)
def test_token_forms_give_the_verdict_pyjwt_gave(frozen, alg):
    for name, (token, expected) in _forms(alg).items():
        outcome = both(token)
        if expected is ACCEPTED:
            assert outcome == auth_module.Caller(issuer=ISS), name
        elif expected is not COMPARED:
            assert outcome is expected, name


@pytest.mark.parametrize("alg", ALGS)
def test_padding_that_completes_the_segment_is_taken_other_padding_is_not(frozen, alg):
    """PyJWT accepts the '=' that makes a segment a multiple of 4 characters (some issuers
    send it); the signature covers the segments as sent."""
    s = signer(alg)
    head = b64({"alg": alg, "kid": s.kid})
    body = b64(claims())
    for n in range(3):  # one of three lengths in a row needs two '=' to complete it
        body = b64(claims(pad="x" * n))
        if len(body) % 4 == 2:
            break
    assert both(forge(alg, body + "==", head=head)) == auth_module.Caller(issuer=ISS)
    assert both(forge(alg, body + "=", head=head)) is Rejection.MALFORMED
    assert both(forge(alg, body + "===", head=head)) is Rejection.MALFORMED


def test_the_first_key_under_a_kid_that_does_not_verify_is_passed_over(frozen):
    token = forge("RS256", claims())
    assert both(token, shadow=True) == auth_module.Caller(issuer=ISS)
    assert both(swap_segment(token, 2, _flip(token.split(".")[2])), shadow=True) is (
        Rejection.BAD_SIGNATURE
    )


def test_a_short_rsa_key_is_warned_about_on_every_call_as_pyjwt_did(frozen):
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.warnings import InsecureKeyLengthWarning

    from .jwt_helpers import Signer

    weak = Signer("RS256", "weak", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    entries = [{"iss": ISS, "jwks": jwks(weak)}]
    for cls in (Reference, Current):
        auth = cls(Settings(auth_disabled=False, public_base_url=PUBLIC_BASE), MemoryReplay(),
                   issuers=parse_issuers(entries))  # fmt: skip
        for _ in range(2):
            with pytest.warns(InsecureKeyLengthWarning):
                assert verdict(auth, forge("RS256", claims(), signer_=weak), SERVICE_URL)[0] == (
                    auth_module.Caller(issuer=ISS)
                )


# --- properties -----------------------------------------------------------------------------

SEGMENT_CHARACTERS = st.sampled_from(list(ALPHABET[:6] + "wgQ048-_=+/!. é") + list("AQgwE"))


def _pyjwt_takes(segment: str) -> bytes | None:
    try:
        return PyJWS._decode_base64url_segment(segment.encode("utf-8"), "x")
    except jwt.DecodeError:
        return None


@given(st.text(SEGMENT_CHARACTERS, max_size=14) | st.binary(max_size=12).map(b64))
@hypothesis_settings(max_examples=600, deadline=None)
def test_the_base64url_check_is_pyjwts(segment):
    taken = _pyjwt_takes(segment)
    assert auth_module._strict_base64url(segment) is (taken is not None)
    if taken is not None:  # and the lenient decoding gives the same bytes
        assert base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)) == taken


@pytest.mark.parametrize(
    "segment",
    ["", "QQ", "QQ==", "QUI", "QUI=", "QUJD", "QR", "QUJ", "QQ=", "QUJD=", "QUJD==", "Q", "Q===",
     "QQ===", "QUJD====", "====", "=", "QU!D", "QU+D", "QU/D", "QU D", "QUJDé"],
)  # fmt: skip
def test_the_base64url_check_on_known_segments(segment):
    assert auth_module._strict_base64url(segment) is (_pyjwt_takes(segment) is not None)


_TOKENS = {alg: forge(alg, claims(exp=T + 3000, iat=T - 5)) for alg in ("RS256", "ES256")}


@given(
    alg=st.sampled_from(sorted(_TOKENS)),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["replace", "insert", "delete"]),
                  st.sampled_from(list(ALPHABET[:4] + "=!+/ é") + ["", "=="])),
        min_size=1, max_size=3,
    ),
)  # fmt: skip
@hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_token_mangled_anywhere_gets_the_verdict_pyjwt_gave(frozen, alg, edits):
    token = _TOKENS[alg]
    for position, edit, character in edits:
        i = position % (len(token) + 1)
        if edit == "replace":
            token = token[:i] + character + token[i + 1 :]
        elif edit == "insert":
            token = token[:i] + character + token[i:]
        else:
            token = token[:i] + token[i + 1 :]
    if token.count(".") != 2:
        return  # refused by `_bearer` before either path looks
    both(token)
