"""Outbound FHIR calls: one pooled HTTP session and one thread pool per app.

Everything that leaves the service for a FHIR server goes through `FhirClient.get_json`, and
every URL passes `check_url` first: the SSRF guard (`ssrf.UrlPolicy`: `CDS_FHIR_ALLOWLIST`,
private ranges on resolved addresses). The session's connections check the addresses again when
they connect and connect only to an address that passed; redirects are never followed.
Failures are `FetchError`s carrying a short, fixed reason; the exception texts of `requests`
are never logged or passed on, because they hold URLs with patient ids.

Isolation (contract §6): one slow or huge FHIR server must not slow calls that do not use it.
- `admit(base_url)`: at most `max_calls_per_host` calls of this worker gather from one
  host at once; the next is refused at once ("fhirServer busy"), so a slow host can hold
  only that many request threads;
- `submit_to(base_url, ...)`: each host's GETs run on a pool of its own
  (`max_gets_per_host` threads; the least recently used of `max_hosts` pools is retired), so
  a host that does not answer queues only its own work, and queued work past its deadline
  is refused when it starts (`_get_json`);
- `check_server_within`: the DNS/SSRF check runs on its own small pool, bounded by
  `dns_timeout_s` and the call's deadline;
- the FHIR response bytes all calls of this worker hold at once are capped
  (`max_held_bytes`): a read that would pass the cap fails ("responses over memory cap").
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import logging
import threading
import time
from collections import OrderedDict
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
# Larger bodies go to the stdlib parser: orjson builds a whole document tree first and peaked
# at about 14 times the text (143 MB for a 10 MB Bundle) against the stdlib's 2.6 times,
# and is no faster there (measured: README, "Resilience").
ORJSON_MAX_BYTES = 128 * 1024


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


def _is_address(url: str) -> bool:
    try:
        ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return False
    return True


def host_key(url: str) -> str:
    """`scheme://host:port` of a URL: the unit of FHIR isolation."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return url
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


class _Held:
    """FHIR response bytes held by one call, within the worker's cap (`_HELD`: per call)."""

    def __init__(self, client: FhirClient) -> None:
        self._client = client
        self.taken = 0
        self.released = False

    def take(self, count: int) -> None:
        client = self._client
        with client._held_lock:
            if self.released:  # the call is over (a read it gave up on): stop reading
                raise FetchError("timeout")
            if client.held_bytes + count > client.max_held_bytes:
                raise FetchError("responses over memory cap")
            client.held_bytes += count
            self.taken += count

    def release(self) -> None:
        with self._client._held_lock:
            self._client.held_bytes -= self.taken
            self.taken = 0
            self.released = True


_HELD: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("fhir_held", default=None)


class _Admission:
    """A call admitted to a host (`FhirClient.admit`); leaving it frees its slot and bytes."""

    def __init__(self, client: FhirClient, host: str) -> None:
        self._client = client
        self._host = host
        self._held = _Held(client)
        self._token: contextvars.Token | None = None

    def __enter__(self) -> _Admission:
        self._token = _HELD.set(self._held)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _HELD.reset(self._token)
        self._held.release()
        self._client._leave(self._host)


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
        max_calls_per_host: int = 8,
        max_gets_per_host: int = 8,
        dns_timeout_s: float = 1.0,
        max_held_bytes: int = 32 * 1024 * 1024,
        max_hosts: int = 32,
    ) -> None:
        self.policy = policy or UrlPolicy()
        self.max_calls_per_host = max_calls_per_host
        self.max_gets_per_host = max_gets_per_host
        self.dns_timeout_s = dns_timeout_s
        self.max_held_bytes = max_held_bytes
        self.max_hosts = max_hosts
        self.held_bytes = 0
        self._held_lock = threading.Lock()
        self._calls: dict[str, int] = {}  # host -> calls gathering from it now
        self._host_pools: OrderedDict[str, ThreadPoolExecutor] = OrderedDict()
        self._lock = threading.Lock()
        self._dns = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fhir-dns")
        # `observe(seconds, error reason or None)` is told about every GET (metrics).
        self._observe = observe
        # Patient ids travel in our URLs, so urllib3's DEBUG request lines must never reach a
        # handler, whatever level the app logs at. (addFilter is idempotent.)
        _URLLIB3_LOGGER.addFilter(_warning_or_worse)
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        # one connection per pool thread and host; every connection passes the SSRF guard
        adapter = _GuardedAdapter(self.policy, pool_maxsize=max(max_workers, max_gets_per_host))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fhir")

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop queued work, wait for running calls (bounded by their timeouts), close sockets."""
        with self._lock:
            pools, self._host_pools = list(self._host_pools.values()), OrderedDict()
        for pool in [self._executor, self._dns, *pools]:
            pool.shutdown(wait=True, cancel_futures=True)
        self._session.close()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run `fn` on the client's pool (used by `gather` to query keys in parallel)."""
        return self._executor.submit(fn, *args, **kwargs)

    def admit(self, base_url: str) -> _Admission:
        """Admit one call gathering from `base_url`'s host, or refuse it at once ("fhirServer
        busy") when `max_calls_per_host` calls already do. Use the result as a context: its
        response bytes count against the worker's cap until it ends."""
        host = host_key(base_url)
        with self._lock:
            if self._calls.get(host, 0) >= self.max_calls_per_host:
                raise FetchError("fhirServer busy")
            self._calls[host] = self._calls.get(host, 0) + 1
        return _Admission(self, host)

    def _leave(self, host: str) -> None:
        with self._lock:
            self._calls[host] -= 1
            if not self._calls[host]:
                del self._calls[host]

    def submit_to(self, base_url: str, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Run `fn` on the pool of `base_url`'s host, in the caller's context (its byte cap)."""
        host = host_key(base_url)
        with self._lock:
            pool = self._host_pools.get(host)
            if pool is None:
                pool = ThreadPoolExecutor(
                    max_workers=self.max_gets_per_host, thread_name_prefix="fhir-host"
                )
                self._host_pools[host] = pool
                if len(self._host_pools) > self.max_hosts:  # retire the least recently used
                    _, retired = self._host_pools.popitem(last=False)
                    retired.shutdown(wait=False)
            self._host_pools.move_to_end(host)
        return pool.submit(contextvars.copy_context().run, fn, *args)

    def check_server_within(self, base_url: str, deadline: float) -> None:
        """`check_server` on the DNS pool, waiting at most `dns_timeout_s` and until `deadline`;
        `TimeoutError` when the name is not resolved by then. An address needs no lookup:
        checked here, so names that hang the pool cannot hold it up."""
        if _is_address(base_url):
            self.check_server(base_url)
            return
        check = self._dns.submit(self.check_server, base_url)
        try:
            check.result(timeout=max(0.0, min(self.dns_timeout_s, deadline - time.monotonic())))
        except TimeoutError:
            check.cancel()
            raise

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
        if len(raw) <= ORJSON_MAX_BYTES:
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
    held = _HELD.get()
    for chunk in response.iter_content(_CHUNK_BYTES):
        if held is not None:
            held.take(len(chunk))
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
