"""Outbound FHIR calls: one pooled HTTP session and one thread pool per app.

Everything that leaves the service for a FHIR server goes through `FhirClient.get_json`, and
every URL passes `check_url` first: the SSRF guard (`ssrf.UrlPolicy`: `CDS_FHIR_ALLOWLIST`,
private ranges on resolved addresses). The session's connections check the addresses again when
they connect and connect only to an address that passed; redirects are never followed.
Failures are `FetchError`s carrying a short, fixed reason; the exception texts of `requests`
are never logged or passed on, because they hold URLs with patient ids.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from .limits import LimitExceeded, check_depth
from .ssrf import Refused, UrlPolicy

if TYPE_CHECKING:
    from cds_service.gather import GatherSettings

T = TypeVar("T")

_CHUNK_BYTES = 64 * 1024


def _warning_or_worse(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


# urllib3 logs every request line ("GET /fhir/Observation?patient=<id> ...") at DEBUG.
_URLLIB3_LOGGER = logging.getLogger("urllib3.connectionpool")


class FetchError(Exception):
    """A FHIR call that gave no usable data; `reason` is short and safe to show or log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_url(url: str, policy: UrlPolicy | None = None) -> None:
    """Refuse a URL before any request is sent to it (`FetchError` with the guard's reason).

    The one choke point for outbound URLs (fhirServer, first queries and `next` links alike):
    http/https with a host, then `policy` (default: `UrlPolicy()`, no allowlist).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        raise FetchError("URL not allowed") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("URL not allowed")
    try:
        (policy or UrlPolicy()).check(url)
    except Refused as refused:
        raise FetchError(refused.reason) from None


class _AddressRefused(Exception):
    """Raised inside a connection attempt; deliberately not an OSError, so neither urllib3
    nor requests retries or rewraps it, and `get_json` sees the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _guarded(connection_cls: type[HTTPConnection], scheme: str, policy: UrlPolicy) -> type:
    """`connection_cls` connecting only to addresses `policy` allows, resolved at connect time.

    TLS still verifies against (and sends SNI for) the host name: only the socket's target
    address is pinned to the checked one.
    """

    class Guarded(connection_cls):  # type: ignore[valid-type, misc]
        def _new_conn(self):  # type: ignore[no-untyped-def]
            try:
                addresses = policy.connect_addresses(scheme, self.host, self.port)
            except Refused as refused:
                raise _AddressRefused(refused.reason) from None
            name, last = self._dns_host, None
            try:
                for address in addresses:
                    self._dns_host = str(address)
                    try:
                        return super()._new_conn()
                    except (NewConnectionError, ConnectTimeoutError) as error:
                        last = error
            finally:
                self._dns_host = name
            assert last is not None
            raise last

    Guarded.__name__ = f"Guarded{connection_cls.__name__}"
    return Guarded


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: UrlPolicy, **kwargs: Any) -> None:
        self._policy = policy  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        http = type(
            "GuardedHTTPPool",
            (HTTPConnectionPool,),
            {"ConnectionCls": _guarded(HTTPConnection, "http", self._policy)},
        )
        https = type(
            "GuardedHTTPSPool",
            (HTTPSConnectionPool,),
            {"ConnectionCls": _guarded(HTTPSConnection, "https", self._policy)},
        )
        self.poolmanager.pool_classes_by_scheme = {"http": http, "https": https}


def server_prefix(base_url: str) -> str:
    """`base_url` with exactly one trailing slash: the prefix every URL on that server has.

    The slash matters: without it `https://ehr/fhir-evil/...` would pass for `https://ehr/fhir`.
    """
    return base_url.rstrip("/") + "/"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def on_server(base_url: str, url: str) -> bool:
    """True when `url` (a `next` link) is on the FHIR server `base_url` (contract §5 Paging):
    the same scheme, host and port, and a path equal to or under the server's path, HAPI
    FHIR's `{fhirServer}?_getpages=…` included. Host names are compared as spelled (no
    resolution); user info and dot segments (`..`, `%2e%2e`) are refused, so the link cannot
    climb out of the server's path once normalised.
    """
    try:
        base, link = urlsplit(base_url), urlsplit(url)
        base_port = base.port or _DEFAULT_PORTS.get(base.scheme.lower())
        link_port = link.port or _DEFAULT_PORTS.get(link.scheme.lower())
    except ValueError:
        return False
    if (
        link.scheme.lower() != base.scheme.lower()
        or not link.hostname
        or link.hostname != base.hostname
        or link_port != base_port
        or link.username is not None
        or link.password is not None
    ):
        return False
    segments = link.path.split("/")
    if any(unquote(s) in (".", "..") for s in segments) or "\\" in link.path:
        return False
    root = base.path.rstrip("/")
    path = link.path
    return path in (root, root + "/") or path.startswith(root + "/")


def next_link(body: Any) -> str | None:
    """The URL of a Bundle's `link` with relation `next`, if any; odd shapes give None."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return None
    links = body.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url.strip():
                return url.strip()
    return None


class FhirClient:
    """Thread-safe FHIR reader shared by all requests of one app; call `close()` at shutdown.

    Cookies are refused: the session is shared across patients, users and EHRs, so a cookie
    one FHIR server sets must never ride along on another request. Environment proxies and
    `.netrc` credentials are ignored (`trust_env=False`) for the same reason: a call without
    `fhirAuthorization` must carry no credentials at all.
    """

    def __init__(
        self,
        max_workers: int = 8,
        policy: UrlPolicy | None = None,
        *,
        observe: Callable[[float, str | None], None] | None = None,
    ) -> None:
        self.policy = policy or UrlPolicy()
        # `observe(seconds, error reason or None)` is told about every GET (metrics).
        self._observe = observe
        # Patient ids travel in our URLs, so urllib3's DEBUG request lines must never reach a
        # handler, whatever level the app logs at. (addFilter is idempotent.)
        _URLLIB3_LOGGER.addFilter(_warning_or_worse)
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        # one connection per worker and host; every connection passes the SSRF guard
        adapter = _GuardedAdapter(self.policy, pool_maxsize=max_workers)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fhir")

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop queued work, wait for running calls (bounded by their timeouts), close sockets."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._session.close()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run `fn` on the client's pool (used by `gather` to query keys in parallel)."""
        return self._executor.submit(fn, *args, **kwargs)

    def search_all(
        self,
        base_url: str,
        url: str,
        *,
        token: str | None,
        deadline: float,
        settings: GatherSettings,
        pages_done: int = 0,
    ) -> list[Any]:
        """GET `url` and follow `next` links; return every page's parsed JSON body in order.

        `pages_done` counts pages already in hand (a prefetched first page), so `max_pages`
        caps the whole chain. Hitting the cap with a `next` still pending is an error, not a
        silent truncation: a missing page could hold the warfarin order. Pages are sequential
        by nature (each names the next).
        """
        bodies: list[Any] = []
        next_url: str | None = url
        while next_url is not None:
            if not on_server(base_url, next_url):
                raise FetchError("next link off server")
            if pages_done >= settings.max_pages:
                raise FetchError("too many pages")
            body = self.get_json(next_url, token=token, deadline=deadline, settings=settings)
            pages_done += 1
            bodies.append(body)
            next_url = next_link(body)
        return bodies

    def get_json(
        self, url: str, *, token: str | None, deadline: float, settings: GatherSettings
    ) -> Any:
        """`_get_json`, timed and reported to `observe` (latency and failure reason)."""
        if self._observe is None:
            return self._get_json(url, token=token, deadline=deadline, settings=settings)
        started = time.perf_counter()
        try:
            body = self._get_json(url, token=token, deadline=deadline, settings=settings)
        except FetchError as error:
            self._observe(time.perf_counter() - started, error.reason)
            raise
        self._observe(time.perf_counter() - started, None)
        return body

    def _get_json(
        self, url: str, *, token: str | None, deadline: float, settings: GatherSettings
    ) -> Any:
        """One GET of FHIR JSON within the deadline and the size cap; no redirects followed.

        The read timeout is the time left until `deadline`; the deadline is checked again
        between chunks so a slow drip cannot outlive it by much.
        """
        check_url(url, self.policy)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("timeout")
        headers = {"Accept": "application/fhir+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            with self._session.get(
                url,
                headers=headers,
                timeout=(min(settings.connect_timeout_s, remaining), remaining),
                stream=True,
                allow_redirects=False,
            ) as response:
                _check_status(response.status_code)
                raw = _read_capped(response, settings.max_response_bytes, deadline)
        except _AddressRefused as refused:
            raise FetchError(refused.reason) from None
        except requests.RequestException as error:
            raise FetchError(_request_failure(error, deadline)) from None
        try:
            check_depth(raw, settings.max_json_depth)  # before the parser sees it
        except LimitExceeded:
            raise FetchError("nested too deeply") from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the stdlib also takes numbers beyond a double (validation.parse_json)
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise FetchError("invalid JSON") from None

    def check_server(self, base_url: str) -> None:
        """`check_url` for a caller's fhirServer (gather runs it before any query)."""
        check_url(server_prefix(base_url), self.policy)


def _check_status(status: int) -> None:
    if 300 <= status < 400:
        raise FetchError("redirect")
    if status == 404:
        raise FetchError("not found")
    if not 200 <= status < 300:
        raise FetchError(f"HTTP {status}")


def _read_capped(response: requests.Response, max_bytes: int, deadline: float) -> bytes:
    """The body, refused as soon as it is known to exceed `max_bytes` (declared or streamed)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError("response too large")
    body = bytearray()
    for chunk in response.iter_content(_CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise FetchError("response too large")
        if time.monotonic() > deadline:
            raise FetchError("timeout")
    return bytes(body)


def _request_failure(error: requests.RequestException, deadline: float) -> str:
    """Short reason for a `requests` error (its own message holds the URL, so it is dropped).

    Past the deadline it is a timeout whatever the type: a read timeout while streaming
    surfaces as a ConnectionError.
    """
    if isinstance(error, requests.Timeout) or time.monotonic() >= deadline:
        return "timeout"
    if isinstance(error, requests.ConnectionError):
        return "connection failed"
    return "request failed"
