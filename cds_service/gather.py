"""Collect the FHIR data a service needs: prefetch first, then the FHIR server, else 412.

CDS Hooks 2.0 prefetch semantics (contract section 2): a key that is absent, or whose value is an
OperationOutcome (or a Bundle holding only OperationOutcomes), is fetched from `fhirServer`; a
`null` key or an empty searchset is "no data" and is not fetched; paginated Bundles are
followed. All fetches of one request share one deadline and run in parallel. Anything that
cannot be obtained is reported per key in `DataUnavailable`, which the API maps to HTTP 412.

Content is untrusted and may be near-FHIR: shapes that cannot be read are skipped and counted,
never raised on. Logs carry key names and timings only (no URLs, ids, tokens or bodies).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from cds_service.fhir_client import FetchError, FhirClient, next_link, on_server

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefetchKey:
    """One advertised prefetch template, plus query parameters used only by our own fetches.

    `include` is kept out of the advertised template because EHRs support only a subset of
    FHIR search in prefetch (no `_include`).
    """

    key: str
    template: str
    include: str | None = None


@dataclass(frozen=True)
class GatherSettings:
    budget_s: float = 3.0  # overall wall-clock budget for all FHIR calls of one request
    connect_timeout_s: float = 1.0
    max_pages: int = 10  # pages per key, the first (or the prefetched one) included
    max_response_bytes: int = 10 * 1024 * 1024  # per response, streamed
    max_workers: int = 8  # sizes FhirClient's pool; read when the client is built
    max_json_depth: int = 64  # deeper FHIR responses are refused (limits.check_depth)
    # distinct `Medication/{id}` reads per call; past it an order's display is read instead,
    # so one record naming thousands of Medications cannot flood the FHIR server or the pool
    max_medication_reads: int = 50


@dataclass(frozen=True)
class Gathered:
    resources: dict[str, list[dict]]  # key -> resources; Bundles flattened, outcomes dropped
    fetched: tuple[str, ...]  # keys for which the FHIR server was queried (incl. next pages)
    skipped: int  # prefetch values and Bundle entries that were not readable objects
    # Medications read with `GET Medication/{id}`, by the reference the orders name them with
    # and by "Medication/{id}"; only those neither contained nor in a Bundle already held.
    medications: Mapping[str, dict] = field(default_factory=dict)


class ServerRefused(Exception):
    """The caller's fhirServer fails the SSRF guard; `reason` names why (the API's 400)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DataUnavailable(Exception):
    """Required data could be obtained neither from prefetch nor from the FHIR server."""

    def __init__(self, missing: Mapping[str, str]) -> None:
        self.missing = dict(missing)
        listed = ", ".join(f"{key} ({reason})" for key, reason in sorted(self.missing.items()))
        super().__init__(f"required data unavailable: {listed}")


# --- template rendering -------------------------------------------------------------------

_TOKEN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")

_USER_TOKENS = {
    "Practitioner": "userPractitionerId",
    "PractitionerRole": "userPractitionerRoleId",
    "Patient": "userPatientId",
    "RelatedPerson": "userRelatedPersonId",
}


def render_template(template: str, request: dict) -> str | None:
    """Fill a prefetch template's CDS Hooks 2.0 tokens; None if any token cannot be resolved.

    Substituted values are percent-encoded with nothing kept safe, so an id holding `&`, `/`,
    `?` or `#` stays one value and cannot add query parameters or path segments. Empty ids
    and dot-only ids are unresolvable: `Patient/` would search every patient and `Patient/..`
    would be normalised into another path.
    """
    context = request.get("context") if isinstance(request, dict) else None
    values = _token_values(context if isinstance(context, dict) else {})
    unresolved = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal unresolved
        value = values.get(match.group(1))
        if value is None:
            unresolved = True
            return ""
        return quote(value, safe="")

    rendered = _TOKEN.sub(substitute, template)
    if unresolved or "{{" in rendered or "}}" in rendered:
        return None
    return rendered


def _token_values(context: dict) -> dict[str, str]:
    """Token name -> raw value: top-level primitive context fields and the user-id tokens."""
    values: dict[str, str] = {}
    for name, value in context.items():
        text = _primitive_text(value)
        if text is not None:
            values[f"context.{name}"] = text
    user = context.get("userId")
    if isinstance(user, str) and user.count("/") == 1:
        resource_type, user_id = user.split("/")
        token = _USER_TOKENS.get(resource_type)
        if token and _primitive_text(user_id) is not None:
            values[token] = user_id
    return values


def _primitive_text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    if not text.strip() or not text.strip("."):
        return None
    return text


# --- reading Bundles and resources -------------------------------------------------------


@dataclass(frozen=True)
class _Read:
    """What one prefetch value or response body holds."""

    resources: list[dict]
    outcomes: list[dict]  # OperationOutcome entries, kept apart from the resources
    skipped: int


def _read(value: dict) -> _Read:
    """Flatten a Bundle's entries (any type, `include` mode kept) or wrap a single resource."""
    if value.get("resourceType") != "Bundle":
        return _Read([value], [], 0)
    entries = value.get("entry")
    if entries is None:
        entries = []
    elif isinstance(entries, dict):  # near-FHIR: a single entry object instead of a list
        entries = [entries]
    elif not isinstance(entries, list):
        return _Read([], [], 1)
    resources: list[dict] = []
    outcomes: list[dict] = []
    skipped = 0
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not _is_resource(resource):
            skipped += 1
        elif resource["resourceType"] == "OperationOutcome":
            outcomes.append(resource)
        else:
            resources.append(resource)
    return _Read(resources, outcomes, skipped)


def _is_resource(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("resourceType"), str)


def _is_error_outcome(outcome: dict) -> bool:
    """An OperationOutcome reporting an error; one with no readable issue counts as an error."""
    issues = outcome.get("issue")
    if not isinstance(issues, list):
        return True
    severities = [issue.get("severity") for issue in issues if isinstance(issue, dict)]
    return not severities or any(s in ("fatal", "error") for s in severities)


def _read_server_bodies(bodies: list[Any]) -> tuple[list[dict], int]:
    """Resources from the FHIR server's pages. An OperationOutcome as the body, or an error
    OperationOutcome inside a Bundle, fails the key: the data may be incomplete. Warnings and
    information outcomes (search.mode `outcome`) are dropped."""
    resources: list[dict] = []
    skipped = 0
    for body in bodies:
        if not _is_resource(body):
            raise FetchError("not a FHIR resource")
        if body["resourceType"] == "OperationOutcome":
            raise FetchError("OperationOutcome")
        read = _read(body)
        if any(_is_error_outcome(o) for o in read.outcomes):
            raise FetchError("OperationOutcome")
        resources.extend(read.resources)
        skipped += read.skipped
    return resources, skipped


# --- referenced Medications (contract §5) -------------------------------------------------

_USE_TYPES = frozenset({"MedicationRequest", "MedicationStatement", "MedicationOrder"})
_MEDICATION_PATH = re.compile(r"(?:^|/)Medication/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


# Uses on file whose product a rule may need: current ones (a past use is history only, and
# its `display` serves the history picture).
_CURRENT_STATUSES = frozenset({"active", "on-hold", "intended"})


def medication_references(resources: Iterable[Any], *, current_only: bool = False) -> list[str]:
    """`medicationReference.reference`s of the medication uses in `resources`, contained
    ("#id") ones left out, in order, once each; with `current_only`, of current uses only."""
    found: dict[str, None] = {}
    for resource in resources:
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(kind, str) or kind not in _USE_TYPES:  # near-FHIR: any shape
            continue
        if current_only:
            status = resource.get("status")
            if not isinstance(status, str) or status not in _CURRENT_STATUSES:
                continue
        ref = resource.get("medicationReference")
        target = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(target, str) and target.strip() and not target.startswith("#"):
            found[target.strip()] = None
    return list(found)


def held_medications(resources: Iterable[Any]) -> set[str]:
    """References that Medication resources already in hand answer: "Medication/{id}"."""
    return {
        f"Medication/{r['id']}"
        for r in resources
        if isinstance(r, dict)
        and r.get("resourceType") == "Medication"
        and isinstance(r.get("id"), str)
    }


def _medication_id(reference: str, fhir_server: str) -> str | None:
    """The id to read for a reference: relative "Medication/{id}", or an absolute URL on
    `fhirServer` (another server's is never read); anything else (urn:uuid…) None."""
    match = _MEDICATION_PATH.search(reference)
    if match is None:
        return None
    if "://" in reference and not on_server(fhir_server, reference):
        return None
    if "://" not in reference and not reference.startswith("Medication/"):
        return None
    return match.group(1)


class _MedicationReads:
    """The call's `GET Medication/{id}` reads: each id read once (the call's cache), on the
    client's pool, with the bearer token and the call's deadline. A failed read is left out:
    the order's `display` is then read as text (facts)."""

    def __init__(
        self,
        client: FhirClient,
        fhir_server: str | None,
        token: str | None,
        deadline: float,
        settings: GatherSettings,
    ) -> None:
        self._client, self._server, self._token = client, fhir_server, token
        self._deadline, self._settings = deadline, settings
        self._lock = threading.Lock()
        self._reads: dict[str, Future[dict | None]] = {}  # id -> its read
        self._wanted: dict[str, str] = {}  # reference -> id

    def request(self, references: Iterable[str], held: set[str]) -> None:
        if not (isinstance(self._server, str) and self._server.strip()):
            return
        for reference in references:
            mid = _medication_id(reference, self._server)
            if mid is None or reference in held or f"Medication/{mid}" in held:
                continue
            with self._lock:
                if mid not in self._reads:
                    if len(self._reads) >= self._settings.max_medication_reads:
                        continue
                    # this host's own pool, under the call's admission (issue 21)
                    self._reads[mid] = self._client.submit_to(self._server, self._read, mid)
                self._wanted[reference] = mid

    def _read(self, mid: str) -> dict | None:
        url = f"{self._server.rstrip('/')}/Medication/{quote(mid, safe='')}"
        try:
            body = self._client.get_json(
                url, token=self._token, deadline=self._deadline, settings=self._settings
            )
        except FetchError:
            return None
        if not (isinstance(body, dict) and body.get("resourceType") == "Medication"):
            return None
        if body.get("id") not in (None, mid):
            return None  # the server answered about another Medication
        return {**body, "id": mid}

    def results(self) -> dict[str, dict]:
        """Every read done by the deadline, by reference and by "Medication/{id}"."""
        with self._lock:
            reads, wanted = dict(self._reads), dict(self._wanted)
        wait_futures(reads.values(), timeout=max(0.0, self._deadline - time.monotonic()))
        found: dict[str, dict] = {}
        for mid, future in reads.items():
            if not future.done():
                future.cancel()
            elif future.exception() is None and future.result() is not None:
                found[f"Medication/{mid}"] = future.result()
        for reference, mid in wanted.items():
            if f"Medication/{mid}" in found:
                found[reference] = found[f"Medication/{mid}"]
        return found


# --- planning and running ----------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What to do for one key: `resources` in hand, then an optional server URL to fetch."""

    resources: list[dict]
    skipped: int
    fetch: str | None = None  # "template": render and fetch; "next": follow next_url
    next_url: str | None = None


def _plan(prefetch: dict, key: str) -> _Plan:
    """Apply the CDS Hooks 2.0 prefetch rules to one key's value."""
    if key not in prefetch:
        return _Plan([], 0, fetch="template")
    value = prefetch[key]
    if value is None:
        return _Plan([], 0)
    if not _is_resource(value):
        return _Plan([], 1, fetch="template")
    if value["resourceType"] == "OperationOutcome":
        return _Plan([], 0, fetch="template")
    read = _read(value)
    if read.outcomes and not read.resources:
        return _Plan([], read.skipped, fetch="template")
    url = next_link(value)
    return _Plan(read.resources, read.skipped, fetch="next" if url else None, next_url=url)


def _fetch_url(fhir_server: str, spec: PrefetchKey, plan: _Plan, request: dict) -> str | None:
    if plan.fetch == "next":
        return plan.next_url
    rendered = render_template(spec.template, request)
    if rendered is None:
        return None
    if spec.include:
        rendered += ("&" if "?" in rendered else "?") + spec.include.lstrip("?&")
    return fhir_server.rstrip("/") + "/" + rendered.lstrip("/")


def _access_token(request: dict) -> str | None:
    auth = request.get("fhirAuthorization")
    token = auth.get("access_token") if isinstance(auth, dict) else None
    return token if isinstance(token, str) and token else None


def _fetch_key(
    client: FhirClient,
    base_url: str,
    url: str,
    pages_done: int,
    token: str | None,
    deadline: float,
    settings: GatherSettings,
    medications: _MedicationReads | None = None,
    held: set[str] | None = None,
) -> tuple[list[dict], int]:
    """Runs on the client's pool: all pages of one key, read with the server rules; the
    Medications its orders reference and its pages do not hold are then read too."""
    bodies = client.search_all(
        base_url, url, token=token, deadline=deadline, settings=settings, pages_done=pages_done
    )
    found, skipped = _read_server_bodies(bodies)
    if medications is not None:
        medications.request(
            medication_references(found, current_only=True),
            (held or set()) | held_medications(found),
        )
    return found, skipped


def _check_server(client: FhirClient, fhir_server: str, deadline: float) -> None:
    """The SSRF guard on fhirServer, before any connection; it resolves the host name, on the
    client's own DNS pool, bounded by its time limit and the budget."""
    try:
        client.check_server_within(fhir_server, deadline)
    except FetchError as error:
        raise ServerRefused(error.reason) from None
    except TimeoutError:
        raise DataUnavailable({"fhirServer": "name resolution timeout"}) from None


def gather(
    request: dict,
    keys: Sequence[PrefetchKey],
    settings: GatherSettings,
    client: FhirClient,
    *,
    arrived: float | None = None,
) -> Gathered:
    """Resources per key, from prefetch or the FHIR server; DataUnavailable names every key
    that could not be obtained (all of them, not the first), with a short reason.

    The budget counts from `arrived` (the request's arrival, `time.monotonic()`), not from
    now: time spent queued for a thread is part of it."""
    started = time.monotonic()
    deadline = (started if arrived is None else arrived) + settings.budget_s
    prefetch = request.get("prefetch")
    if not isinstance(prefetch, dict):
        prefetch = {}
    plans = {spec.key: _plan(prefetch, spec.key) for spec in keys}
    resources = {key: list(plan.resources) for key, plan in plans.items()}
    skipped = sum(plan.skipped for plan in plans.values())
    missing: dict[str, str] = {}
    to_fetch = [spec for spec in keys if plans[spec.key].fetch]

    fhir_server = request.get("fhirServer")
    if to_fetch and not (isinstance(fhir_server, str) and fhir_server.strip()):
        raise DataUnavailable({spec.key: "no fhirServer" for spec in to_fetch})

    token = _access_token(request)
    # Referenced Medications: those the prefetch and drafts name are read at once, beside the
    # key fetches; those a fetched page names, as soon as that key has its pages.
    drafts = _draft_resources(request)
    on_file = [r for found in resources.values() for r in found]
    held = held_medications(on_file + drafts)
    references = medication_references(drafts)  # drafts first: within the cap
    references += medication_references(on_file, current_only=True)
    has_server = isinstance(fhir_server, str) and bool(fhir_server.strip())

    admission: Any = nullcontext()
    reads_allowed = False
    if to_fetch:
        if time.monotonic() >= deadline:  # queued past the budget: not started
            raise DataUnavailable({spec.key: "timeout" for spec in to_fetch})
        _check_server(client, fhir_server, deadline)
        try:
            admission = client.admit(fhir_server)
        except FetchError as error:
            raise DataUnavailable({spec.key: error.reason for spec in to_fetch}) from None
        reads_allowed = True
    elif references and has_server and time.monotonic() < deadline:
        # Only Medication reads: a refused or busy server means reading `display` instead.
        try:
            _check_server(client, fhir_server, deadline)
            admission = client.admit(fhir_server)
            reads_allowed = True
        except (ServerRefused, DataUnavailable, FetchError):
            reads_allowed = False

    medications = _MedicationReads(
        client, fhir_server if reads_allowed else None, token, deadline, settings
    )
    futures: dict[str, Future[tuple[list[dict], int]]] = {}
    with admission:  # this host's share of calls and the worker's FHIR byte cap
        medications.request(references, held)
        for spec in to_fetch:
            plan = plans[spec.key]
            url = _fetch_url(fhir_server, spec, plan, request)
            if url is None:
                missing[spec.key] = "unusable token in template"
                continue
            pages_done = 1 if plan.fetch == "next" else 0
            futures[spec.key] = client.submit_to(
                fhir_server,
                _fetch_key, client, fhir_server, url, pages_done, token, deadline, settings,
                medications, held,
            )  # fmt: skip

        wait_futures(futures.values(), timeout=max(0.0, deadline - time.monotonic()))
        for key, future in futures.items():
            if not future.done():
                future.cancel()
                missing[key] = "timeout"
                continue
            try:
                found, unreadable = future.result()
            except FetchError as error:
                missing[key] = error.reason
                continue
            resources[key].extend(found)
            skipped += unreadable
        read_medications = medications.results()  # within the admission: bytes still counted

    elapsed_ms = (time.monotonic() - started) * 1000
    logger.debug(
        "gather: fetched=%s missing=%s in %.0f ms", sorted(futures), sorted(missing), elapsed_ms
    )
    if missing:
        raise DataUnavailable(missing)
    fetched = tuple(spec.key for spec in keys if spec.key in futures)
    return Gathered(
        resources=resources, fetched=fetched, skipped=skipped, medications=read_medications
    )


def _draft_resources(request: dict) -> list[Any]:
    context = request.get("context")
    drafts = context.get("draftOrders") if isinstance(context, dict) else None
    entries = drafts.get("entry") if isinstance(drafts, dict) else None
    if not isinstance(entries, list):
        return []
    return [e.get("resource") for e in entries if isinstance(e, dict)]
