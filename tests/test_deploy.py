"""Deployment files: Kubernetes manifests against the Kubernetes OpenAPI schemas (offline, strict),
and what they, compose.yaml and the Dockerfile promise about the running service.

`docker build` and a real cluster are not available here; these checks plus hadolint (`make
lint`) are what stands in for them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cds_service.config import Settings

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
# Oldest Kubernetes minor still widely run, and the newest the bundled schemas know.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
# Read by code arriving on another branch (security: REDIS_URL, the JWT replay store). Drop
# each name here once Settings.from_env reads it.
PENDING_VARIABLES = {"REDIS_URL"}


def manifests() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in manifests() if doc["kind"] == kind]


class _Recording(Mapping[str, str]):
    """An empty environment that remembers every name asked for."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.names.add(name)
        raise KeyError(name)

    def get(self, name, default=None):  # type: ignore[override]
        self.names.add(name)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, name: object) -> bool:
        self.names.add(str(name))
        return False


def settings_variables() -> set[str]:
    env = _Recording()
    Settings.from_env(env)
    return env.names


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("name", "doc"), manifests(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_is_valid_kubernetes(name, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_every_kind_the_issue_asks_for_is_there():
    kinds = {doc["kind"] for _, doc in manifests()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "ConfigMap", "Secret"} <= kinds


def test_kustomization_lists_every_manifest_but_the_example_secret():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert sorted(listed) == sorted(files)
    assert not [doc for name, doc in manifests() if doc["kind"] == "Secret" and name in listed]


def _container() -> dict:
    (deployment,) = by_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_runs_non_root_read_only_with_probes_and_resources():
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    # The only writable places: the metrics directory lives in the /tmp emptyDir.
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith("/tmp/") and "/tmp" in mounts
    # Grace: preStop pause + gunicorn's graceful timeout fit in the termination period.
    (config,) = [d for d in by_kind("ConfigMap") if d["metadata"]["name"] == "vitd-cds-config"]
    graceful = float(config["data"]["CDS_GRACEFUL_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] >= graceful + 5


def test_probe_paths_and_port_are_served_by_the_app(client):
    container = _container()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert client.get(path).status_code == 200, path
    assert client.get("/metrics").status_code == 200
    (deployment,) = by_kind("Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports["http"]) == annotations["prometheus.io/port"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PORT"] == str(ports["http"]) and env["HOST"] == "0.0.0.0"


def test_selectors_match_the_pods():
    (deployment,) = by_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for doc in by_kind("Service"):
        assert doc["spec"]["selector"].items() <= labels.items()
        assert doc["spec"]["ports"][0]["targetPort"] == "http"
    for doc in by_kind("PodDisruptionBudget") + by_kind("NetworkPolicy"):
        selector = doc["spec"].get("selector") or doc["spec"]["podSelector"]
        assert selector["matchLabels"].items() <= labels.items()
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2  # the PDB's minAvailable 1 leaves one to evict
    assert "replicas" not in deployment["spec"]  # the HPA owns it


def test_network_policy_allows_egress_only_to_dns_database_redis_and_fhir():
    (policy,) = by_kind("NetworkPolicy")
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert ports == [53, 53, 443, 5432, 6379]
    for rule in policy["spec"]["egress"]:
        assert rule.get("to"), "an egress rule without `to` would allow every destination"


def test_secrets_are_referenced_not_inlined():
    env = _container()["env"]
    secret_refs = {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
    assert secret_refs == {"DATABASE_URL", "REDIS_URL"}
    (config,) = [d for d in by_kind("ConfigMap") if d["metadata"]["name"] == "vitd-cds-config"]
    assert not {"DATABASE_URL", "REDIS_URL"} & set(config["data"])


def _compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def _dockerfile_env() -> set[str]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("ENV "):
            names |= set(re.findall(r"([A-Z_][A-Z0-9_]*)=", line))
    return names


def test_every_variable_set_in_deployment_files_is_one_the_service_reads():
    known = settings_variables() | PENDING_VARIABLES
    container = _container()
    configmaps = [d for d in by_kind("ConfigMap") if d["metadata"]["name"] == "vitd-cds-config"]
    set_somewhere = {
        "k8s env": {e["name"] for e in container["env"]},
        "k8s configmap": set(configmaps[0]["data"]),
        "compose": set(_compose()["services"]["app"]["environment"]),
        "Dockerfile": _dockerfile_env() - {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
                                          "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"},
    }
    for where, names in set_somewhere.items():
        assert names <= known, f"{where}: {sorted(names - known)} are read by nothing"


def test_every_variable_the_service_reads_is_documented():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Configuration"):]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    assert settings_variables() <= documented, sorted(settings_variables() - documented)


def test_compose_runs_the_service_with_postgres_and_redis():
    services = _compose()["services"]
    assert {"app", "db", "redis"} <= set(services)
    app = services["app"]
    assert app["environment"]["DATABASE_URL"].startswith("postgresql://")
    assert app["environment"]["REDIS_URL"].startswith("redis://")
    assert "CDS_AUTH_DISABLED" not in app["environment"]
    assert all(p.startswith("127.0.0.1:") for p in app["ports"])
    assert app["read_only"] is True
    for dependency in ("db", "redis"):
        assert app["depends_on"][dependency]["condition"] == "service_healthy"
        assert services[dependency]["healthcheck"]["test"]
    issuers = app["volumes"][0].split(":")[0]
    assert (REPO / issuers).is_file()


def test_dockerfile_promises():
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(stages) == 2 and all(s.startswith("python:3.11-slim") for s in stages)
    final = text[text.rindex("\nFROM "):]
    assert re.search(r"^USER 10001", final, flags=re.M)
    assert "HEALTHCHECK" in final and "/healthz" in final
    assert not re.search(r"apt-get|gcc|build-essential", final)
    assert 'CMD ["serve"]' in final


@pytest.mark.slow
def test_the_installed_wheel_starts(tmp_path):
    """What the Dockerfile does: `pip install .` (not editable), then start the app from it."""
    import subprocess
    import sys

    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    script = (
        "import cds_service, sys\n"
        f"assert cds_service.__file__.startswith({str(target)!r}), cds_service.__file__\n"
        "from cds_service import Settings, create_app\n"
        f"app = create_app(Settings(database_url='sqlite:///{tmp_path}/w.sqlite3', auth_disabled=True))\n"
        "client = app.test_client()\n"
        "assert client.get('/readyz').status_code == 200\n"
        "assert client.get('/cds-services').status_code == 200\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
