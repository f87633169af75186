"""JWT trust (contract §6, issue 6): every rejection case, what is accepted, keys and config.

Tokens are signed with keys generated at run time; the JWKS endpoints are loopback stubs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cds_service import auth as auth_module
from cds_service import engine
from cds_service.auth import (
    Authenticator,
    AuthRejected,
    Issuer,
    KeyCache,
    Rejection,
    check_bind,
    load_issuers,
    parse_issuers,
)
from cds_service.config import ConfigError, Settings

from .builders import hook_request, null_prefetch
from .fhir_stub import FhirStub, Reply
from .jwt_helpers import (
    ISS,
    PUBLIC_BASE,
    SERVICE,
    SERVICE_URL,
    MemoryReplay,
    b64,
    claims,
    jwks,
    signer,
    unsigned,
    write_issuers,
)

PATH = f"/cds-services/{SERVICE}"


def call(client, token: str | None, *, path: str = PATH, body: dict | None = None, raw=None):
    headers = {}
    if raw is not None:
        headers["Authorization"] = raw
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    body = body if body is not None else hook_request(prefetch=null_prefetch())
    return client.post(
        path, data=json.dumps(body), content_type="application/json", headers=headers
    )


def rejections(caplog) -> list[str]:
    return [r.auth_rejection for r in caplog.records if hasattr(r, "auth_rejection")]


def assert_refused(reply, caplog, reason: Rejection, secret: str | None = None):
    assert reply.status_code == 401, reply.get_data(as_text=True)
    assert reply.get_json() == {"error": "unauthorized"}  # nothing that helps an attacker
    assert rejections(caplog) == [reason.value]
    if secret:
        assert secret not in caplog.text


# --- what is accepted -----------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES384", "RS384", "ES256", "RS256", "PS256", "PS384"])
def test_signed_tokens_are_accepted(auth_client, alg):
    reply = call(auth_client, signer(alg).sign())
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json() == {"cards": []}


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_a_trusted_key_is_parsed_once_not_per_call(auth_client, alg, monkeypatch):
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    from cds_service import auth

    auth._parsed_key.cache_clear()
    family = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
    parsed = []
    original = family.from_jwk
    monkeypatch.setattr(family, "from_jwk", lambda jwk: parsed.append(1) or original(jwk))
    for _ in range(3):
        assert call(auth_client, signer(alg).sign()).status_code == 200
    assert len(parsed) == 1
    # a key it was not given is still refused: the cache is keyed by the key itself
    other = signer(alg, kid=signer(alg).kid, n=1).sign()
    assert call(auth_client, other).status_code == 401


@pytest.mark.parametrize(
    "head",
    ["bm90IGpzb24", "W10", "IkVTMzg0Ig", "e30"],  # not JSON, [], "ES384", {}
)
def test_a_header_that_is_not_a_usable_json_object_is_malformed(auth_client, caplog, head):
    token = f"{head}.{b64(claims())}.{b64(b'sig')}"
    reason = Rejection.ALG_NOT_ALLOWED if head == "e30" else Rejection.MALFORMED
    assert_refused(call(auth_client, token), caplog, reason, token)


def test_aud_as_an_array_containing_the_endpoint(auth_client):
    token = signer().sign(aud=["https://other.example.org", SERVICE_URL])
    assert call(auth_client, token).status_code == 200


def test_feedback_needs_and_accepts_a_token_for_its_own_url(auth_client, caplog):
    body = {
        "feedback": [
            {"card": "c-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-25T10:00:00Z"}
        ]
    }
    path = f"{PATH}/feedback"
    assert_refused(call(auth_client, None, path=path, body=body), caplog, Rejection.MISSING_TOKEN)
    ok = call(auth_client, signer().sign(aud=f"{SERVICE_URL}/feedback"), path=path, body=body)
    assert ok.status_code == 200 and ok.get_json() == {"received": 1, "stored": 1}


def test_discovery_and_health_stay_public(auth_client):
    assert auth_client.get("/cds-services").status_code == 200
    assert auth_client.get("/healthz").status_code == 200


def test_nbf_in_the_past_and_clock_leeway(auth_client):
    s = signer()
    assert call(auth_client, s.sign(nbf=int(time.time()) - 300)).status_code == 200
    assert call(auth_client, s.sign(exp_in=-30)).status_code == 200  # within 60 s leeway
    assert call(auth_client, s.sign(iat_offset=30)).status_code == 200  # a fast EHR clock


def test_tenant_claim_reaches_the_facts(auth_client, monkeypatch):
    seen = []
    real = engine.build_facts

    def spy(*args, **kwargs):
        facts = real(*args, **kwargs)
        seen.append(facts.tenant)
        return facts

    monkeypatch.setattr(engine, "build_facts", spy)
    assert call(auth_client, signer().sign(tenant="hospital-a")).status_code == 200
    assert call(auth_client, signer().sign()).status_code == 200
    assert seen == ["hospital-a", None]


def test_audience_from_the_request_without_a_public_base_url(make_app, auth_settings):
    client = make_app(auth_settings.with_overrides(public_base_url=None)).test_client()
    assert call(client, signer().sign(aud=f"http://localhost{PATH}")).status_code == 200
    assert call(client, signer().sign(aud=SERVICE_URL)).status_code == 401


# --- every rejection case -------------------------------------------------------------------


def test_no_token(auth_client, caplog):
    assert_refused(call(auth_client, None), caplog, Rejection.MISSING_TOKEN)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Bearer garbage", Rejection.MALFORMED),
        ("Bearer a.b.c", Rejection.MALFORMED),
        ("Bearer " + "x" * 20000 + ".y.z", Rejection.MALFORMED),
        ("Basic dXNlcjpwYXNz", Rejection.MISSING_TOKEN),
        ("Bearer", Rejection.MISSING_TOKEN),
    ],
)
def test_garbage(auth_client, caplog, header, reason):
    assert_refused(call(auth_client, None, raw=header), caplog, reason)


@pytest.mark.parametrize(
    ("header", "payload", "reason"),
    [
        ({"alg": ["ES384"], "kid": "es384-0"}, claims(), Rejection.ALG_NOT_ALLOWED),
        ({"alg": {"ES384": 1}, "kid": "es384-0"}, claims(), Rejection.ALG_NOT_ALLOWED),
        ({"alg": "ES384", "kid": "es384-0"}, claims(iss=[ISS]), Rejection.UNKNOWN_ISSUER),
        ({"alg": "ES384", "kid": "es384-0"}, claims(iss={"x": 1}), Rejection.UNKNOWN_ISSUER),
        ({"alg": "ES384", "kid": 7}, claims(), Rejection.MALFORMED),
        ({"alg": "ES384", "kid": "es384-0", "jku": ["x"]}, claims(), Rejection.JKU_NOT_ALLOWED),
        ({"alg": "ES384", "kid": "es384-0"}, [1, 2], Rejection.MALFORMED),
    ],
)
def test_odd_json_in_header_or_claims(auth_client, caplog, header, payload, reason):
    token = f"{b64(header)}.{b64(payload) if isinstance(payload, dict) else b64(json.dumps(payload).encode())}.{b64(b'sig')}"
    assert_refused(call(auth_client, token), caplog, reason, token)


def test_alg_none(auth_client, caplog):
    token = unsigned({"alg": "none", "typ": "JWT", "kid": signer().kid}, claims())
    assert_refused(call(auth_client, token), caplog, Rejection.ALG_NOT_ALLOWED, token)


def test_hs256_with_the_public_key_as_secret(auth_client, caplog):
    """The classic key-confusion forgery: HMAC keyed with the issuer's public key."""
    public_pem = (
        signer("RS384")
        .private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": signer("RS384").kid}
    signing_input = f"{b64(header)}.{b64(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(mac)}"
    assert_refused(call(auth_client, token), caplog, Rejection.ALG_NOT_ALLOWED, token)


def test_wrong_key(auth_client, caplog):
    """Signed by a key the issuer never published, under a kid it did publish."""
    impostor = signer("ES384", kid=signer("ES384").kid, n=1)
    token = impostor.sign()
    assert_refused(call(auth_client, token), caplog, Rejection.BAD_SIGNATURE, token)


def test_unknown_kid(auth_client, caplog):
    token = signer("ES384", kid="not-published", n=1).sign()
    assert_refused(call(auth_client, token), caplog, Rejection.UNKNOWN_KEY, token)


def test_kid_of_a_key_of_another_type(auth_client, caplog):
    """An ES384 token naming the RS384 key's kid never reaches a verifier."""
    token = signer("ES384", kid=signer("RS384").kid).sign()
    assert_refused(call(auth_client, token), caplog, Rejection.UNKNOWN_KEY, token)


def test_unknown_issuer(auth_client, caplog):
    token = signer().sign(iss="https://evil.example.org")
    assert_refused(call(auth_client, token), caplog, Rejection.UNKNOWN_ISSUER, token)


def test_expired(auth_client, caplog):
    token = signer().sign(exp_in=-120, iat_offset=-400)
    assert_refused(call(auth_client, token), caplog, Rejection.EXPIRED, token)


@pytest.mark.parametrize(
    "extra",
    [{"nbf": int(time.time()) + 600}, {"iat_offset": 600, "exp_in": 900}],
    ids=["nbf ahead", "iat ahead"],
)
def test_not_yet_valid(auth_client, caplog, extra):
    token = signer().sign(**extra)
    assert_refused(call(auth_client, token), caplog, Rejection.NOT_YET_VALID, token)


@pytest.mark.parametrize(
    "aud",
    [
        "https://cds.example.org/vitd/cds-services/vitamin-d-order-sign",
        PUBLIC_BASE,
        f"http://localhost{PATH}",  # the proxy's view is not the public URL
        ["https://a.example.org", "https://b.example.org"],
    ],
)
def test_aud_mismatch(auth_client, caplog, aud):
    token = signer().sign(aud=aud)
    assert_refused(call(auth_client, token), caplog, Rejection.AUD_MISMATCH, token)


def test_replayed_jti(auth_client, caplog):
    token = signer().sign()
    assert call(auth_client, token).status_code == 200
    assert_refused(call(auth_client, token), caplog, Rejection.REPLAYED, token)
    # the same jti in a new token is a replay too
    again = signer("RS384").sign(jti=jwt.decode(token, options={"verify_signature": False})["jti"])
    caplog.clear()
    assert_refused(call(auth_client, again), caplog, Rejection.REPLAYED, again)


def test_a_refused_token_does_not_burn_its_jti(auth_client):
    bad = signer().sign(jti="once", aud="https://other.example.org")
    assert call(auth_client, bad).status_code == 401
    assert call(auth_client, signer().sign(jti="once")).status_code == 200


@pytest.mark.parametrize("missing", ["jti", "exp"])
def test_missing_claim(auth_client, caplog, missing):
    token = signer().sign(**{"jti" if missing == "jti" else "exp_in": None})
    assert_refused(call(auth_client, token), caplog, Rejection.MISSING_CLAIM, token)


@pytest.mark.parametrize("jti", ["", 42])
def test_unusable_jti(auth_client, caplog, jti):
    token = signer().sign(jti=jti)
    assert call(auth_client, token).status_code == 401


def test_exp_too_far_ahead(auth_client, caplog):
    token = signer().sign(exp_in=2 * 3600)
    assert_refused(call(auth_client, token), caplog, Rejection.EXP_TOO_FAR, token)


def test_exp_one_hour_ahead_is_accepted(auth_client):
    assert call(auth_client, signer().sign(exp_in=3600)).status_code == 200


def test_no_trusted_issuers_refuses_everything(make_app, settings, caplog):
    client = make_app(settings.with_overrides(auth_disabled=False)).test_client()
    assert "no trusted JWT issuers" in caplog.text
    assert_refused(call(client, signer().sign()), caplog, Rejection.NOT_CONFIGURED)


def test_sandbox_public_jwks_trusts_only_the_sandbox_key(
    make_app, settings, tmp_path, shared_data, caplog
):
    """The public sandbox's JWKS, given inline: our own key under its kid does not pass."""
    sandbox = json.loads((shared_data / "cds-hooks-examples/sandbox-jwks.json").read_text())
    kid = sandbox["keys"][0]["kid"]
    path = write_issuers(
        tmp_path / "sandbox.json", [{"iss": "https://sandbox.cds-hooks.org", "jwks": sandbox}]
    )
    s = settings.with_overrides(
        auth_disabled=False, trusted_issuers_file=path, public_base_url=PUBLIC_BASE
    )
    client = make_app(s).test_client()
    forged = signer("ES384", kid=kid, n=2).sign(iss="https://sandbox.cds-hooks.org")
    assert_refused(call(client, forged), caplog, Rejection.BAD_SIGNATURE, forged)


def test_inline_keys_with_a_listed_jku_are_never_fetched(make_app, settings, tmp_path, monkeypatch):
    """The sandbox's set-up: its tokens name a jku; with its keys inline, that URL is accepted
    (being listed) and never contacted."""
    monkeypatch.setattr(auth_module, "fetch_jwks", lambda url: pytest.fail(f"fetched {url}"))
    jku = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
    s = signer("ES384", kid="44823f3d-0b01-4a6c-a80e-b9d3e8a7226f", n=3)
    entry = {"iss": "https://sandbox.cds-hooks.org", "jwks": jwks(s), "jku_allowed": [jku]}
    path = write_issuers(tmp_path / "sandbox.json", [entry])
    settings = settings.with_overrides(
        auth_disabled=False, trusted_issuers_file=path, public_base_url=PUBLIC_BASE
    )
    client = make_app(settings).test_client()
    token = s.sign(iss="https://sandbox.cds-hooks.org", headers={"jku": jku})
    assert call(client, token).status_code == 200
    other = s.sign(iss="https://sandbox.cds-hooks.org", headers={"jku": jku + "?x"})
    assert call(client, other).status_code == 401


# --- keys fetched from the issuer: cache, rotation, jku ---------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def authenticator(issuers: list[dict], clock: Clock) -> Authenticator:
    settings = Settings(auth_disabled=False, public_base_url=PUBLIC_BASE)
    return Authenticator(
        settings,
        MemoryReplay(),
        issuers=parse_issuers(issuers),
        keys=KeyCache(clock=clock, ttl_s=3600, min_refetch_s=30),
    )


def verify(auth: Authenticator, token: str):
    return auth.authenticate(f"Bearer {token}", SERVICE_URL)


def reason_of(auth: Authenticator, token: str) -> Rejection:
    with pytest.raises(AuthRejected) as caught:
        verify(auth, token)
    return caught.value.reason


def test_key_rotation_refetches_once_rate_limited():
    old, new, bogus = signer("ES384", "old"), signer("RS384", "new"), signer("ES384", "bogus", 1)
    clock = Clock()
    with FhirStub() as stub:
        url = f"{stub.base_url}/jwks.json"
        stub.add("jwks.json", jwks(old))
        auth = authenticator([{"iss": ISS, "jwks_url": url}], clock)
        assert verify(auth, old.sign()).issuer == ISS
        assert len(stub.requests) == 1
        verify(auth, old.sign())
        assert len(stub.requests) == 1  # cached

        stub.add("jwks.json", jwks(old, new))  # the issuer rotates
        clock.now += 5  # too soon after the last fetch: no refetch yet
        assert reason_of(auth, new.sign()) is Rejection.UNKNOWN_KEY
        assert len(stub.requests) == 1
        clock.now += 30
        assert verify(auth, new.sign()).issuer == ISS  # unknown kid: one refetch
        assert len(stub.requests) == 2

        for _ in range(5):  # a flood of bogus kids costs at most one fetch per interval
            assert reason_of(auth, bogus.sign()) is Rejection.UNKNOWN_KEY
        assert len(stub.requests) == 2

        stub.add("jwks.json", jwks(new))  # the old key is withdrawn
        clock.now += 3600  # the cache expires
        assert verify(auth, new.sign()).issuer == ISS
        assert len(stub.requests) == 3
        assert reason_of(auth, old.sign()) is Rejection.UNKNOWN_KEY


def test_a_failing_key_endpoint_keeps_the_last_good_keys():
    key = signer("ES384", "k")
    clock = Clock()
    with FhirStub() as stub:
        url = f"{stub.base_url}/jwks.json"
        stub.add("jwks.json", jwks(key))
        auth = authenticator([{"iss": ISS, "jwks_url": url}], clock)
        verify(auth, key.sign())
        stub.add("jwks.json", {"error": "down"})  # not a JWK Set any more
        clock.now += 4000
        assert verify(auth, key.sign()).issuer == ISS
        assert len(stub.requests) == 2


def test_key_endpoint_unreachable_is_asked_at_most_every_30_s():
    key = signer("ES384", "k")
    clock = Clock()
    with FhirStub() as stub:
        url = f"{stub.base_url}/jwks.json"  # 404 until added
        auth = authenticator([{"iss": ISS, "jwks_url": url}], clock)
        for _ in range(3):
            assert reason_of(auth, key.sign()) is Rejection.KEYS_UNAVAILABLE
        assert len(stub.requests) == 1
        stub.add("jwks.json", jwks(key))
        clock.now += 10
        assert reason_of(auth, key.sign()) is Rejection.KEYS_UNAVAILABLE
        clock.now += 25
        assert verify(auth, key.sign()).issuer == ISS
        assert len(stub.requests) == 2


def test_expired_cache_with_the_endpoint_down_refetches_at_most_every_30_s():
    key = signer("ES384", "k")
    clock = Clock()
    with FhirStub() as stub:
        url = f"{stub.base_url}/jwks.json"
        stub.add("jwks.json", jwks(key))
        auth = authenticator([{"iss": ISS, "jwks_url": url}], clock)
        verify(auth, key.sign())
        stub.add("jwks.json", Reply(status=503))
        clock.now += 3600
        for _ in range(4):
            assert verify(auth, key.sign()).issuer == ISS  # the last good keys
        assert len(stub.requests) == 2
        clock.now += 30
        verify(auth, key.sign())
        assert len(stub.requests) == 3


def test_jku_is_followed_only_when_listed():
    listed, other = signer("ES384", "from-jku"), signer("RS384", "inline")
    with FhirStub() as stub:
        jku = f"{stub.base_url}/jku.json"
        stub.add("jku.json", jwks(listed))
        stub.add("unlisted.json", jwks(listed))
        stub.add("keys.json", jwks(other))
        auth = authenticator(
            [{"iss": ISS, "jwks_url": f"{stub.base_url}/keys.json", "jku_allowed": [jku]}], Clock()
        )
        assert verify(auth, listed.sign(headers={"jku": jku})).issuer == ISS
        assert verify(auth, other.sign()).issuer == ISS  # no jku: the issuer's jwks_url
        for unlisted in (f"{stub.base_url}/unlisted.json", "https://evil.example.org/jwks"):
            token = listed.sign(headers={"jku": unlisted})
            assert reason_of(auth, token) is Rejection.JKU_NOT_ALLOWED
        # unlisted never fetched
        assert sorted(r.path for r in stub.requests) == ["jku.json", "keys.json"]


def test_unlisted_jku_over_http(auth_client, caplog):
    token = signer().sign(headers={"jku": "https://evil.example.org/jwks.json"})
    assert_refused(call(auth_client, token), caplog, Rejection.JKU_NOT_ALLOWED, token)


# --- the trusted-issuer file ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"iss": ISS}, "JSON list"),
        (["x"], "must be an object"),
        ([{"jwks_url": "https://e/k"}], "non-empty 'iss'"),
        ([{"iss": ISS}], "exactly one of"),
        ([{"iss": ISS, "jwks_url": "https://e/k", "jwks": {"keys": []}}], "exactly one of"),
        ([{"iss": ISS, "jwks_url": "http://ehr.example.org/k"}], "https URL"),
        ([{"iss": ISS, "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}], "public RSA or EC"),
        ([{"iss": ISS, "jwks": {"keys": [{"kty": "RSA"}]}}], "not a usable public key"),
        ([{"iss": ISS, "jwks": []}], "JWK Set"),
        ([{"iss": ISS, "jwks_url": "https://e/k", "jku_allowed": "https://e/j"}], "list of URLs"),
        ([{"iss": ISS, "jwks_url": "https://e/k", "jku_allowed": ["ftp://e/j"]}], "https URL"),
        ([{"iss": ISS, "jwks_url": "https://e/k", "audience": "x"}], "unknown fields"),
        (
            [{"iss": ISS, "jwks_url": "https://e/k"}, {"iss": ISS, "jwks_url": "https://e/l"}],
            "repeats",
        ),
    ],
)
def test_bad_issuer_file_stops_the_service(tmp_path, data, message):
    path = write_issuers(tmp_path / "issuers.json", data)
    with pytest.raises(ConfigError, match=message):
        load_issuers(path)


def test_private_key_in_issuer_file_is_refused(tmp_path):
    private = jwt.algorithms.ECAlgorithm.to_jwk(signer().private_key, as_dict=True)
    path = write_issuers(tmp_path / "i.json", [{"iss": ISS, "jwks": {"keys": [private]}}])
    with pytest.raises(ConfigError, match="public RSA or EC"):
        load_issuers(path)


def test_issuer_file_unreadable_or_not_json(tmp_path, make_app, settings):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_issuers(str(tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text("{", "utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        make_app(
            settings.with_overrides(
                auth_disabled=False, trusted_issuers_file=str(tmp_path / "bad.json")
            )
        )


def test_good_issuer_file(tmp_path):
    path = write_issuers(
        tmp_path / "i.json",
        [
            {"iss": ISS, "jwks": jwks(signer())},
            {
                "iss": "https://epic.example.org",
                "jwks_url": "https://epic.example.org/keys",
                "jku_allowed": ["https://epic.example.org/jku"],
            },
        ],
    )
    issuers = load_issuers(path)
    assert issuers["https://epic.example.org"] == Issuer(
        "https://epic.example.org",
        jwks_url="https://epic.example.org/keys",
        jku_allowed=frozenset({"https://epic.example.org/jku"}),
    )


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        (
            {"CDS_PUBLIC_BASE_URL": "https://cds.example.org/vitd/"},
            "public_base_url",
            "https://cds.example.org/vitd",
        ),
        ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, "redis_url", "redis://127.0.0.1:6379/0"),
        ({"CDS_TRUSTED_ISSUERS_FILE": "/etc/x.json"}, "trusted_issuers_file", "/etc/x.json"),
    ],
)
def test_auth_settings_from_env(env, field, expected):
    assert getattr(Settings.from_env(env), field) == expected


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CDS_PUBLIC_BASE_URL": "cds.example.org"}, "CDS_PUBLIC_BASE_URL"),
        ({"CDS_PUBLIC_BASE_URL": "https://cds.example.org/?a=1"}, "CDS_PUBLIC_BASE_URL"),
        ({"REDIS_URL": "http://user:secret@redis"}, "REDIS_URL"),
    ],
)
def test_bad_auth_settings(env, name):
    with pytest.raises(ConfigError, match=name) as caught:
        Settings.from_env(env)
    assert "secret" not in str(caught.value)


# --- unauthenticated mode -------------------------------------------------------------------


def test_auth_disabled_says_so_loudly_at_start(make_app, settings, caplog):
    caplog.set_level(logging.WARNING)
    client = make_app(settings).test_client()
    assert "AUTHENTICATION IS DISABLED" in caplog.text
    assert call(client, None).status_code == 200


@pytest.mark.parametrize(
    ("host", "insecure", "refused"),
    [
        ("127.0.0.1", False, False),
        ("::1", False, False),
        ("localhost", False, False),
        ("0.0.0.0", False, True),
        ("10.1.2.3", False, True),
        ("0.0.0.0", True, False),
    ],
)
def test_unauthenticated_bind_only_on_loopback(host, insecure, refused, caplog):
    s = Settings(auth_disabled=True, allow_insecure_bind=insecure)
    if refused:
        with pytest.raises(SystemExit, match="refusing to serve"):
            check_bind(host, s)
    else:
        check_bind(host, s)
    assert "AUTHENTICATION IS DISABLED" in caplog.text


def test_authenticated_bind_anywhere():
    check_bind("0.0.0.0", Settings(auth_disabled=False))


def test_serve_refuses_a_bad_issuer_file_before_starting(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from cds_service.cli import main

    (tmp_path / "issuers.json").write_text('[{"iss": "x"}]', "utf-8")
    monkeypatch.setenv("CDS_TRUSTED_ISSUERS_FILE", str(tmp_path / "issuers.json"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 's.sqlite3'}")
    monkeypatch.delenv("CDS_AUTH_DISABLED", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:  # serve configures the root logger for production; put the test's back after
        result = CliRunner().invoke(main, ["serve", "--host", "127.0.0.1", "--port", "1"])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert result.exit_code != 0
    assert "exactly one of 'jwks_url' and 'jwks'" in result.output


# --- any token at all: a refusal, never an error ----------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3)
    ),
    max_leaves=8,
)
_now = int(time.time())
_claim_values = {
    "iss": st.just(ISS) | _json,
    "aud": st.just(SERVICE_URL) | st.just([SERVICE_URL, 1]) | _json,
    "exp": st.integers(_now - 100, _now + 8000) | _json,
    "nbf": st.integers(_now - 100, _now + 200) | _json,
    "iat": st.integers(_now - 100, _now + 200) | _json,
    "jti": st.text(max_size=10) | _json,
    "tenant": _json,
}
_claims = st.fixed_dictionaries({}, optional=_claim_values)


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    header=st.fixed_dictionaries(
        {},
        optional={
            "alg": st.sampled_from(["ES384", "RS384", "HS256", "none", "PS256"]) | _json,
            "kid": st.sampled_from(["es384-0", "rs384-0", "nope"]) | _json,
            "jku": _json,
            "typ": _json,
        },
    ),
    payload=_claims | _json,
    signature=st.binary(max_size=64),
)
def test_any_unsigned_token_is_refused_never_raises(header, payload, signature):
    auth = authenticator([{"iss": ISS, "jwks": jwks(signer("ES384"), signer("RS384"))}], Clock())
    token = (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"
    )
    with pytest.raises(AuthRejected):
        verify(auth, token)


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    payload=st.fixed_dictionaries(
        {}, optional={**_claim_values, "iss": st.just(ISS) | st.text(max_size=8)}
    ),  # PyJWT will not sign a non-string iss; the unsigned test above sends those
    alg=st.sampled_from(["ES384", "RS384"]),
)
def test_any_claims_signed_by_a_trusted_key_are_accepted_or_refused(payload, alg):
    """Real signatures over arbitrary claims reach claim validation; it refuses or accepts."""
    auth = authenticator([{"iss": ISS, "jwks": jwks(signer("ES384"), signer("RS384"))}], Clock())
    token = jwt.encode(
        payload, signer(alg).private_key, algorithm=alg, headers={"kid": signer(alg).kid}
    )
    try:
        caller = verify(auth, token)
    except AuthRejected:
        return
    # accepted: then every rule held
    assert payload["iss"] == ISS and isinstance(payload["jti"], str) and payload["jti"]
    assert SERVICE_URL in ([payload["aud"]] if isinstance(payload["aud"], str) else payload["aud"])
    assert payload["exp"] <= time.time() + 3600 + 60
    assert caller.tenant == (
        payload.get("tenant") if isinstance(payload.get("tenant"), str) else None
    )


def test_rejections_are_counted_by_reason_in_metrics(auth_client):
    from .test_metrics import scrape, value

    assert call(auth_client, None).status_code == 401
    for _ in range(2):
        assert call(auth_client, signer().sign(iss="https://evil.example.org")).status_code == 401
    token = signer().sign()
    assert call(auth_client, token).status_code == 200
    assert call(auth_client, token).status_code == 401
    samples = scrape(auth_client)
    name = "vitd_cds_jwt_rejections_total"
    assert value(samples, name, reason="missing_token") == 1
    assert value(samples, name, reason="unknown_issuer") == 2
    assert value(samples, name, reason="replayed") == 1
