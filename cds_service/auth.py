"""Who may call the service and its feedback endpoint (contract §6).

JWT verification per CDS Hooks 2.0 is its own piece of work (issue 6). Until it exists the
service fails closed: unless `CDS_AUTH_DISABLED=1`, every service and feedback call is refused
with 401. Discovery stays public.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from .config import Settings
from .errors import Unauthorized
from .metrics import jwt_rejected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    issuer: str | None = None
    tenant: str | None = None


def authenticate(authorization: str | None, settings: Settings) -> Caller:
    if settings.auth_disabled:
        return Caller()
    # Never log the header itself: it is a credential.
    log.warning("refused a call: JWT verification is not configured on this service")
    jwt_rejected("not_configured")
    raise Unauthorized()


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings) -> None:
    """Refuse to serve unauthenticated on a non-loopback address (contract §6)."""
    if settings.auth_disabled:
        log.warning(
            "AUTHENTICATION IS DISABLED (CDS_AUTH_DISABLED=1): any caller is trusted; "
            "for development on loopback only"
        )
        if not is_loopback(host) and not settings.allow_insecure_bind:
            raise SystemExit(
                f"refusing to serve {host} without authentication: bind to 127.0.0.1, or set "
                "CDS_ALLOW_INSECURE_BIND=1 as well if you really mean it"
            )
