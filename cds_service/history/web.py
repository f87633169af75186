"""The history page as a SMART on FHIR app: EHR launch, authorization, then `/history`.

`GET /launch?iss=…&launch=…` (the EHR opens it) → discovery at
`{iss}/.well-known/smart-configuration` → redirect to the authorization endpoint with PKCE
(S256), a fresh `state`, `aud=iss`, the launch id and the scopes below → `GET /history/callback`
checks `state`, exchanges the code (authlib's OAuth2 client; public client, PKCE) → the token
and patient id are kept server-side (`sessions.py`) → `GET /history` reads the patient's record
from `iss` with the token and renders the page.

Only issuers listed in `CDS_SMART_ALLOWED_ISSUERS` are contacted. Every failure is a short HTML
page with a 4xx (or 502 when the EHR's servers fail), never a 500; nothing from the query
string, the token or the record is logged.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Flask, Response, current_app, redirect, request, session, url_for
from sqlalchemy.exc import SQLAlchemyError

from ..config import Settings
from ..engine import Runtime
from ..fhir_client import FetchError, check_url
from ..gather import DataUnavailable, gather
from ..store import StoreUnavailable
from .bands import bands_for
from .picture import picture_from_facts
from .records import facts_from_gathered, server_keys, server_request
from .render import render_error, render_page
from .sessions import SessionStore

if TYPE_CHECKING:
    from authlib.integrations.requests_client import OAuth2Session

log = logging.getLogger(__name__)
bp = Blueprint("history", __name__)

SCOPES = (
    "launch patient/Observation.read patient/MedicationRequest.read "
    "patient/MedicationStatement.read patient/Condition.read"
)
LAUNCH_PATH = "/launch"
CALLBACK_PATH = "/history/callback"
HISTORY_PATH = "/history"
SESSION_FIELD = "smart"
TIMEOUT_S = 10.0  # discovery and token exchange
_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def launch_url(settings: Settings) -> str | None:
    """The absolute launch URL EHRs open (cards link to it); None without a public base URL."""
    if not settings.public_base_url:
        return None
    return settings.public_base_url.rstrip("/") + LAUNCH_PATH


def _settings() -> Settings:
    return current_app.extensions["vitd.settings"]


def _runtime() -> Runtime:
    return current_app.extensions["vitd.runtime"]


def _sessions() -> SessionStore:
    return current_app.extensions["vitd.smart_sessions"]


def _now() -> datetime:
    return datetime.now(UTC)


def _page(status: int, body: str) -> Response:
    response = Response(body, status=status, mimetype="text/html")
    response.headers.update(PAGE_HEADERS)
    return response


def _error(status: int, heading: str, message: str, hint: str | None = None) -> Response:
    log.info("history page refused", extra={"status": status, "reason": heading})
    return _page(status, render_error(heading, message, hint))


RELAUNCH = "Open the Vitamin D history again from the patient's chart in the EHR."


def _secure(url: str) -> bool:
    """https, or http on loopback only (codes and tokens never cross a network in clear)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def _discover(iss: str) -> dict[str, str]:
    """authorization_endpoint and token_endpoint from the issuer's smart-configuration."""
    runtime = _runtime()
    body = runtime.fhir.get_json(
        f"{iss}/.well-known/smart-configuration",
        token=None,
        deadline=time.monotonic() + TIMEOUT_S,
        settings=runtime.gather_settings,
    )
    endpoints = {}
    for name in ("authorization_endpoint", "token_endpoint"):
        value = body.get(name) if isinstance(body, dict) else None
        if not isinstance(value, str) or not _secure(value):
            raise FetchError(f"no usable {name}")
        check_url(value, runtime.fhir.policy)  # the SSRF guard of every outbound call
        endpoints[name] = value
    return endpoints


def _client(settings: Settings) -> OAuth2Session:
    # authlib is imported on first use: workers of a service without SMART never load it.
    from authlib.integrations.requests_client import OAuth2Session

    client = OAuth2Session(
        client_id=settings.smart_client_id,
        scope=SCOPES,
        redirect_uri=settings.public_base_url.rstrip("/") + CALLBACK_PATH,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",  # public client: PKCE instead of a secret
    )
    client.trust_env = False  # no proxies or .netrc credentials from the environment
    return client


@bp.get(LAUNCH_PATH)
def launch():
    settings = _settings()
    if not settings.smart_enabled:
        return _error(404, "not configured", "SMART launch is not configured on this service.")
    iss = (request.args.get("iss") or "").strip().rstrip("/")
    launch_id = request.args.get("launch") or ""
    if not iss or not launch_id:
        return _error(
            400,
            "not an EHR launch",
            "This page must be opened by the EHR, which passes iss and launch.",
            RELAUNCH,
        )
    if iss not in settings.smart_allowed_issuers:
        return _error(
            403,
            "EHR not allowed",
            "The EHR that opened this page is not one this service is configured to trust.",
            "Ask the service's administrators to add it to CDS_SMART_ALLOWED_ISSUERS.",
        )
    try:
        endpoints = _discover(iss)
    except FetchError as error:
        return _error(
            502,
            "EHR unreachable",
            f"The EHR's SMART configuration could not be read ({error.reason}).",
            RELAUNCH,
        )
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)  # PKCE: 64 chars
    client = _client(settings)
    url, _ = client.create_authorization_url(
        endpoints["authorization_endpoint"],
        state=state,
        code_verifier=verifier,
        aud=iss,
        launch=launch_id,
    )
    client.close()
    now = _now()
    session.clear()
    session[SESSION_FIELD] = _sessions().create(
        {
            "iss": iss,
            "state": state,
            "verifier": verifier,
            "token_endpoint": endpoints["token_endpoint"],
        },
        now=now,
    )
    response = redirect(url, code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get(CALLBACK_PATH)
def callback():
    settings = _settings()
    if not settings.smart_enabled:
        return _error(404, "not configured", "SMART launch is not configured on this service.")
    now = _now()
    key = session.get(SESSION_FIELD)
    data = _sessions().get(key, now=now)
    if data is None or "state" not in data:
        return _error(
            400,
            "no launch in progress",
            "This browser has no launch in progress (it expired, or cookies are blocked).",
            RELAUNCH,
        )
    state = request.args.get("state") or ""
    if not hmac.compare_digest(state.encode("utf-8"), data["state"].encode("utf-8")):
        return _error(
            400,
            "launch could not be verified",
            "The answer from the EHR does not belong to the launch started here (state mismatch).",
            RELAUNCH,
        )
    if "error" in request.args:
        code = request.args.get("error") or ""
        shown = code if _ERROR_CODE.match(code) else "error"
        _sessions().delete(key)
        return _error(
            403,
            "access not granted",
            f"The EHR did not grant access to the patient's record ({shown}).",
            RELAUNCH,
        )
    code = request.args.get("code")
    if not code:
        return _error(400, "no authorization code", "The EHR sent no authorization code.", RELAUNCH)
    token = _exchange(settings, data, code)
    if isinstance(token, Response):
        return token
    access_token, patient = token.get("access_token"), token.get("patient")
    if not isinstance(access_token, str) or not access_token:
        return _error(502, "no access token", "The EHR's token answer held no access token.")
    if not isinstance(patient, str) or not patient.strip():
        return _error(
            400,
            "no patient in context",
            "The EHR gave no patient for this launch; open it from a patient's chart.",
            RELAUNCH,
        )
    expires_in = token.get("expires_in")
    lifetime = expires_in if isinstance(expires_in, int | float) and expires_in > 0 else 3600
    expires_at = min(now + timedelta(seconds=lifetime), now + timedelta(hours=1))
    _sessions().replace(
        key,
        {"iss": data["iss"], "access_token": access_token, "patient": patient.strip()},
        now=now,
        expires_at=expires_at,
    )
    response = redirect(url_for("history.history"), code=302)
    response.headers["Cache-Control"] = "no-store"
    return response


def _exchange(settings: Settings, data: dict[str, Any], code: str) -> dict | Response:
    """The token answer for `code`, or an error page. Exception texts are never shown or logged
    (they can hold the code or the token)."""
    from authlib.integrations.base_client.errors import OAuthError

    client = _client(settings)
    try:
        check_url(data["token_endpoint"], _runtime().fhir.policy)
        return dict(
            client.fetch_token(
                data["token_endpoint"],
                grant_type="authorization_code",
                code=code,
                code_verifier=data["verifier"],
                timeout=TIMEOUT_S,
                allow_redirects=False,
            )
        )
    except OAuthError as error:
        shown = error.error if _ERROR_CODE.match(str(error.error or "")) else "error"
        return _error(
            403,
            "access not granted",
            f"The EHR refused to issue a token ({shown}).",
            RELAUNCH,
        )
    except (FetchError, requests.RequestException, ValueError):
        return _error(502, "EHR unreachable", "The EHR's token endpoint did not answer usably.")
    finally:
        client.close()


@bp.get(HISTORY_PATH)
def history():
    settings = _settings()
    if not settings.smart_enabled:
        return _error(404, "not configured", "SMART launch is not configured on this service.")
    now = _now()
    data = _sessions().get(session.get(SESSION_FIELD), now=now)
    if data is None or "access_token" not in data:
        return _error(401, "not launched", "This page opens from the patient's chart.", RELAUNCH)
    runtime = _runtime()
    try:
        gathered = gather(
            server_request(data["patient"], data["iss"], data["access_token"]),
            server_keys(),
            runtime.gather_settings,
            runtime.fhir,
        )
    except DataUnavailable as exc:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(exc.missing.items()))
        return _error(
            502, "record unavailable", f"The EHR's FHIR server did not answer ({reasons})."
        )
    facts = facts_from_gathered(gathered, data["patient"], now=now)
    return _page(200, render_page(picture_from_facts(facts, bands_for(runtime.guideline))))


@bp.errorhandler(SQLAlchemyError)
@bp.errorhandler(StoreUnavailable)
def _store_down(error: Exception):
    cause = error.reason if isinstance(error, StoreUnavailable) else type(error).__name__
    log.error("history: session store unavailable (%s)", cause)
    return _error(
        503, "service unavailable", "The service cannot keep sessions right now.", RELAUNCH
    )


def register(app: Flask, settings: Settings, runtime: Runtime) -> None:
    """Mount the SMART app; with SMART configured the session cookie is signed and server-side
    sessions live in the store."""
    if settings.smart_enabled:
        app.secret_key = settings.secret_key
        secure = (settings.public_base_url or "").startswith("https://")
        app.config.update(
            SESSION_COOKIE_NAME="vitd_history",
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SECURE=secure,
            # Inside an EHR's iframe the cookie is third-party: that needs None + Secure.
            SESSION_COOKIE_SAMESITE="None" if secure else "Lax",
            PERMANENT_SESSION_LIFETIME=timedelta(hours=1),
        )
        app.extensions["vitd.smart_sessions"] = SessionStore(
            runtime.store, settings.secret_key or ""
        )
    app.register_blueprint(bp)
