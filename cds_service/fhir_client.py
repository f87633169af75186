"""Outbound FHIR calls: one pooled HTTP session and one thread pool per app.

Everything that leaves the service for a FHIR server goes through `FhirClient.get_json`, and
every URL passes `check_url` first: that is the single place where a later SSRF guard
(`CDS_FHIR_ALLOWLIST`, private ranges) plugs in. Failures are `FetchError`s carrying a short,
fixed reason; the exception texts of `requests` are never logged or passed on, because they
hold URLs with patient ids.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

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


def check_url(url: str) -> None:
    """Refuse a URL before any request is sent to it.

    Today only http/https with a host are allowed. This is deliberately the one choke point
    for outbound URLs (first queries and `next` links alike) so the SSRF guard can live here.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        raise FetchError("URL not allowed") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("URL not allowed")


def server_prefix(base_url: str) -> str:
    """`base_url` with exactly one trailing slash: the prefix every URL on that server has.

    The slash matters: without it `https://ehr/fhir-evil/...` would pass for `https://ehr/fhir`.
    """
    return base_url.rstrip("/") + "/"


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
        *,
        observe: Callable[[float, str | None], None] | None = None,
    ) -> None:
        # `observe(seconds, error reason or None)` is told about every GET (metrics).
        self._observe = observe
        # Patient ids travel in our URLs, so urllib3's DEBUG request lines must never reach a
        # handler, whatever level the app logs at. (addFilter is idempotent.)
        _URLLIB3_LOGGER.addFilter(_warning_or_worse)
        self._session = requests.Session()
        self._session.trust_env = False
        self._session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        adapter = HTTPAdapter(pool_maxsize=max_workers)  # one connection per worker and host
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
        prefix = server_prefix(base_url)
        bodies: list[Any] = []
        next_url: str | None = url
        while next_url is not None:
            if not next_url.startswith(prefix):
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
        check_url(url)
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
        except requests.RequestException as error:
            raise FetchError(_request_failure(error, deadline)) from None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise FetchError("invalid JSON") from None


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
