"""Paging as real servers do it (issue 15, item 2; contract §5 "Paging").

A `next` link is followed when it has the same scheme, host and port as `fhirServer` and a
path equal to or under its path (HAPI FHIR's `{fhirServer}?_getpages=…` included), within the
page cap and the time budget; any other link is refused ("next link off server").
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from cds_service.fhir_client import FhirClient, on_server
from cds_service.gather import DataUnavailable, GatherSettings, PrefetchKey, gather

from .fhir_stub import FhirStub, searchset

BASE = "https://hapi.example.org/baseR4"
KEY = (PrefetchKey("conditions", "Condition?patient={{context.patientId}}"),)
FAST = GatherSettings(budget_s=2.0)


@pytest.mark.parametrize(
    ("link", "followed"),
    [
        (f"{BASE}?_getpages=9d5c&_getpagesoffset=20&_count=20&_bundletype=searchset", True),
        (f"{BASE}/?_getpages=9d5c&_getpagesoffset=20", True),
        (f"{BASE}/Condition?patient=p1&_page=2", True),
        (f"{BASE}/Condition/_search?_page=2", True),
        ("https://hapi.example.org:443/baseR4?_getpages=9d5c", True),  # the default port spelled
        ("HTTPS://hapi.example.org/baseR4?_getpages=9d5c", True),  # scheme case
        ("https://HAPI.example.org/baseR4?_getpages=9d5c", True),  # host names are case-blind
        ("http://hapi.example.org/baseR4?_getpages=9d5c", False),  # other scheme
        ("https://hapi.example.org:8443/baseR4?_getpages=9d5c", False),  # other port
        ("https://other.example.org/baseR4?_getpages=9d5c", False),  # other host
        ("https://hapi.example.org.evil.example/baseR4?_getpages=9d5c", False),
        ("https://hapi.example.org/baseR4-evil?_getpages=9d5c", False),  # prefix, not under
        ("https://hapi.example.org/?_getpages=9d5c", False),  # above the server's path
        ("https://hapi.example.org/baseR4/../admin?x=1", False),  # climbs out once normalised
        ("https://hapi.example.org/baseR4/%2e%2e/admin", False),
        ("https://user:pw@hapi.example.org/baseR4?_getpages=1", False),  # user info
        ("/baseR4?_getpages=9d5c", False),  # relative: no scheme, host or port
        ("ftp://hapi.example.org/baseR4", False),
        ("https://hapi.example.org:99999/baseR4", False),  # unreadable port
    ],
)
def test_which_next_links_are_on_the_server(link, followed):
    assert on_server(BASE, link) is followed
    assert on_server(BASE + "/", link) is followed  # fhirServer with a trailing slash


def test_a_server_at_the_root_takes_any_path_on_it():
    assert on_server("https://fhir.example.org", "https://fhir.example.org?_getpages=1")
    assert on_server("https://fhir.example.org/", "https://fhir.example.org/Condition?p=2")


def _request(server: str, prefetch: dict | None = None) -> dict:
    body = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/doc-1", "patientId": "p1"},
        "fhirServer": server,
        "fhirAuthorization": {"access_token": "tok", "token_type": "Bearer"},
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


PAGES = [
    [{"resourceType": "Condition", "id": f"c{n}"}, {"resourceType": "Condition", "id": f"d{n}"}]
    for n in range(1, 4)
]


@pytest.fixture
def fhir():
    with FhirClient(max_workers=4) as client:
        yield client


@pytest.mark.parametrize("prefetched", [False, True], ids=["fetched", "prefetched-first-page"])
def test_hapi_getpages_links_are_followed_with_the_token(fhir, prefetched):
    with FhirStub() as stub:
        stub.add_hapi_pages("Condition", PAGES)
        prefetch = None
        if prefetched:
            first = searchset(PAGES[0], next_url=f"{stub.base_url}?_getpages=c0ffee&_getpagesoffset=2")
            prefetch = {"conditions": first}
        result = gather(_request(stub.base_url, prefetch), KEY, FAST, fhir)
        seen = stub.requests
    assert [r["id"] for r in result.resources["conditions"]] == ["c1", "d1", "c2", "d2", "c3", "d3"]
    assert [r.path for r in seen] == (["", ""] if prefetched else ["Condition", "", ""])
    assert [r.query.get("_getpagesoffset") for r in seen if r.path == ""] == [["2"], ["4"]]
    assert {r.authorization for r in seen} == {"Bearer tok"}


def test_hapi_pages_keep_the_page_cap(fhir):
    with FhirStub() as stub:
        stub.add_hapi_pages("Condition", PAGES)
        with pytest.raises(DataUnavailable) as caught:
            gather(_request(stub.base_url), KEY, replace(FAST, max_pages=2), fhir)
        assert len(stub.requests) == 2
    assert caught.value.missing == {"conditions": "too many pages"}


def test_hapi_pages_keep_the_time_budget(fhir):
    with FhirStub() as stub:
        stub.add_hapi_pages("Condition", PAGES)
        stub.delay_s = 0.3
        with pytest.raises(DataUnavailable) as caught:
            gather(_request(stub.base_url), KEY, replace(FAST, budget_s=0.5), fhir)
    assert caught.value.missing == {"conditions": "timeout"}


def test_a_next_link_to_another_host_stays_refused(fhir):
    with FhirStub() as stub:
        port = stub.base_url.split(":")[2].split("/")[0]
        stub.add("Condition", searchset(PAGES[0], next_url=f"http://localhost:{port}/fhir?_getpages=1"))
        with pytest.raises(DataUnavailable) as caught:
            gather(_request(stub.base_url), KEY, FAST, fhir)
        assert len(stub.requests) == 1
    assert caught.value.missing == {"conditions": "next link off server"}
