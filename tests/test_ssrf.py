"""The SSRF guard on fhirServer (contract §6, issue 6).

Names are resolved by a stub (`ssrf.resolve` is replaced for every test here) and the only
servers contacted are loopback stubs; `urllib3`'s socket opener is watched so a test can prove
that no connection was attempted. Nothing here sends traffic off this machine.
"""

from __future__ import annotations

import ipaddress
import json

import pytest
import urllib3.util.connection

from cds_service import ssrf
from cds_service.config import ConfigError, Settings
from cds_service.fhir_client import FetchError, FhirClient, _AddressRefused, check_url
from cds_service.ssrf import Refused, UrlPolicy

from .builders import PREFETCH_KEYS, hook_request, null_prefetch
from .fhir_stub import FhirStub, Reply, searchset

NAMES = {
    "fhir.example.org": ["8.8.8.8"],
    "fhir.internal.test": ["10.1.2.3"],
    "mixed.test": ["8.8.8.8", "10.0.0.5"],
    "metadata.test": ["169.254.169.254"],
    "v6private.test": ["fd12::1"],
    "loop.test": ["127.0.0.1"],
    "2130706433": ["127.0.0.1"],  # what the system resolver makes of a decimal IPv4
}


@pytest.fixture(autouse=True)
def resolver(monkeypatch):
    """Stub DNS: the names above, nothing else; every lookup is recorded."""
    lookups: list[str] = []

    def resolve(host: str, port: int):
        lookups.append(host)
        return [ipaddress.ip_address(a) for a in NAMES.get(host, [])]

    monkeypatch.setattr(ssrf, "resolve", resolve)
    return lookups


@pytest.fixture
def connections(monkeypatch):
    """Every socket urllib3 opens, by (host, port); real connections still happen."""
    opened: list[tuple[str, int]] = []
    real = urllib3.util.connection.create_connection

    def watch(address, *args, **kwargs):
        opened.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", watch)
    return opened


def refusal(policy: UrlPolicy, url: str) -> str | None:
    try:
        policy.check(url)
    except Refused as refused:
        return refused.reason
    return None


DEFAULT = UrlPolicy()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://fhir.example.org/r4", None),
        ("https://8.8.8.8/fhir", None),
        ("http://127.0.0.1:8080/fhir", None),
        ("http://[::1]:8080/fhir", None),
        ("http://loop.test:8080/fhir", None),
        ("https://127.0.0.1/fhir", "loopback address"),
        ("https://[::1]/fhir", "loopback address"),
        ("https://2130706433/fhir", "loopback address"),
        ("https://10.0.0.1/fhir", "private address"),
        ("https://192.168.1.1/fhir", "private address"),
        ("https://172.16.0.1/fhir", "private address"),
        ("https://[::ffff:10.0.0.1]/fhir", "private address"),
        ("https://[fd12::1]/fhir", "private address"),
        ("https://v6private.test/fhir", "private address"),
        ("https://fhir.internal.test/fhir", "private address"),
        ("https://mixed.test/fhir", "private address"),  # one bad address is enough
        ("https://169.254.169.254/latest/meta-data", "cloud metadata address"),
        ("http://169.254.169.254/latest/meta-data", "cloud metadata address"),
        ("https://metadata.test/computeMetadata/v1", "cloud metadata address"),
        ("https://[fd00:ec2::254]/", "cloud metadata address"),
        ("https://100.100.100.200/", "cloud metadata address"),
        ("https://169.254.1.1/fhir", "link-local address"),
        ("https://[fe80::1]/fhir", "link-local address"),
        ("https://100.64.0.1/fhir", "shared (CGNAT) address"),
        ("https://224.0.0.1/fhir", "multicast address"),
        ("https://[ff02::1]/fhir", "multicast address"),
        ("https://0.0.0.0/fhir", "unspecified address"),
        ("https://240.0.0.1/fhir", "reserved address"),
        ("https://[64:ff9b::a00:1]/fhir", "private address"),  # NAT64 of 10.0.0.1
        ("http://10.0.0.1/fhir", "plain http is allowed only to loopback"),
        ("http://fhir.example.org/fhir", "plain http is allowed only to loopback"),
        ("https://nowhere.test/fhir", "host name does not resolve"),
        ("https://user:pw@fhir.example.org/fhir", "credentials in URL"),
        ("https://fhir.example.org/fhir/../admin", "dot segments in path"),
        ("https://fhir.example.org/fhir/%2e%2e/admin", "dot segments in path"),
        ("ftp://fhir.example.org/fhir", "URL not allowed"),
        ("https://fhir.example.org:99999/fhir", "URL not allowed"),
    ],
)
def test_default_policy(url, reason):
    assert refusal(DEFAULT, url) == reason


ALLOW = UrlPolicy(allowlist=("https://fhir.internal.test/r4", "http://127.0.0.1:9/fhir/"))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://fhir.internal.test/r4", None),  # a private address, allowlisted on purpose
        ("https://fhir.internal.test/r4/Patient/1", None),
        ("https://FHIR.internal.test/r4/Patient/1", None),
        ("https://fhir.internal.test:443/r4/Patient/1", None),
        ("http://127.0.0.1:9/fhir/Observation", None),
        ("https://fhir.internal.test/r4-evil/Patient/1", "not on CDS_FHIR_ALLOWLIST"),
        ("https://fhir.internal.test/other", "not on CDS_FHIR_ALLOWLIST"),
        ("https://fhir.internal.test.evil.test/r4", "not on CDS_FHIR_ALLOWLIST"),
        ("https://fhir.internal.test:8443/r4", "not on CDS_FHIR_ALLOWLIST"),
        ("http://fhir.internal.test/r4", "not on CDS_FHIR_ALLOWLIST"),
        ("http://127.0.0.1:8080/fhir", "not on CDS_FHIR_ALLOWLIST"),  # loopback, not listed
        ("https://fhir.example.org/r4", "not on CDS_FHIR_ALLOWLIST"),
        ("https://fhir.internal.test/r4/../admin", "dot segments in path"),
    ],
)
def test_allowlist_policy(url, reason):
    assert refusal(ALLOW, url) == reason


def test_allowlist_never_allows_metadata_addresses():
    policy = UrlPolicy(allowlist=("https://metadata.test/",))
    assert refusal(policy, "https://metadata.test/computeMetadata") == "cloud metadata address"


def test_allowlist_is_not_resolved_when_off_list(resolver):
    assert refusal(ALLOW, "https://fhir.example.org/r4") == "not on CDS_FHIR_ALLOWLIST"
    assert resolver == []  # refused on the URL alone: no DNS query for names off the list


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", ()),
        ("https://a.example.org/fhir", ("https://a.example.org/fhir",)),
        ("https://a.example.org/r4, http://127.0.0.1:8080/fhir", ("https://a.example.org/r4", "http://127.0.0.1:8080/fhir")),
    ],
)
def test_allowlist_setting(raw, expected):
    assert Settings.from_env({"CDS_FHIR_ALLOWLIST": raw}).fhir_allowlist == expected


@pytest.mark.parametrize("raw", ["a.example.org", "ftp://a.example.org", "https://u:p@a.example.org", "https://a.example.org/?q=1"])
def test_bad_allowlist_setting(raw):
    with pytest.raises(ConfigError, match="CDS_FHIR_ALLOWLIST"):
        Settings.from_env({"CDS_FHIR_ALLOWLIST": raw})


# --- through the API: a refused fhirServer is a 400 before any connection --------------------


def post(client, body):
    return client.post(
        "/cds-services/vitamin-d-patient-view",
        data=json.dumps(body),
        content_type="application/json",
    )


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("https://10.0.0.1/fhir", "private address"),
        ("https://169.254.169.254/latest", "cloud metadata address"),
        ("https://fhir.internal.test/fhir", "private address"),
        ("https://127.0.0.1/fhir", "loopback address"),
        ("http://fhir.example.org/fhir", "plain http is allowed only to loopback"),
    ],
)
def test_refused_fhir_server_is_a_400_naming_the_reason(client, connections, server, reason):
    reply = post(client, hook_request(prefetch={}, fhir_server=server, token="t"))
    assert reply.status_code == 400
    assert reply.get_json() == {"error": "fhirServer refused", "details": [reason]}
    assert connections == []


def test_loopback_not_on_the_allowlist(make_app, settings, connections):
    """127.0.0.1 when it is not allowed: an allowlist that does not name it."""
    client = make_app(settings.with_overrides(fhir_allowlist=("https://fhir.example.org/r4",))).test_client()
    with FhirStub() as stub:
        stub.add("Patient/pat-1", {"resourceType": "Patient", "id": "pat-1"})
        reply = post(client, hook_request(prefetch={}, fhir_server=stub.base_url))
        assert stub.requests == []
    assert reply.status_code == 400
    assert reply.get_json()["details"] == ["not on CDS_FHIR_ALLOWLIST"]
    assert connections == []


def test_allowlisted_loopback_server_is_used(make_app, settings):
    with FhirStub() as stub:
        client = make_app(settings.with_overrides(fhir_allowlist=(stub.base_url,))).test_client()
        for path in ("Observation", "MedicationRequest", "MedicationStatement", "Condition"):
            stub.add(path, searchset([]))
        stub.add("Patient/pat-1", {"resourceType": "Patient", "id": "pat-1"})
        reply = post(client, hook_request(prefetch={}, fhir_server=stub.base_url))
        assert reply.status_code == 200 and len(stub.requests) == len(PREFETCH_KEYS)


def test_unused_fhir_server_is_not_checked(client, resolver):
    """Everything prefetched: the server is never contacted, so it is neither resolved nor refused."""
    body = hook_request(prefetch=null_prefetch(), fhir_server="https://fhir.internal.test/fhir")
    assert post(client, body).status_code == 200
    assert resolver == []


@pytest.mark.parametrize("location", ["http://10.0.0.1/fhir/Observation", "https://fhir.internal.test/fhir/Observation", "http://169.254.169.254/latest/meta-data"])
def test_redirect_to_a_private_address_is_not_followed(client, connections, location):
    with FhirStub() as stub:
        stub.add("Patient/pat-1", {"resourceType": "Patient", "id": "pat-1"})
        stub.add("Observation", Reply(status=302, headers={"Location": location}))
        prefetch = {k: None for k in PREFETCH_KEYS if k not in ("patient", "observations")}
        reply = post(client, hook_request(prefetch=prefetch, fhir_server=stub.base_url))
        assert sorted(r.path for r in stub.requests) == ["Observation", "Patient/pat-1"]
    assert reply.status_code == 412
    assert reply.get_json()["details"] == ["observations: redirect"]
    assert {host for host, _ in connections} == {"127.0.0.1"}


# --- at connect time: the checked address is the one connected to ------------------------------


def test_connection_is_pinned_to_the_checked_address(connections):
    """`loop.test` exists only in the stub resolver: the socket goes to the address it gave."""
    with FhirStub() as stub, FhirClient(max_workers=2) as fhir:
        stub.add("Patient/p", {"resourceType": "Patient", "id": "p"})
        port = stub.base_url.rsplit(":", 1)[1].split("/")[0]
        reply = fhir._session.get(f"http://loop.test:{port}/fhir/Patient/p", timeout=2)
        assert reply.json()["id"] == "p"
    assert connections == [("127.0.0.1", int(port))]


def test_dns_rebinding_is_caught_at_connect_time(monkeypatch, connections):
    """The name passed the check, then resolves to a private address when connecting."""
    with FhirClient(max_workers=2) as fhir:
        check_url("https://fhir.example.org/fhir/Patient/1", fhir.policy)  # public: passes
        NAMES_NOW = {"fhir.example.org": [ipaddress.ip_address("10.0.0.7")]}
        monkeypatch.setattr(ssrf, "resolve", lambda host, port: NAMES_NOW.get(host, []))
        with pytest.raises(_AddressRefused, match="private address"):
            fhir._session.get("https://fhir.example.org/fhir/Patient/1", timeout=2)
    assert connections == []


def test_fetch_error_carries_the_guard_reason():
    with pytest.raises(FetchError, match="cloud metadata address"):
        check_url("http://169.254.169.254/latest")
