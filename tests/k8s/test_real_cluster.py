"""The task watcher and the kubernetes gateway against the real cluster ``KUBECONFIG`` points at
(a kind or minikube cluster on a laptop, say). Skipped when ``KUBECONFIG`` is unset or its
cluster does not answer -- unless ``NIGHTWATCH_REQUIRE_K8S=1``, which makes that a failure.

    KUBECONFIG=~/.kube/config .venv/bin/pytest -m k8s tests/k8s -v

Optional: ``NIGHTWATCH_TEST_K8S_CONTEXT`` (a kubeconfig context), ``NIGHTWATCH_TEST_K8S_NAMESPACE``
(default ``default``; the Jobs are created there and deleted afterwards).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.jobs.kubernetes import KubernetesJobGateway
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.task_watcher import TaskWatcher
from nightwatch.domain.jobspec import JobDefaults, JobSpec, parse_info
from nightwatch.domain.model import Fence, NewTask, Task
from nightwatch.domain.ports import LaunchOutcome, RunContext

pytestmark = pytest.mark.k8s
TERMINAL = ("Succeeded", "Failed")


@dataclass
class Cluster:
    kubeconfig: str
    context: str | None
    namespace: str


def _unavailable(why: str) -> None:
    if os.environ.get("NIGHTWATCH_REQUIRE_K8S") == "1":
        pytest.fail(f"NIGHTWATCH_REQUIRE_K8S=1 but {why}", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        _unavailable("KUBECONFIG is not set: no cluster to run the k8s suite against")
        raise AssertionError("unreachable")
    from kubernetes import client, config

    context = os.environ.get("NIGHTWATCH_TEST_K8S_CONTEXT") or None
    namespace = os.environ.get("NIGHTWATCH_TEST_K8S_NAMESPACE", "default")
    try:
        api = config.new_client_from_config(config_file=kubeconfig, context=context, persist_config=False)
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as e:  # any reason at all: no usable cluster
        _unavailable(f"the cluster of KUBECONFIG={kubeconfig} does not answer: {e}")
    yield Cluster(kubeconfig, context, namespace)
    batch = client.BatchV1Api(api)
    for job in batch.list_namespaced_job(namespace, label_selector="app.kubernetes.io/managed-by=nightwatch",
                                         _request_timeout=10).items:
        if job.metadata.name.startswith("nwt-"):
            batch.delete_namespaced_job(job.metadata.name, namespace, propagation_policy="Background",
                                        _request_timeout=10)
    api.close()


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:8]


def gateway_for(cluster: Cluster) -> KubernetesJobGateway:
    return KubernetesJobGateway(kubeconfig=cluster.kubeconfig, context=cluster.context,
                                defaults=JobDefaults(backoff_limit=0, ttl_seconds_after_finished=600))


def test_true_succeeds_and_false_fails(cluster: Cluster, suffix: str) -> None:
    clock = SystemClock()
    store = InMemoryTaskStore(clock)
    gateway = gateway_for(cluster)
    watcher = TaskWatcher(store, gateway, clock, allowed_namespaces=[cluster.namespace])
    fence = Fence("nightwatch", store.begin_term("nightwatch"))
    ok = store.add(NewTask(f"nwt-true-{suffix}", cluster.namespace,
                           json.dumps({"image": "busybox:1.36", "command": ["true"]})))
    bad = store.add(NewTask(f"nwt-false-{suffix}", cluster.namespace,
                            json.dumps({"image": "busybox:1.36", "command": ["false"]})))

    deadline = time.monotonic() + 240  # image pulls on a cold node take a while
    seen: set[str] = set()
    while time.monotonic() < deadline:
        watcher.run(RunContext(fence=fence))
        seen |= {store.get(ok.id).status, store.get(bad.id).status}
        if all(store.get(t.id).status in TERMINAL for t in (ok, bad)):
            break
        time.sleep(1)
    watcher.close()
    gateway.close()

    assert store.get(ok.id).status == "Succeeded", store.get(ok.id)
    assert store.get(bad.id).status == "Failed", store.get(bad.id)
    assert (store.get(bad.id).message or "").startswith("BackoffLimitExceeded")
    assert "Pending" in seen or "Running" in seen
    print(f"\nrequests to the cluster: {dict(gateway.requests)}")
    assert not any(verb == "get" for verb, _ in gateway.requests)  # sync never GETs a Job


def test_launch_twice_adopts_and_a_foreign_task_conflicts(cluster: Cluster, suffix: str) -> None:
    from nightwatch.domain.errors import JobConflictError

    gateway = gateway_for(cluster)
    task = Task(10_000_001, f"nwt-adopt-{suffix}", cluster.namespace, '{"image":"busybox:1.36","command":["true"]}',
                "Normal")
    spec = parse_info(task.info)
    assert gateway.launch(task, spec) is LaunchOutcome.CREATED
    assert gateway.launch(task, spec) is LaunchOutcome.ADOPTED
    with pytest.raises(JobConflictError, match="was not created for this task"):
        gateway.launch(Task(10_000_002, task.name, task.namespace, task.info, "Normal"), spec)
    gateway.close()


def test_the_api_servers_own_refusals(cluster: Cluster, suffix: str) -> None:
    """What the stand-in imitates, from the real server: 404 for a missing namespace, 422."""
    from nightwatch.domain.errors import JobRejectedError

    gateway = gateway_for(cluster)
    missing = f"nwt-missing-{suffix}"
    with pytest.raises(JobRejectedError) as e:
        gateway.launch(Task(10_000_003, f"nwt-nowhere-{suffix}", missing, "", "Normal"),
                       parse_info('{"image":"busybox:1.36"}'))
    assert str(e.value) == f'namespaces "{missing}" not found'
    with pytest.raises(JobRejectedError, match="must be less than or equal to memory limit"):
        gateway.launch(Task(10_000_004, f"nwt-greedy-{suffix}", cluster.namespace, "", "Normal"),
                       # past the domain's own requests <= limits check: the API server's answer
                       JobSpec(image="busybox:1.36", resources={"requests": {"memory": "2Gi"},
                                                                "limits": {"memory": "1Gi"}}))
    gateway.close()
