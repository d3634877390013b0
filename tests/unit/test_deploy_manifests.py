"""deploy/: the Kubernetes manifests validate against the schemas of the pinned client's
Kubernetes version, agree with each other (RBAC per allowed namespace, probe port = listen
port, service account), and their nightwatch.yaml passes nightwatch's own config checks.
The Dockerfile and docker-compose.yaml cannot be built here (no Docker engine): they are
checked by reading."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from k8s_standin import schema_version

from nightwatch.app.config import load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
JOB_VERBS = {"create", "get", "list", "watch", "delete"}


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in sorted(K8S.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def kinds(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def one(kind: str) -> dict[str, Any]:
    (doc,) = kinds(kind)
    return doc


def configmap_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> dict[str, Any]:
    monkeypatch.setenv("NIGHTWATCH_MYSQL_PASSWORD", "secret")
    monkeypatch.setenv("NIGHTWATCH_REDIS_URL", "redis://:secret@redis:6379/0")
    path = tmp_path / "nightwatch.yaml"
    path.write_text(text)
    return load_config(str(path))


@pytest.mark.parametrize(("name", "doc"), [
    pytest.param(name, doc, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}")
    for name, doc in documents() if doc["kind"] != "Kustomization"
])
def test_every_manifest_validates(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, schema_version(), strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(one("Kustomization")["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_configmap_is_a_valid_nightwatch_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = configmap_config(tmp_path, monkeypatch, one("ConfigMap")["data"]["nightwatch.yaml"])
    assert (cfg["store"]["backend"], cfg["lock"]["backend"], cfg["jobs"]["backend"]) == (
        "mysql", "redis", "kubernetes")
    assert cfg["store"]["mysql"]["password"] == "secret"  # from the Secret, through ${VAR}
    assert cfg["lock"]["redis"]["urls"] == ["redis://:secret@redis:6379/0"]
    assert cfg["jobs"]["kubernetes"]["kubeconfig"] is None  # in a pod: the service account
    assert cfg["server"]["listen"] == "0.0.0.0:9090"


def test_the_secret_provides_every_variable_the_config_reads() -> None:
    wanted = set(re.findall(r"\$\{(\w+)", one("ConfigMap")["data"]["nightwatch.yaml"]))
    assert wanted and wanted <= set(one("Secret")["stringData"])


def test_one_role_per_allowed_namespace_with_only_job_verbs(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = configmap_config(tmp_path, monkeypatch, one("ConfigMap")["data"]["nightwatch.yaml"])
    account = one("ServiceAccount")["metadata"]
    roles = {r["metadata"]["namespace"]: r for r in kinds("Role")}
    bindings = {b["metadata"]["namespace"]: b for b in kinds("RoleBinding")}
    assert set(roles) == set(bindings) == set(cfg["jobs"]["allowed_namespaces"])
    assert not kinds("ClusterRole") and not kinds("ClusterRoleBinding")
    for namespace, role in roles.items():
        assert role["rules"] == [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": sorted(
            JOB_VERBS, key=["create", "get", "list", "watch", "delete"].index)}]
        binding = bindings[namespace]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                        "namespace": account["namespace"]}]


def test_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cfg = configmap_config(tmp_path, monkeypatch, one("ConfigMap")["data"]["nightwatch.yaml"])
    port = int(cfg["server"]["listen"].rsplit(":", 1)[1])

    assert deployment["spec"]["replicas"] == 3
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"]["path"] == path
        assert ports[container[probe]["httpGet"]["port"]] == port
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # The config is the ConfigMap, mounted where the image's CMD looks for it.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir = mounts[next(n for n, v in volumes.items() if "configMap" in v)]
    assert container["args"] == ["run", "--config", f"{config_dir}/nightwatch.yaml"]
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == [one("Secret")["metadata"]["name"]]
    # Graceful shutdown (server.shutdown_timeout) fits inside the grace period.
    assert pod["terminationGracePeriodSeconds"] > cfg["server"]["shutdown_timeout"] + cfg["lock"]["ttl"]


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "python:3.11-slim" for f in froms)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "pip install" in text and re.search(r"^RUN pip install .*\s\.$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["nightwatch"\]$', text, re.M)
    assert re.search(r'^CMD \["run", "--config", "/etc/nightwatch/nightwatch.yaml"\]$', text, re.M)
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):  # the build context has them
        for source in copied.split():
            assert (ROOT / source).exists() or source == "README.md", source


def test_docker_compose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"mariadb", "redis", "nightwatch"}
    nightwatch = services["nightwatch"]
    assert (ROOT / "deploy" / nightwatch["build"]["context"] / nightwatch["build"]["dockerfile"]).is_file()
    assert set(nightwatch["depends_on"]) == {"mariadb", "redis"}
    for service in ("mariadb", "redis"):
        assert services[service]["healthcheck"]["test"]
    source, target = nightwatch["volumes"][0].split(":")[:2]
    cfg = configmap_config(tmp_path, monkeypatch, (ROOT / "deploy" / source).read_text())
    assert nightwatch["command"][-1] == target
    assert cfg["store"]["backend"] == "mysql" and cfg["store"]["mysql"]["host"] == "mariadb"
    assert cfg["lock"]["backend"] == "redis"
    assert set(nightwatch["environment"]) >= {"NIGHTWATCH_MYSQL_PASSWORD", "NIGHTWATCH_REDIS_URL"}
    maria = services["mariadb"]["environment"]
    assert (maria["MARIADB_DATABASE"], maria["MARIADB_USER"]) == (
        cfg["store"]["mysql"]["database"], cfg["store"]["mysql"]["user"])
