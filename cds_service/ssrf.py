"""Where the service may send HTTP requests for FHIR data: the SSRF guard (contract §6).

`fhirServer` comes from the caller, so without a guard the service would fetch any URL it is
given, from inside the hospital network. `UrlPolicy.check(url)` decides before any connection:

- `CDS_FHIR_ALLOWLIST` set (URL prefixes): only URLs under one of them; their hosts may resolve
  to private addresses (an internal FHIR server is the usual reason to list one);
- otherwise (the default): `https` to hosts whose every resolved address is public (not
  loopback, private, link-local, shared/CGNAT, multicast, reserved or a cloud metadata
  address), and plain `http` only to loopback;
- always refused: credentials in the URL, `.`/`..` path segments, cloud metadata, unspecified
  and multicast addresses (also when an allowlisted name resolves to them).

Addresses are those the name resolves to, and they are checked again when a connection is
opened (`connect_addresses`, used by `fhir_client`'s connection classes), and the connection
goes to an address that passed, so a name that re-resolves elsewhere (DNS rebinding) cannot slip
through. Redirects are never followed (`fhir_client`), so there is no further hop to check.
`resolve` is the one place names are resolved; tests replace it with a stub.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}

# Instance metadata services: AWS/GCP/Azure/OpenStack, AWS ECS, AWS IPv6, Alibaba, Oracle.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """A URL or address the service will not contact; `reason` is short and safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the system resolver). Tests replace this function."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in out:
            out.append(address)
    return out


def _embedded_v4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, 6to4, Teredo or NAT64 IPv6 address."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def never_allowed(address: IPAddress) -> str | None:
    """Refused in every mode, allowlisted or not."""
    for a in filter(None, (_embedded_v4(address), address)):
        if a in METADATA:
            return "cloud metadata address"
        if a.is_unspecified:
            return "unspecified address"
        if a.is_multicast:
            return "multicast address"
    return None


def non_public(address: IPAddress) -> str | None:
    """Why `address` is not a public internet address, or None when it is one."""
    reason = never_allowed(address)
    if reason:
        return reason
    for a in filter(None, (_embedded_v4(address), address)):
        if a.is_loopback:
            return "loopback address"
        if a.is_link_local:
            return "link-local address"
        if isinstance(a, ipaddress.IPv4Address) and a in SHARED:
            return "shared (CGNAT) address"
        if a.is_reserved:
            return "reserved address"
        if a.is_private:
            return "private address"
        if not a.is_global:
            return "reserved address"
    return None


def _is_loopback(address: IPAddress) -> bool:
    inner = _embedded_v4(address)
    return address.is_loopback or (inner is not None and inner.is_loopback)


@dataclass(frozen=True)
class _Url:
    scheme: str
    host: str
    port: int
    path: str

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = DEFAULT_PORTS[self.scheme] == self.port
        return f"{self.scheme}://{host}" + ("" if default else f":{self.port}")


def _parse(url: str) -> _Url:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("URL not allowed") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise Refused("URL not allowed")
    if parts.username is not None or parts.password is not None:
        raise Refused("credentials in URL")
    if any(unquote(seg) in (".", "..") for seg in parts.path.split("/")):
        raise Refused("dot segments in path")
    host = parts.hostname.lower().rstrip(".")
    return _Url(scheme, host, port or DEFAULT_PORTS[scheme], parts.path)


@dataclass(frozen=True)
class UrlPolicy:
    """The outbound URL rules of one app. `allowlist` empty: the default rules."""

    allowlist: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Fail at start, not per request, on a prefix that can never match.
        for prefix in self.allowlist:
            _parse(prefix)

    def check(self, url: str) -> None:
        """Raise `Refused` naming why `url` must not be fetched; resolves its host."""
        target = _parse(url)
        allowlisted = self._allowlisted(target)
        if self.allowlist and not allowlisted:
            raise Refused("not on CDS_FHIR_ALLOWLIST")
        self._addresses(target.scheme, target.host, target.port, allowlisted=allowlisted)

    def connect_addresses(self, scheme: str, host: str, port: int) -> list[IPAddress]:
        """The addresses a connection to `host` may use, checked now; `Refused` if none."""
        host = host.strip("[]").lower().rstrip(".")
        allowlisted = bool(self.allowlist) and any(
            _parse(p).origin == _Url(scheme, host, port, "/").origin for p in self.allowlist
        )
        if self.allowlist and not allowlisted:
            raise Refused("not on CDS_FHIR_ALLOWLIST")
        return self._addresses(scheme, host, port, allowlisted=allowlisted)

    def _allowlisted(self, target: _Url) -> bool:
        for prefix in self.allowlist:
            p = _parse(prefix)
            if p.origin != target.origin:
                continue
            base = p.path.rstrip("/")
            if not base or target.path == base or target.path.startswith(base + "/"):
                return True
        return False

    def _addresses(
        self, scheme: str, host: str, port: int, *, allowlisted: bool
    ) -> list[IPAddress]:
        addresses = _resolve(host, port)
        if not addresses:
            raise Refused("host name does not resolve")
        for address in addresses:
            reason = never_allowed(address) if allowlisted else self._default_rule(scheme, address)
            if reason:
                raise Refused(reason)
        return addresses

    @staticmethod
    def _default_rule(scheme: str, address: IPAddress) -> str | None:
        if scheme == "http":
            fatal = never_allowed(address)
            if fatal:
                return fatal
            return None if _is_loopback(address) else "plain http is allowed only to loopback"
        return non_public(address)


def _resolve(host: str, port: int) -> Sequence[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    return resolve(host, port)  # looked up at call time so that tests can replace it
