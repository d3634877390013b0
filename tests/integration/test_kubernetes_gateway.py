"""KubernetesJobGateway through the official client, over HTTP, against the API stand-in."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from k8s_standin import ApiStandIn, write_kubeconfig

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.kubernetes import KubernetesJobGateway, TokenBucket
from nightwatch.adapters.jobs.manifest import build_job_manifest
from nightwatch.domain.errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidTaskSpecError,
    JobConflictError,
    JobForbiddenError,
    JobNotFoundError,
    JobRejectedError,
)
from nightwatch.domain.jobspec import JobDefaults, JobSpec, parse_info
from nightwatch.domain.model import JobPhase, JobState, Task, job_name
from nightwatch.domain.ports import LaunchOutcome

SEED_1 = Task(1, "demo-task-1", "default", '{"image":"alpine","command":["sleep"],"args":["60"]}', "Normal", 1)
SEED_2 = Task(2, "demo-task-2", "demo", '{"image":"busybox","command":["sleep"],"args":["3600"]}', "Normal", 2)


def task(task_id: int, name: str | None = None, namespace: str = "default", info: str = '{"image": "alpine"}',
         status: str = "Normal") -> Task:
    return Task(task_id, f"task-{task_id}" if name is None else name, namespace, info, status)


def launch(gateway: KubernetesJobGateway, t: Task) -> LaunchOutcome:
    return gateway.launch(t, parse_info(t.info))


@pytest.fixture
def standin() -> Iterator[ApiStandIn]:
    with ApiStandIn(namespaces=("default", "other", "secure"), forbidden=("secure",)) as s:
        yield s


@pytest.fixture
def kubeconfig(tmp_path: Path, standin: ApiStandIn) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", standin)


@pytest.fixture
def gateway(kubeconfig: Path) -> Iterator[KubernetesJobGateway]:
    g = KubernetesJobGateway(kubeconfig=str(kubeconfig), qps=0)
    yield g
    g.close()


# -- launch --------------------------------------------------------------------------------


def test_creates_the_manifest_exactly_as_built(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    defaults = JobDefaults(backoff_limit=1, ttl_seconds_after_finished=600, active_deadline_seconds=30)
    g = KubernetesJobGateway(kubeconfig=gateway._kubeconfig, defaults=defaults)
    spec = parse_info('{"image":"alpine","command":["sh","-c"],"args":["echo $A"],"env":{"A":"1"},'
                      '"resources":{"limits":{"cpu":"1","memory":"64Mi"}}}')
    try:
        assert g.launch(SEED_1, spec) is LaunchOutcome.CREATED
    finally:
        g.close()
    assert standin.received == [build_job_manifest(SEED_1, spec, defaults)]  # nothing lost on the way
    job = standin.job("default", "demo-task-1")
    assert job is not None
    assert job["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "nightwatch",
                                         "nightwatch.io/task-id": "1", "nightwatch.io/attempt": "1"}
    assert job["spec"]["activeDeadlineSeconds"] == 30


def test_seed_rows(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    assert launch(gateway, SEED_1) is LaunchOutcome.CREATED
    with pytest.raises(JobRejectedError) as e:
        launch(gateway, SEED_2)
    assert str(e.value) == 'namespaces "demo" not found'
    assert [j["metadata"]["name"] for j in standin.jobs()] == ["demo-task-1"]


def test_already_exists_with_our_label_is_adopted(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    assert launch(gateway, SEED_1) is LaunchOutcome.CREATED
    assert launch(gateway, SEED_1) is LaunchOutcome.ADOPTED  # e.g. after a crash before the status write
    assert standin.created[("default", "demo-task-1")] == 1
    assert len(standin.jobs()) == 1
    assert gateway.requests[("create", "409")] == 1 and gateway.requests[("get", "200")] == 1


@pytest.mark.parametrize("labels", [None, {"nightwatch.io/task-id": "99"}])
def test_foreign_job_with_the_same_name_is_a_conflict(
    gateway: KubernetesJobGateway, standin: ApiStandIn, labels: dict[str, str] | None
) -> None:
    foreign = build_job_manifest(task(99, "report"), JobSpec(image="busybox"))
    foreign["metadata"]["labels"] = labels
    standin.add_job(foreign)
    with pytest.raises(JobConflictError) as e:
        launch(gateway, task(7, "report"))
    assert str(e.value) == ('a Job named "report" already exists in namespace "default" '
                            "and was not created for this task")


def test_invalid_name_fails_before_any_request(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    for name in ("Demo_Task", "x" * 64, ""):
        with pytest.raises(JobRejectedError, match="DNS-1123") as e:
            launch(gateway, task(1, name))
        assert isinstance(e.value.__cause__, InvalidTaskSpecError)
    assert sum(standin.requests.values()) == 0


def test_422_invalid_carries_the_api_message(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    with pytest.raises(JobRejectedError) as e:
        gateway.launch(task(1, "no-image"), JobSpec(image=""))
    assert str(e.value) == 'Job.batch "no-image" is invalid: spec.template.spec.containers[0].image: Required value'
    with pytest.raises(JobRejectedError) as e:
        # the domain refuses this spec up front; built by hand, it shows the API server's own answer
        gateway.launch(task(2, "greedy"), JobSpec(image="alpine", resources={"requests": {"cpu": "2"},
                                                                             "limits": {"cpu": "1"}}))
    assert str(e.value) == ('Job.batch "greedy" is invalid: spec.template.spec.containers[0].resources.requests: '
                            'Invalid value: "2": must be less than or equal to cpu limit of 1')
    assert standin.answers[("create", 422)] == 2 and not standin.jobs()


FORBIDDEN = ('jobs.batch is forbidden: User "system:serviceaccount:nightwatch:nightwatch" cannot '
             'create resource "jobs" in API group "batch" in the namespace "secure"')


def test_400_carries_the_api_message(gateway: KubernetesJobGateway) -> None:
    with pytest.raises(JobRejectedError, match="quantities must match the regular expression"):
        # the domain refuses "lots" up front; built by hand, it shows the API server's own answer
        gateway.launch(task(1), JobSpec(image="alpine", resources={"limits": {"cpu": "lots"}}))


def test_403_forbidden_is_transient_until_the_grace_then_fails_with_the_api_message(
    kubeconfig: Path, standin: ApiStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    g = KubernetesJobGateway(kubeconfig=str(kubeconfig), qps=0, clock=clock, forbidden_grace=600)
    locked, other = task(2, namespace="secure"), task(3, namespace="secure")
    try:
        with caplog.at_level(logging.WARNING):
            with pytest.raises(JobForbiddenError) as e:
                launch(g, locked)
            assert isinstance(e.value, BackendUnavailableError)  # the task stays Normal, backed off
            assert FORBIDDEN in str(e.value)
            clock.advance(300)
            with pytest.raises(JobForbiddenError):
                launch(g, other)  # its own grace starts now
            clock.advance(299.9)
            with pytest.raises(JobForbiddenError):
                launch(g, locked)
            clock.advance(0.1)
            with pytest.raises(JobRejectedError) as rejected:
                launch(g, locked)
            assert str(rejected.value).startswith(FORBIDDEN)
            with pytest.raises(JobForbiddenError):
                launch(g, other)
    finally:
        g.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "secure" in r.getMessage()]
    assert len(warnings) == 1  # once for the namespace, not per task or per attempt


@pytest.mark.parametrize(("kind", "code"), [("429", 429), ("500", 500), ("504", 504)])
def test_server_faults_are_transient(gateway: KubernetesJobGateway, standin: ApiStandIn, kind: str,
                                     code: int) -> None:
    standin.fault_rate, standin.fault_kinds, standin.retry_after = 1.0, (kind,), 7
    with pytest.raises(BackendUnavailableError) as e:
        launch(gateway, SEED_1)
    assert e.value.retry_after == (7 if code == 429 else None)
    assert gateway.requests[("create", str(code))] == 1  # one request: no blocking retry
    standin.fault_rate = 0.0
    # 504 means the create took effect and its answer was lost: the next attempt adopts.
    expected = LaunchOutcome.ADOPTED if kind == "504" else LaunchOutcome.CREATED
    assert launch(gateway, SEED_1) is expected
    assert standin.created[("default", "demo-task-1")] == 1


def test_unreachable_server_fails_fast_without_retries(kubeconfig: Path) -> None:
    g = KubernetesJobGateway(kubeconfig=str(kubeconfig), context="elsewhere", request_timeout=5)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="Kubernetes API create failed"):
        launch(g, SEED_1)
    states = g.observe([task(1, status="Running")])  # not observed: neither seen nor missing
    assert states[1].phase is JobPhase.UNKNOWN and "Kubernetes API list failed" in states[1].message
    assert time.monotonic() - started < 2
    assert g.requests == {("create", "error"): 1, ("list", "error"): 1}


def test_request_timeout_is_applied(kubeconfig: Path, standin: ApiStandIn) -> None:
    standin.latency = 3.0
    g = KubernetesJobGateway(kubeconfig=str(kubeconfig), request_timeout=0.3)
    started = time.monotonic()
    state = g.observe([task(1, status="Running")])[1]
    assert state.phase is JobPhase.UNKNOWN and "timed out" in state.message
    assert time.monotonic() - started < 2


def test_wrong_token_is_transient_not_the_tasks_fault(kubeconfig: Path, standin: ApiStandIn) -> None:
    g = KubernetesJobGateway(kubeconfig=str(kubeconfig), context="wrong-token")
    with pytest.raises(BackendUnavailableError, match="401: Unauthorized"):
        launch(g, SEED_1)
    assert standin.answers == {("create", 401): 1}


# -- config loading ------------------------------------------------------------------------


def test_context_selects_the_cluster(tmp_path: Path, standin: ApiStandIn) -> None:
    path = write_kubeconfig(tmp_path / "kc", standin, current="elsewhere")
    assert launch(KubernetesJobGateway(kubeconfig=str(path), context="standin"), SEED_1) is LaunchOutcome.CREATED
    with pytest.raises(BackendUnavailableError):  # the current context: a closed port
        launch(KubernetesJobGateway(kubeconfig=str(path)), task(2))


def test_kubeconfig_env_then_in_cluster(monkeypatch: pytest.MonkeyPatch, kubeconfig: Path,
                                        standin: ApiStandIn) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert launch(KubernetesJobGateway(), SEED_1) is LaunchOutcome.CREATED
    # Inside a pod (KUBERNETES_SERVICE_HOST set) a null kubeconfig means the service account;
    # there is none on this machine, and the error says where it looked.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError, match="in-cluster service account"):
        launch(KubernetesJobGateway(), task(2))
    # An explicit kubeconfig wins even inside a pod.
    assert launch(KubernetesJobGateway(kubeconfig=str(kubeconfig)), task(3)) is LaunchOutcome.CREATED


def test_config_is_loaded_lazily_and_errors_name_the_source(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    g = KubernetesJobGateway(kubeconfig=str(missing))  # nothing read or connected yet
    with pytest.raises(ConfigError, match="no-such-kubeconfig"):
        launch(g, SEED_1)
    assert not g.requests


def test_closed_gateway_refuses_calls(gateway: KubernetesJobGateway) -> None:
    launch(gateway, SEED_1)
    gateway.close()
    with pytest.raises(BackendUnavailableError, match="closed"):
        launch(gateway, task(2))


# -- observe -------------------------------------------------------------------------------


def test_job_status_mapping(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    tasks = [task(i, status="Pending") for i in range(1, 7)]
    for t in tasks:
        launch(gateway, t)
    standin.finish("default", "task-2", ok=True)
    standin.finish("default", "task-3", ok=False)
    standin.finish("default", "task-4", ok=False, reason="DeadlineExceeded",
                   message="Job was active longer than specified deadline")
    standin.suspend("default", "task-5")
    standin.delete_job("default", "task-6")
    assert gateway.observe(tasks) == {
        1: JobState(JobPhase.RUNNING),
        2: JobState(JobPhase.SUCCEEDED),
        3: JobState(JobPhase.FAILED, "exit code 1"),  # what its pod said (it printed nothing)
        4: JobState(JobPhase.FAILED, "DeadlineExceeded: Job was active longer than specified deadline"),
        5: JobState(JobPhase.PENDING),
        # 6: deleted behind nightwatch's back -> absent (the task watcher applies the grace period)
    }


def test_not_started_job_is_pending(kubeconfig: Path, standin: ApiStandIn) -> None:
    standin.start_after = None
    g = KubernetesJobGateway(kubeconfig=str(kubeconfig))
    launch(g, SEED_1)
    assert g.observe([SEED_1]) == {1: JobState(JobPhase.PENDING)}


def test_a_job_is_matched_by_task_id_label_and_name(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    launch(gateway, task(1, "alpha"))
    impostor = build_job_manifest(task(2, "beta"), JobSpec(image="x"))
    impostor["metadata"]["labels"]["nightwatch.io/task-id"] = "1"  # someone else's Job claiming task 1
    standin.add_job(impostor)
    assert gateway.observe([task(1, "alpha"), task(2, "beta")]) == {1: JobState(JobPhase.RUNNING)}


def test_observe_lists_each_namespace_in_pages_and_never_gets(kubeconfig: Path, standin: ApiStandIn) -> None:
    g = KubernetesJobGateway(kubeconfig=str(kubeconfig), qps=0, page_size=100)
    tasks = [task(i, namespace="default" if i % 3 else "other", status="Pending") for i in range(1, 301)]
    for t in tasks:
        standin.add_job(build_job_manifest(t, JobSpec(image="x")))
    standin.add_job({"apiVersion": "batch/v1", "kind": "Job",  # not ours: filtered by the selector
                     "metadata": {"name": "unmanaged", "namespace": "default"},
                     "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                    "containers": [{"name": "c", "image": "x"}]}}}})
    try:
        states = g.observe(tasks)
        assert len(states) == 300 and set(states.values()) == {JobState(JobPhase.RUNNING)}
        standin.settle(g)
        # 200 Jobs in default (2 pages of 100), 100 in other (1 page), then one watch in each --
        # and not one GET; later cycles read the watched cache: no call at all.
        assert standin.requests == {"list": 3, "watch": 2}
        assert g.requests == {("list", "200"): 3, ("watch", "open"): 2}
        assert g.observe(tasks) == states and standin.requests == {"list": 3, "watch": 2}
    finally:
        g.close()


def test_list_failure_is_transient(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    launch(gateway, SEED_1)
    standin.fault_rate, standin.fault_kinds = 1.0, ("500",)
    state = gateway.observe([SEED_1])[1]
    # not observed, so neither a status change nor "missing": the watcher leaves the task alone
    assert state.phase is JobPhase.UNKNOWN and "answered 500" in state.message
    standin.fault_rate = 0.0
    standin.settle(gateway)  # the watch recovers (retried with backoff)
    standin.namespaces.add("locked")
    standin.forbidden.add("locked")  # a RoleBinding removed for one namespace only
    other = task(2, name="other-task", namespace="locked", status="Running")
    states = gateway.observe([SEED_1, other])
    assert states[2].phase is JobPhase.UNKNOWN and "forbidden" in states[2].message
    assert states[1].phase is not JobPhase.UNKNOWN  # the other namespace is still observed


# -- the client-side rate limit ------------------------------------------------------------


def test_rate_limit_honours_qps_and_burst(kubeconfig: Path) -> None:
    g = KubernetesJobGateway(kubeconfig=str(kubeconfig), qps=20, burst=5)
    started = time.monotonic()
    for i in range(1, 16):
        launch(g, task(i))
    elapsed = time.monotonic() - started
    g.close()
    assert 0.4 <= elapsed < 3, elapsed  # 5 at once, then 10 more at 20/s = 0.5 s


def test_token_bucket_never_waits_longer_than_the_timeout() -> None:
    import threading

    clock = FakeClock()  # time stands still: no token comes back by itself
    bucket = TokenBucket(rate=10, burst=2, clock=clock, closed=threading.Event())
    bucket.acquire(timeout=1)
    bucket.acquire(timeout=1)
    with pytest.raises(BackendUnavailableError, match="rate limit") as e:
        bucket.acquire(timeout=0.05)  # the next token is 0.1 s away
    assert e.value.retry_after == pytest.approx(0.1)
    clock.advance(0.2)
    bucket.acquire(timeout=0)
    bucket.acquire(timeout=0)
    with pytest.raises(BackendUnavailableError):
        bucket.acquire(timeout=0)


def test_only_the_api_servers_own_refusals_fail_a_task() -> None:
    from kubernetes.client.exceptions import ApiException

    from nightwatch.adapters.jobs._kubernetes_api import is_refusal as _is_refusal
    from nightwatch.adapters.jobs._kubernetes_api import status_of as _status

    def refused(code: int, body: str | None) -> bool:
        e = ApiException(status=code, reason="x")
        e.body = body
        return _is_refusal(e, _status(e), (_status(e).get("message") or ""))

    status = '{"kind": "Status", "code": %d, "message": "%s"}'
    assert refused(404, status % (404, 'namespaces \\"demo\\" not found'))
    assert refused(403, status % (403, "jobs.batch is forbidden"))
    assert not refused(404, "<html>404 page not found</html>")  # a proxy or a wrong path, not the API
    assert not refused(403, status % (403, 'jobs.batch "t" is forbidden: exceeded quota: q'))  # passes later


def test_only_an_rbac_refusal_counts_as_forbidden() -> None:
    from kubernetes.client.exceptions import ApiException

    from nightwatch.adapters.jobs._kubernetes_api import is_forbidden as _is_forbidden
    from nightwatch.adapters.jobs._kubernetes_api import status_of as _status

    def forbidden(code: int, body: str | None) -> bool:
        e = ApiException(status=code, reason="x")
        e.body = body
        return _is_forbidden(e, _status(e), (_status(e).get("message") or ""))

    status = '{"kind": "Status", "code": %d, "reason": "Forbidden", "message": "%s"}'
    assert forbidden(403, status % (403, "jobs.batch is forbidden: User cannot create resource"))
    assert not forbidden(403, status % (403, 'jobs.batch "t" is forbidden: exceeded quota: q'))  # retried as before
    assert not forbidden(403, "<html>403 Forbidden</html>")  # a proxy, not the API server
    assert not forbidden(422, status % (422, "invalid"))


# -- failure reasons, stuck pods, cancel (issue 10) ------------------------------------------


@pytest.fixture
def clocked(kubeconfig: Path, standin: ApiStandIn) -> Iterator[tuple[KubernetesJobGateway, FakeClock]]:
    clock = FakeClock()
    standin.clock = clock
    g = KubernetesJobGateway(kubeconfig=str(kubeconfig), qps=0, clock=clock, pending_fatal_grace=120)
    yield g, clock
    g.close()


def test_a_failure_reads_like_the_local_backend_exit_code_and_last_log_line(
    gateway: KubernetesJobGateway, standin: ApiStandIn
) -> None:
    t = task(1, "breaks", status="Running")
    launch(gateway, t)
    standin.script_pod("default", "breaks", exit_code=3)
    standin.write_log("default", "breaks", "starting\n" + "x" * 5000 + "\noops\n")
    standin.finish("default", "breaks", ok=False)
    gateway.watches.start(["default"])
    standin.settle(gateway)
    standin.reset_counts()

    assert gateway.observe([t]) == {1: JobState(JobPhase.FAILED, "exit code 3: oops")}
    assert standin.requests == {"list_pods": 1, "logs": 1}  # the Job from the watched cache
    (logs_path,) = [path for method, path in standin.paths if path.endswith("/log")]
    assert logs_path.startswith("/api/v1/namespaces/default/pods/breaks-")
    assert gateway.observe([t]) == {1: JobState(JobPhase.FAILED, "exit code 3: oops")}
    assert standin.requests == {"list_pods": 1, "logs": 1}  # read once, not every cycle


@pytest.mark.parametrize(("script", "expected"), [
    ({"exit_code": 137, "reason": "OOMKilled"}, "OOMKilled: exit code 137: oops"),
    ({"pod_reason": "Evicted", "pod_message": "The node was low on resource: memory."},
     "Evicted: The node was low on resource: memory."),
])
def test_oom_and_eviction_are_named(gateway: KubernetesJobGateway, standin: ApiStandIn,
                                    script: dict[str, Any], expected: str) -> None:
    t = task(1, "dies", status="Running")
    launch(gateway, t)
    standin.script_pod("default", "dies", **script)
    standin.write_log("default", "dies", "oops\n")
    standin.finish("default", "dies", ok=False)

    state = gateway.observe([t])[1]
    assert state == JobState(JobPhase.FAILED, expected) and state.retryable


def test_a_deadline_keeps_its_reason_and_adds_the_last_log_line(gateway: KubernetesJobGateway,
                                                                standin: ApiStandIn) -> None:
    t = task(1, "slow", status="Running")
    launch(gateway, t)
    standin.write_log("default", "slow", "still working\n")
    standin.finish("default", "slow", ok=False, reason="DeadlineExceeded",
                   message="Job was active longer than specified deadline")
    state = gateway.observe([t])[1]
    assert state == JobState(JobPhase.FAILED, "DeadlineExceeded: Job was active longer than specified deadline: "
                                              "still working")
    assert state.retryable


def test_image_pull_backoff_past_the_grace_fails_for_good_and_deletes_the_job(
    clocked: tuple[KubernetesJobGateway, FakeClock], standin: ApiStandIn
) -> None:
    gateway, clock = clocked
    t = task(1, "typo", info='{"image": "alpin"}', status="Pending")
    launch(gateway, t)
    standin.wait_on("default", "typo", "ImagePullBackOff", 'Back-off pulling image "alpin"')

    assert gateway.observe([t]) == {1: JobState(JobPhase.PENDING)}  # active 1, ready 0: not Running
    clock.advance(119)
    assert gateway.observe([t]) == {1: JobState(JobPhase.PENDING)}
    assert standin.job("default", "typo") is not None
    clock.advance(1)
    failed = JobState(JobPhase.FAILED, 'ImagePullBackOff: Back-off pulling image "alpin"', retryable=False)

    assert gateway.observe([t]) == {1: failed}
    assert standin.job("default", "typo") is None and standin.pod("default", "typo") is None
    assert standin.requests["delete"] == 1
    assert gateway.observe([t]) == {1: failed}  # deleted by us: still failed, not missing


def test_a_stuck_job_that_cannot_be_deleted_stays_pending_until_it_is(
    clocked: tuple[KubernetesJobGateway, FakeClock], standin: ApiStandIn
) -> None:
    gateway, clock = clocked
    t = task(1, "typo", info='{"image": "alpin"}', status="Pending")
    launch(gateway, t)
    standin.wait_on("default", "typo", "ImagePullBackOff", 'Back-off pulling image "alpin"')
    gateway.observe([t])
    clock.advance(120)
    standin.fail_verbs = {"delete"}

    # a Failed task is never observed again: reported failed while its Job lives, it would leak
    assert gateway.observe([t]) == {1: JobState(JobPhase.PENDING)}
    assert standin.job("default", "typo") is not None
    assert gateway.observe([t]) == {1: JobState(JobPhase.PENDING)}  # tried again every cycle
    assert standin.requests["delete"] == 2
    standin.fail_verbs = set()

    failed = JobState(JobPhase.FAILED, 'ImagePullBackOff: Back-off pulling image "alpin"', retryable=False)
    assert gateway.observe([t]) == {1: failed}
    assert standin.job("default", "typo") is None


def test_a_pod_that_gets_its_image_in_time_is_not_failed(clocked: tuple[KubernetesJobGateway, FakeClock],
                                                         standin: ApiStandIn) -> None:
    gateway, clock = clocked
    t = task(1, "slow-pull", status="Pending")
    launch(gateway, t)
    standin.wait_on("default", "slow-pull", "ErrImagePull", "rate limited")
    gateway.observe([t])
    clock.advance(100)
    standin.start_job("default", "slow-pull")
    standin.settle(gateway)
    assert gateway.observe([t]) == {1: JobState(JobPhase.RUNNING)}
    standin.wait_on("default", "slow-pull", "ErrImagePull", "again")  # a new wait starts its own grace
    standin.settle(gateway)
    clock.advance(100)
    assert gateway.observe([t]) == {1: JobState(JobPhase.PENDING)}
    assert standin.job("default", "slow-pull") is not None


def test_cancel_is_one_delete_in_the_background(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    t = task(1, "long", status="Running")
    launch(gateway, t)
    gateway.observe([t])  # as the task watcher does every cycle: the Job's uid is known
    standin.settle(gateway)
    standin.reset_counts()

    gateway.cancel(t)

    assert standin.requests == {"delete": 1}
    assert standin.paths == {("DELETE", "/apis/batch/v1/namespaces/default/jobs/long"): 1}
    assert standin.job("default", "long") is None and standin.pod("default", "long") is None
    gateway.cancel(t)  # gone already: not an error, nothing deleted
    assert standin.requests["delete"] == 1


def test_cancel_never_deletes_another_attempts_job(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    older = task(1, job_name("job", 2), status="Running")  # its attempt 1 has the name of attempt 2 of "job"
    launch(gateway, older)
    current = replace(task(1, "job", status="Running"), attempt=2)
    standin.reset_counts()

    gateway.cancel(current)  # not seen by this replica: GET first, and the labels say it is not ours

    assert standin.requests == {"get": 1}
    assert standin.job("default", job_name("job", 2)) is not None


def _replace_job(standin: ApiStandIn, t: Task) -> str:
    """Delete the Job and create it again under the same name and labels: a new uid."""
    standin.delete_job(t.namespace, t.job_name)
    return str(standin.add_job(build_job_manifest(t, parse_info(t.info)))["metadata"]["uid"])


def test_cancel_deletes_this_attempts_job_when_its_uid_changed(gateway: KubernetesJobGateway,
                                                               standin: ApiStandIn) -> None:
    t = task(1, "long", status="Running")
    launch(gateway, t)
    gateway.observe([t])  # the uid of the first Job is remembered
    _replace_job(standin, t)  # e.g. deleted and adopted again by another replica
    standin.reset_counts()

    gateway.cancel(t)

    calls = {verb: n for verb, n in standin.requests.items() if verb != "watch"}  # the watch runs on its own
    assert calls == {"delete": 2, "get": 1}  # 409 on the old uid, GET, DELETE with the new one
    assert standin.job("default", "long") is None


def test_cancel_leaves_a_job_of_that_name_that_is_not_this_attempts(gateway: KubernetesJobGateway,
                                                                    standin: ApiStandIn) -> None:
    t = task(1, "long", status="Running")
    launch(gateway, t)
    gateway.observe([t])
    standin.delete_job("default", "long")
    standin.add_job(build_job_manifest(task(99, "long"), JobSpec(image="busybox")))  # another task's

    gateway.cancel(t)

    assert standin.job("default", "long") is not None
    assert standin.requests["delete"] == 1


def test_cancel_of_a_job_that_keeps_changing_is_retried_later(gateway: KubernetesJobGateway, standin: ApiStandIn,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    t = task(1, "long", status="Running")
    launch(gateway, t)
    gateway.observe([t])
    handle = standin.handle

    def replaced_before_each_delete(method: str, path: str, headers: Any, body: bytes) -> Any:
        if method == "DELETE":
            _replace_job(standin, t)
        return handle(method, path, headers, body)

    monkeypatch.setattr(standin, "handle", replaced_before_each_delete)

    with pytest.raises(BackendUnavailableError, match="keeps changing"):
        gateway.cancel(t)  # not done: the task watcher must not move the task to Cancelled
    assert standin.job("default", "long") is not None
    assert standin.requests["delete"] == 2  # the old uid, then the new one: once


def test_observing_fifty_tasks_costs_no_call_per_task(clocked: tuple[KubernetesJobGateway, FakeClock],
                                                      standin: ApiStandIn) -> None:
    gateway, clock = clocked
    tasks = [task(i, status="Running") for i in range(1, 51)]
    for t in tasks:
        launch(gateway, t)
    for t in tasks[:5]:
        standin.finish("default", t.name, ok=False)
    for t in tasks[5:10]:
        standin.wait_on("default", t.name)
    gateway.watches.start(["default"])
    standin.settle(gateway)
    standin.reset_counts()
    cycles = [dict(standin.requests)]
    for _ in range(5):
        standin.settle(gateway)
        gateway.observe(tasks)
        cycles.append(dict(standin.requests))
        clock.advance(30)
    per_cycle = [{k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
                 for before, after in zip(cycles, cycles[1:], strict=False)]
    print("requests per observe of 50 tasks:", per_cycle)
    # the Jobs come from the watched cache: no LIST of Jobs in any cycle
    assert per_cycle[0] == {"list_pods": 1, "logs": 5}  # the failed Jobs' logs, once each
    assert per_cycle[1:4] == [{"list_pods": 1}] * 3  # the 5 stuck pods: one LIST
    assert per_cycle[4] == {"list_pods": 1, "delete": 5}  # past the 2 min grace
    assert gateway.observe(tasks) and standin.requests["list"] == 0
    assert standin.requests["list_pods"] == 5  # nothing left to ask pods about


def test_pods_that_cannot_be_listed_leave_the_jobs_own_reason_and_are_asked_again(
    gateway: KubernetesJobGateway, standin: ApiStandIn
) -> None:
    t = task(1, "breaks", status="Running")
    launch(gateway, t)
    standin.script_pod("default", "breaks", exit_code=3)
    standin.write_log("default", "breaks", "oops\n")
    standin.finish("default", "breaks", ok=False)
    standin.fail_verbs = {"list_pods"}

    assert gateway.observe([t]) == {1: JobState(JobPhase.FAILED, "BackoffLimitExceeded: Job has reached the "
                                                                 "specified backoff limit")}
    standin.fail_verbs = set()
    assert gateway.observe([t]) == {1: JobState(JobPhase.FAILED, "exit code 3: oops")}


def test_what_is_remembered_about_pods_is_kept_per_namespace(clocked: tuple[KubernetesJobGateway, FakeClock],
                                                             standin: ApiStandIn) -> None:
    gateway, clock = clocked
    tasks = [task(1, "stuck-a", status="Pending"), task(2, "stuck-b", namespace="other", status="Pending"),
             task(3, "broke-a", status="Running"), task(4, "broke-b", namespace="other", status="Running")]
    for t in tasks:
        launch(gateway, t)
    for t in tasks[:2]:
        standin.wait_on(t.namespace, t.name)
    for t in tasks[2:]:
        standin.finish(t.namespace, t.name, ok=False)
    gateway.observe(tasks)
    standin.reset_counts()
    clock.advance(120)

    states = gateway.observe(tasks)

    assert [states[t.id].retryable for t in tasks] == [False, False, True, True]  # both graces ran out
    assert standin.requests["logs"] == 0  # each failure was read once, in its own namespace


def test_logs_are_the_current_attempts_pod(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    first = task(1, "twice", status="Running")
    second = replace(first, attempt=2)
    launch(gateway, first)
    standin.write_log("default", "twice", "attempt one\n")
    standin.finish("default", "twice", ok=False)
    launch(gateway, second)
    standin.write_log("default", job_name("twice", 2), "attempt two\nstill two\n")
    standin.reset_counts()

    assert list(gateway.logs(second, tail=1)) == ["still two"]
    assert list(gateway.logs(first)) == ["attempt one"]
    assert standin.requests == {"list_pods": 2, "logs": 2}
    pods = "/pods/" + job_name("twice", 2) + "-"
    (sent,) = [path for method, path in standin.paths if path.endswith("/log") and pods in path]
    assert sent.startswith("/api/v1/namespaces/default/pods/" + job_name("twice", 2) + "-")
    with pytest.raises(JobNotFoundError):
        gateway.logs(replace(first, attempt=3))


def test_a_followed_log_ends_soon_after_its_stop_is_set(gateway: KubernetesJobGateway, standin: ApiStandIn) -> None:
    t = task(1, "quiet", status="Running")
    launch(gateway, t)
    standin.start_job("default", "quiet")
    standin.write_log("default", "quiet", "hello\n")
    stop = threading.Event()
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(gateway.logs(t, tail=10, follow=True, stop=stop)))
    reader.start()
    wait = time.monotonic() + 10
    while not got and time.monotonic() < wait:
        time.sleep(0.05)
    assert got == ["hello"]  # then nothing more: the Job is quiet, the read would wait (24 h)

    stop.set()
    reader.join(10)
    assert not reader.is_alive()  # the stream was shut down, not left waiting for a line
    assert standin.job("default", "quiet") is not None  # the Job runs on
