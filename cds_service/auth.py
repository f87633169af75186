"""Who may call the service and its feedback endpoint: CDS Hooks 2.0 JWTs (contract §6).

Every service and feedback call carries `Authorization: Bearer <jwt>` signed by a trusted EHR.
`Authenticator.authenticate` accepts it only when all of these hold, else `AuthRejected` (401,
generic body; the short `reason` goes to the log and to metrics, never the token):

- the issuer (`iss`) is listed in `CDS_TRUSTED_ISSUERS_FILE`, a JSON list of
  `{"iss": ..., "jwks_url": ... | "jwks": {...}, "jku_allowed": [...]}`;
- `alg` is RS256/384/512, ES256/384/512 or PS256/384/512 (never `none`, never HMAC) and the
  key named by `kid` has the matching type (and curve);
- the signature verifies against that issuer's keys: its inline `jwks`, its `jwks_url`, or a
  `jku` header URL when (and only when) that URL is listed for the issuer (an unlisted `jku`
  is refused; with inline `jwks` a listed `jku` is accepted but the inline keys are used).
  Fetched key sets are cached for `KEY_TTL_S`; an unknown `kid` triggers one refetch, and no
  URL is fetched more often than every `MIN_REFETCH_S`, so a rotated key is picked up and
  neither a flood of bogus kids nor a key endpoint that is down causes a fetch per call;
- `aud` (string or array) holds the URL that was called; `exp` is present, not past, and at most
  one hour ahead; `nbf` and `iat` are honoured; 60 s clock leeway;
- `jti` is present and has never been accepted before within its lifetime. The replay store is
  shared by all workers: the database by default, Redis when `REDIS_URL` is set.

The `tenant` claim is passed on to the facts. `CDS_AUTH_DISABLED=1` trusts every caller, says
so loudly, and is refused on non-loopback binds (`check_bind`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

import jwt
import requests
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, RSAPSSAlgorithm, get_default_algorithms
from jwt.warnings import InsecureKeyLengthWarning

from .config import ConfigError, Settings
from .errors import ApiError, Unauthorized
from .metrics import jwt_rejected
from .store import describe_error

log = logging.getLogger(__name__)

LEEWAY_S = 60
MAX_LIFETIME_S = 3600  # `exp` at most this far ahead of now (plus leeway)
KEY_TTL_S = 3600  # fetched key sets are refreshed after this
MIN_REFETCH_S = 30  # an unknown kid refetches a key set at most this often per URL
JWKS_TIMEOUT_S = 2.0
JWKS_MAX_BYTES = 256 * 1024
MAX_TOKEN_CHARS = 16 * 1024
MAX_JTI_CHARS = 512

# alg -> (kty, EC curve or None)
ALGORITHMS: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
}
_PYJWT_ALGORITHMS = get_default_algorithms()
# alg -> PyJWT's own algorithm object: it checks the signature (an EC one in its raw r||s form)
VERIFIERS = {alg: _PYJWT_ALGORITHMS[alg] for alg in ALGORITHMS}


class Rejection(StrEnum):
    """Why a call was refused: short, stable, safe to log and to count (metrics label)."""

    MISSING_TOKEN = "missing_token"
    MALFORMED = "malformed"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    UNKNOWN_ISSUER = "unknown_issuer"
    JKU_NOT_ALLOWED = "jku_not_allowed"
    KEYS_UNAVAILABLE = "keys_unavailable"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    MISSING_CLAIM = "missing_claim"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    EXP_TOO_FAR = "exp_too_far"
    AUD_MISMATCH = "aud_mismatch"
    REPLAYED = "replayed"
    NOT_CONFIGURED = "not_configured"


class AuthRejected(Unauthorized):
    """401 with a generic body; `reason` (a `Rejection`) is for logs and metrics only."""

    def __init__(self, reason: Rejection) -> None:
        super().__init__()
        self.reason = reason


class AuthUnavailable(ApiError):
    """The replay store could not be reached: the token cannot be checked, so it is refused."""

    status = 503
    error = "authentication temporarily unavailable, retry later"

    def __init__(self) -> None:
        super().__init__()
        self.reason = "replay_store_unavailable"


@dataclass(frozen=True)
class Caller:
    issuer: str | None = None
    tenant: str | None = None


# --- trusted issuers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Issuer:
    iss: str
    jwks_url: str | None = None
    jwks: Mapping[str, Any] | None = None
    jku_allowed: frozenset[str] = field(default_factory=frozenset)


def _https_or_loopback(url: Any, where: str) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"{where} must be a URL string")
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return url
    raise ConfigError(f"{where} must be an https URL (http only on loopback), not {url!r}")


def _check_jwks(jwks: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ConfigError(f"{where} must be a JWK Set: an object with a 'keys' list")
    for n, key in enumerate(jwks["keys"]):
        try:
            jwt.PyJWK(key)
        except (jwt.PyJWKError, jwt.InvalidKeyError, TypeError, ValueError):
            raise ConfigError(f"{where} key {n} is not a usable public key") from None
        if not isinstance(key, dict) or "d" in key or key.get("kty") == "oct":
            raise ConfigError(f"{where} key {n} must be a public RSA or EC key")
    return jwks


def parse_issuers(data: Any, source: str = "CDS_TRUSTED_ISSUERS_FILE") -> dict[str, Issuer]:
    """Validate the trusted-issuer list; ConfigError names the entry and the problem."""
    if not isinstance(data, list):
        raise ConfigError(f"{source} must hold a JSON list of issuers")
    issuers: dict[str, Issuer] = {}
    for n, entry in enumerate(data):
        where = f"{source} entry {n}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be an object")
        unknown = set(entry) - {"iss", "jwks_url", "jwks", "jku_allowed"}
        if unknown:
            raise ConfigError(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
        iss = entry.get("iss")
        if not isinstance(iss, str) or not iss:
            raise ConfigError(f"{where} needs a non-empty 'iss'")
        if iss in issuers:
            raise ConfigError(f"{where} repeats issuer {iss!r}")
        if ("jwks_url" in entry) == ("jwks" in entry):
            raise ConfigError(f"{where} needs exactly one of 'jwks_url' and 'jwks'")
        jwks_url = entry.get("jwks_url")
        if jwks_url is not None:
            _https_or_loopback(jwks_url, f"{where} jwks_url")
        jwks = _check_jwks(entry["jwks"], f"{where} jwks") if "jwks" in entry else None
        jku = entry.get("jku_allowed", [])
        if not isinstance(jku, list):
            raise ConfigError(f"{where} 'jku_allowed' must be a list of URLs")
        for url in jku:
            _https_or_loopback(url, f"{where} jku_allowed")
        issuers[iss] = Issuer(iss, jwks_url, jwks, frozenset(jku))
    return issuers


def load_issuers(path: str) -> dict[str, Issuer]:
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise ConfigError(
            f"CDS_TRUSTED_ISSUERS_FILE {path!r} cannot be read: {exc.strerror}"
        ) from None
    try:
        data = json.loads(text)
    except ValueError:
        raise ConfigError(f"CDS_TRUSTED_ISSUERS_FILE {path!r} is not valid JSON") from None
    return parse_issuers(data)


# --- key sets -------------------------------------------------------------------------------


class KeyFetchError(Exception):
    pass


def fetch_jwks(url: str) -> Mapping[str, Any]:
    """GET a JWK Set: short timeout, size cap, no redirects, no environment proxies."""
    with requests.Session() as session:
        session.trust_env = False
        try:
            with session.get(
                url,
                timeout=(JWKS_TIMEOUT_S, JWKS_TIMEOUT_S),
                stream=True,
                allow_redirects=False,
                headers={"Accept": "application/json"},
            ) as response:
                if response.status_code != 200:
                    raise KeyFetchError(f"HTTP {response.status_code}")
                body = bytearray()
                for chunk in response.iter_content(16 * 1024):
                    body += chunk
                    if len(body) > JWKS_MAX_BYTES:
                        raise KeyFetchError("too large")
        except requests.RequestException:
            raise KeyFetchError("unreachable") from None
    try:
        data = json.loads(bytes(body))
    except (ValueError, RecursionError):
        raise KeyFetchError("not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise KeyFetchError("not a JWK Set")
    return data


@dataclass
class _CachedSet:
    keys: dict[str | None, list[dict]]  # kid -> JWKs (None: keys without a kid)
    fetched_at: float | None  # None: never fetched successfully
    last_attempt: float


def _index(jwks: Mapping[str, Any]) -> dict[str | None, list[dict]]:
    out: dict[str | None, list[dict]] = {}
    for key in jwks.get("keys", []):
        if isinstance(key, dict):
            kid = key.get("kid") if isinstance(key.get("kid"), str) else None
            out.setdefault(kid, []).append(key)
    return out


class KeyCache:
    """Key sets by URL, refreshed after `ttl_s`; an unknown kid refetches once, rate-limited.

    A failed refresh keeps serving the last good set (an EHR's key endpoint being briefly down
    must not switch decision support off).
    """

    def __init__(
        self,
        fetch: Callable[[str], Mapping[str, Any]] = fetch_jwks,
        *,
        ttl_s: float = KEY_TTL_S,
        min_refetch_s: float = MIN_REFETCH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._min_refetch_s = min_refetch_s
        self._clock = clock
        self._sets: dict[str, _CachedSet] = {}
        self._lock = threading.Lock()

    def keys_for(self, url: str, kid: str | None) -> list[dict]:
        """JWKs for `kid` from `url` (every key when `kid` is None); [] when none matches."""
        with self._lock:  # one fetch per URL at a time; fetches are short and rare
            now = self._clock()
            cached = self._sets.get(url)
            # Every fetch, due or not, waits `min_refetch_s` after the last attempt, so neither
            # bogus kids nor a key endpoint that is down cause a fetch per call.
            may_fetch = cached is None or now - cached.last_attempt >= self._min_refetch_s
            stale = (
                cached is None
                or cached.fetched_at is None
                or now - cached.fetched_at >= self._ttl_s
            )
            if may_fetch and stale:
                cached, may_fetch = self._refresh(url, cached, now), False
            if cached is None or cached.fetched_at is None:
                raise KeyFetchError("no key set fetched yet")
            found = _select(cached.keys, kid)
            if not found and may_fetch:
                cached = self._refresh(url, cached, now)
                found = _select(cached.keys, kid)
            return found

    def _refresh(self, url: str, cached: _CachedSet | None, now: float) -> _CachedSet:
        try:
            jwks = self._fetch(url)
        except KeyFetchError as exc:
            log.warning("could not fetch a JWK Set", extra={"jwks_url": url, "error": str(exc)})
            cached = cached or _CachedSet({}, None, now)
            cached.last_attempt = now
            self._sets[url] = cached
            return cached
        fresh = _CachedSet(_index(jwks), now, now)
        self._sets[url] = fresh
        return fresh


def _select(keys: Mapping[str | None, list[dict]], kid: str | None) -> list[dict]:
    if kid is None:
        return [k for group in keys.values() for k in group]
    return list(keys.get(kid, []))


# --- replay store ---------------------------------------------------------------------------


class ReplayStore(Protocol):
    """`store.Store` (the database, the default) or `RedisReplayStore`."""

    def remember_token(self, digest: str, expires_at: float) -> bool:
        """Record a token id until `expires_at` (epoch s); False if it was already recorded."""


class RedisReplayStore:
    """`SET key 1 NX EXAT exp`: atomic across every worker and host sharing the Redis."""

    PREFIX = "vitd-cds:jti:"

    def __init__(self, url: str, *, timeout_s: float = 1.0, max_connections: int = 16) -> None:
        """Every command is bounded (contract §6): connect and read within `timeout_s`, one
        retry on a broken connection (none on a time-out) with no back-off, TCP keepalive,
        and at most `max_connections` per process; a caller waits `timeout_s` at most for a
        free one."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            socket_keepalive=True,
            # a connection Redis closed is retried once; a time-out is not (it would double)
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        self._redis = redis.Redis(connection_pool=pool)

    def check(self) -> None:
        """PING within the limits (readiness); raises the client's error."""
        self._redis.ping()

    def remember_token(self, digest: str, expires_at: float) -> bool:
        return bool(
            self._redis.set(self.PREFIX + digest, b"1", nx=True, exat=max(1, int(expires_at) + 1))
        )

    def close(self) -> None:
        self._redis.close()
        self._redis.connection_pool.disconnect()


def jti_digest(iss: str, jti: str) -> str:
    """A fixed-length key for (issuer, jti): ids are unique per issuer, not across issuers."""
    return hashlib.sha256(f"{iss}\x00{jti}".encode()).hexdigest()


# --- the authenticator ------------------------------------------------------------------------


class Authenticator:
    """Built once per app; thread-safe. `authenticate` is called by the edge for every call."""

    def __init__(
        self,
        settings: Settings,
        replay: ReplayStore | None,
        *,
        issuers: Mapping[str, Issuer] | None = None,
        keys: KeyCache | None = None,
    ) -> None:
        self.disabled = settings.auth_disabled
        self.public_base_url = settings.public_base_url
        self.public_base_urls = settings.public_base_urls
        self.replay = replay
        self.keys = keys or KeyCache()
        if issuers is None:
            path = settings.trusted_issuers_file
            issuers = load_issuers(path) if path and not self.disabled else {}
        self.issuers = dict(issuers)
        if settings.startup_notices:  # `serve` says these once, in its master, not per worker
            for message in startup_warnings(settings, self.issuers):
                log.warning(message)

    def audience(self, base_url: str, path: str) -> list[str]:
        """The `aud` values a caller may name (any one): the public URL of the endpoint it
        called, under each configured public base URL (or the request's own base)."""
        bases = self.public_base_urls or (base_url,)
        return [base.rstrip("/") + path for base in bases]

    def authenticate(self, authorization: str | None, audience: str | list[str]) -> Caller:
        if self.disabled:
            return Caller()
        audiences = [audience] if isinstance(audience, str) else list(audience)
        try:
            return self._verify(authorization, audiences)
        except AuthRejected as exc:
            # Never the header: it is a credential. The reason is a fixed word; for a wrong
            # audience, the `aud` received and those accepted (URLs, no secret) say what to fix.
            extra: dict[str, Any] = {"auth_rejection": str(exc.reason)}
            if exc.reason is Rejection.AUD_MISMATCH:
                extra["aud_received"] = _claimed_aud(authorization)
                extra["aud_expected"] = audiences
            log.warning("refused a call", extra=extra)
            jwt_rejected(str(exc.reason))
            raise
        except AuthUnavailable as exc:
            jwt_rejected(exc.reason)
            raise

    def _verify(self, authorization: str | None, audience: list[str]) -> Caller:
        token = _bearer(authorization)
        if not self.issuers:
            raise AuthRejected(Rejection.NOT_CONFIGURED)
        parsed = _parse(token)
        header = parsed.header
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise AuthRejected(Rejection.ALG_NOT_ALLOWED)
        iss = parsed.claims.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthRejected(Rejection.UNKNOWN_ISSUER)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthRejected(Rejection.MALFORMED)
        candidates = self._keys(issuer, header.get("jku"), kid)
        claims = self._decode(parsed, alg, candidates, audience, issuer.iss)
        self._check_times(claims)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
            raise AuthRejected(Rejection.MISSING_CLAIM)
        self._remember(issuer.iss, jti, float(claims["exp"]))
        tenant = claims.get("tenant")
        return Caller(issuer=issuer.iss, tenant=tenant if isinstance(tenant, str) else None)

    def _keys(self, issuer: Issuer, jku: Any, kid: str | None) -> list[dict]:
        if jku is not None:
            allowed = issuer.jku_allowed | ({issuer.jwks_url} if issuer.jwks_url else set())
            if not isinstance(jku, str) or jku not in allowed:
                raise AuthRejected(Rejection.JKU_NOT_ALLOWED)
            # Inline keys are pinned: a listed jku is accepted but never fetched.
            url: str | None = jku if issuer.jwks is None else None
        else:
            url = issuer.jwks_url
        if url is None:
            found = _select(_index(issuer.jwks or {}), kid)
        else:
            try:
                found = self.keys.keys_for(url, kid)
            except KeyFetchError:
                raise AuthRejected(Rejection.KEYS_UNAVAILABLE) from None
        if not found:
            raise AuthRejected(Rejection.UNKNOWN_KEY)
        return found

    def _decode(
        self, token: Token, alg: str, candidates: list[dict], audience: list[str], iss: str
    ) -> dict:
        """Claims of `token` checked against the first key of the right type that verifies.

        What `jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=iss,
        leeway=LEEWAY_S, options={"require": ["exp", "iat", "jti", "iss", "aud"]})` (PyJWT 2.15)
        checks, in its order and with its verdicts, on the token `_parse` read once: the
        segments (`_check_form`), the signature (PyJWT's algorithm object), then the claims
        (`_check_claims`). tests/test_auth_decode.py holds the two side by side."""
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
        _check_form(token)
        verifier = VERIFIERS[alg]
        for jwk in usable:
            try:
                key, weak = _public_key(jwk, alg)
                if weak:  # PyJWT warns on every call with a short RSA key; so do we
                    warnings.warn(weak, InsecureKeyLengthWarning, stacklevel=2)
                if verifier.verify(token.signing_input, key, token.signature):
                    break
            except (jwt.PyJWTError, ValueError, TypeError):
                raise AuthRejected(Rejection.MALFORMED) from None
        else:
            raise AuthRejected(Rejection.BAD_SIGNATURE)
        _check_claims(token.claims, audience, iss)
        return token.claims

    @staticmethod
    def _check_times(claims: Mapping[str, Any]) -> None:
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise AuthRejected(Rejection.MALFORMED)
        if exp > time.time() + MAX_LIFETIME_S + LEEWAY_S:
            raise AuthRejected(Rejection.EXP_TOO_FAR)

    def _remember(self, iss: str, jti: str, exp: float) -> None:
        if self.replay is None:
            raise AuthRejected(Rejection.NOT_CONFIGURED)
        try:
            new = self.replay.remember_token(jti_digest(iss, jti), exp + LEEWAY_S)
        except Exception as exc:  # the cause, never the token
            log.warning("JWT replay store unreachable", extra={"cause": describe_error(exc)})
            raise AuthUnavailable() from None
        if not new:
            raise AuthRejected(Rejection.REPLAYED)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthRejected(Rejection.MISSING_TOKEN)
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthRejected(Rejection.MISSING_TOKEN)
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise AuthRejected(Rejection.MALFORMED)
    return token


class Token(NamedTuple):
    """A bearer token read once (`_parse`), not yet verified."""

    header: dict
    claims: dict
    signing_input: bytes  # header and payload segments as sent: what the signature covers
    signature: bytes
    # Every segment is base64url as PyJWT takes it (`_strict_base64url`); when not, the token
    # is refused as malformed, but only where `jwt.decode` would have refused it (`_check_form`)
    well_formed: bool


_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# The last character of 2 (3) characters past a multiple of 4 carries 4 (2) bits that encode
# nothing; they must be zero, so that each byte string has exactly one encoding.
_LAST_CHARACTER = {0: None, 2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


def _strict_base64url(segment: str) -> bool:
    """True when PyJWT 2.15 (`PyJWS._decode_base64url_segment`) takes `segment`: the base64url
    alphabet only, the canonical encoding, at most the '=' padding that completes a multiple of
    4 characters. One C-level scan instead of PyJWT's generator over every character."""
    stripped = segment.rstrip("=")
    padding = len(segment) - len(stripped)
    if padding and (padding > 2 or len(segment) % 4):
        return False
    rest = len(stripped) % 4
    if rest == 1 or _BASE64URL.fullmatch(stripped) is None:
        return False
    last = _LAST_CHARACTER[rest]
    return last is None or stripped[-1] in last


def _segment(segment: str) -> dict:
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _parse(token: str) -> Token:
    """`token` read once: header and claims (JSON objects, else MALFORMED now), signing input,
    signature. Header and claims choose the issuer and key before anything is verified.

    They are decoded leniently (as before: a stray character is skipped), which gives the same
    bytes as PyJWT's strict decoding whenever that succeeds; when it would not, `well_formed`
    is False and `_check_form` refuses the token at the point where `jwt.decode` did, so every
    earlier verdict (unknown issuer, key, ...) stays what it was."""
    head, payload, signature = token.split(".")  # `_bearer` made sure there are three
    try:
        header, claims = _segment(head), _segment(payload)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise AuthRejected(Rejection.MALFORMED) from None
    well_formed = (
        _strict_base64url(head) and _strict_base64url(payload) and _strict_base64url(signature)
    )
    return Token(
        header,
        claims,
        f"{head}.{payload}".encode(),
        base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) if well_formed else b"",
        well_formed,
    )


def _check_form(token: Token) -> None:
    """What PyJWT refuses before it checks the signature (`PyJWS._load`, `_validate_headers`):
    a segment that is not strict base64url, an unencoded payload (`b64: false`: we never pass
    the detached payload it needs), a `crit` header that is not a non-empty list of extensions
    PyJWT supports (only `b64`) and that are present. The `kid` type is checked in `_verify`."""
    header = token.header
    if not token.well_formed or header.get("b64", True) is False:
        raise AuthRejected(Rejection.MALFORMED)
    if "crit" in header:
        crit = header["crit"]
        if not isinstance(crit, list) or not crit:
            raise AuthRejected(Rejection.MALFORMED)
        for extension in crit:
            if not isinstance(extension, str) or extension != "b64" or extension not in header:
                raise AuthRejected(Rejection.MALFORMED)


def _int_claim(value: Any) -> int:
    """A time claim as PyJWT reads it: anything `int()` takes ("123", 1.9, true), else
    MALFORMED."""
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError):
        raise AuthRejected(Rejection.MALFORMED) from None


def _check_claims(claims: Mapping[str, Any], audience: list[str], iss: str) -> None:
    """PyJWT 2.15's `_validate_claims` with our options, in its order and with its verdicts:
    required claims present and not null; `iat`, `nbf` not ahead and `exp` not past (60 s
    leeway, as integers); `iss`; `aud` (a string or a list of strings naming one of ours);
    `sub` and `jti`, when present, strings."""
    for name in ("exp", "iat", "jti", "iss", "aud"):
        if claims.get(name) is None:
            raise AuthRejected(Rejection.MISSING_CLAIM)
    now = time.time()
    if _int_claim(claims["iat"]) > now + LEEWAY_S:
        raise AuthRejected(Rejection.NOT_YET_VALID)
    if "nbf" in claims and _int_claim(claims["nbf"]) > now + LEEWAY_S:
        raise AuthRejected(Rejection.NOT_YET_VALID)
    if _int_claim(claims["exp"]) <= now - LEEWAY_S:
        raise AuthRejected(Rejection.EXPIRED)
    if not isinstance(claims["iss"], str) or claims["iss"] != iss:
        raise AuthRejected(Rejection.UNKNOWN_ISSUER)
    aud = claims["aud"]
    if not aud:
        raise AuthRejected(Rejection.MISSING_CLAIM)
    named = [aud] if isinstance(aud, str) else aud
    if not isinstance(named, list) or any(not isinstance(value, str) for value in named):
        raise AuthRejected(Rejection.AUD_MISMATCH)
    if all(value not in named for value in audience):
        raise AuthRejected(Rejection.AUD_MISMATCH)
    if "sub" in claims and not isinstance(claims["sub"], str):
        raise AuthRejected(Rejection.MALFORMED)
    if not isinstance(claims["jti"], str):
        raise AuthRejected(Rejection.MALFORMED)


def _claimed_aud(authorization: str | None) -> list[str] | str | None:
    """The `aud` an (already refused) token names, for the log: URLs only, never the token.
    Anything but a short string or list of them is reported as its type."""
    try:
        aud = _parse(_bearer(authorization)).claims.get("aud")
    except AuthRejected:
        return None
    values = [aud] if isinstance(aud, str) else aud
    if isinstance(values, list) and all(isinstance(v, str) for v in values):
        return [v[:200] for v in values[:5]]
    return f"<{type(aud).__name__}>"


class ParsedKeys:
    """Public keys parsed from JWKs, once per key and algorithm: parsing a JWK costs more than
    checking a signature with it.

    Looked up by the JWK dict's identity (the issuer's inline keys and a fetched key set hand
    out the same dicts call after call) and confirmed by content: an entry keeps a copy of the
    JWK and is used only while it equals the JWK asked for, so a refreshed key set, or a new
    dict at a reused address, is parsed afresh and never served a stale key. At most `size`
    entries, the oldest dropped first. (It was an `lru_cache` keyed by the JWK serialised with
    `json.dumps(sort_keys=True)` on every call.)"""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: dict[tuple[int, str], tuple[dict, Any, str | None]] = {}
        self._lock = threading.Lock()

    def __call__(self, jwk: dict, alg: str) -> tuple[Any, str | None]:
        """(key, warning): the public key of `jwk` for `alg`'s family (RSA or EC, never an
        HMAC secret), prepared and its curve checked as PyJWT does, and PyJWT's warning for a
        short RSA key (None if none). Raises PyJWT's errors for a key it cannot use."""
        slot = (id(jwk), alg)
        entry = self._entries.get(slot)
        if entry is not None and entry[0] == jwk:
            return entry[1], entry[2]
        family = {"ES": ECAlgorithm, "PS": RSAPSSAlgorithm}.get(alg[:2], RSAAlgorithm)
        key = family.from_jwk(jwk)
        key = key.public_key() if hasattr(key, "private_bytes") else key
        verifier = VERIFIERS[alg]
        key = verifier.prepare_key(key)
        # guarded: pyproject allows PyJWT releases older than the one this follows (2.15)
        check_length = getattr(verifier, "check_key_length", None)
        weak = check_length(key) if check_length is not None else None
        with self._lock:
            if slot not in self._entries and len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            self._entries[slot] = (dict(jwk), key, weak)
        return key, weak

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()


_parsed_key = ParsedKeys()


def _public_key(jwk: dict, alg: str) -> tuple[Any, str | None]:
    """(public key, short-key warning or None) of `jwk` for `alg`: see `ParsedKeys`."""
    return _parsed_key(jwk, alg)


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def startup_warnings(settings: Settings, issuers: Mapping[str, Issuer]) -> list[str]:
    """What an operator must know about authentication when the service starts."""
    if settings.auth_disabled:
        return [
            "AUTHENTICATION IS DISABLED (CDS_AUTH_DISABLED=1): any caller is trusted; "
            "for development on loopback only"
        ]
    if not issuers:
        return [
            "no trusted JWT issuers (CDS_TRUSTED_ISSUERS_FILE): every service and "
            "feedback call will be refused with 401"
        ]
    if not settings.public_base_url:
        return [
            "CDS_PUBLIC_BASE_URL is not set: the expected JWT audience is built from the "
            "request's Host header; set it in production"
        ]
    return []


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to serve unauthenticated on a non-loopback address (contract §6)."""
    if settings.auth_disabled:
        log.warning(startup_warnings(settings, {})[0])
        if not is_loopback(host) and not settings.allow_insecure_bind:
            raise SystemExit(
                f"refusing to serve {host} without authentication: bind to 127.0.0.1, or set "
                "CDS_ALLOW_INSECURE_BIND=1 as well if you really mean it"
            )
