"""The task watcher's whole cycle on the kubernetes gateway: the real client, over HTTP,
against the API stand-in (tests/k8s_standin.py), with a fake clock shared by the stand-in's
Job controller and the watcher (its backoff and its "job not found" grace period)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from k8s_standin import ApiStandIn, write_kubeconfig

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.kubernetes import KubernetesJobGateway
from nightwatch.adapters.jobs.manifest import build_job_manifest
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.task_watcher import TaskWatcher
from nightwatch.domain.errors import BackendUnavailableError, JobRejectedError
from nightwatch.domain.jobspec import JobSpec, parse_info
from nightwatch.domain.model import Fence, NewTask, Task, TaskStatus
from nightwatch.domain.ports import RunContext

SEED = (
    NewTask("demo-task-1", "default", '{"image":"alpine","command":["sleep"],"args":["60"]}', user_id=1),
    NewTask("demo-task-2", "demo", '{"image":"busybox","command":["sleep"],"args":["3600"]}', user_id=2),
)
TERMINAL = {TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value}


class Cycle:
    """One nightwatch leader: memory store, task watcher, kubernetes gateway on a kubeconfig."""

    def __init__(self, standin: ApiStandIn, kubeconfig: Path, clock: FakeClock, *,
                 allowed: Collection[str] = ("default",), missing_grace: float = 60.0,
                 forbidden_grace: float = 600.0) -> None:
        self.standin, self.clock = standin, clock
        self.store = InMemoryTaskStore(clock)
        # the gateway's clock drives its forbidden grace; no client-side rate limit, which on a
        # fake clock standing still between steps would only make the test wait for real
        self.gateway = KubernetesJobGateway(kubeconfig=str(kubeconfig), qps=0, clock=clock,
                                            forbidden_grace=forbidden_grace)
        self.watcher = TaskWatcher(self.store, self.gateway, clock, allowed_namespaces=allowed,
                                   missing_grace=missing_grace,
                                   launch_per_run=100_000)  # one run() here = every task launched, as it was
        self.fence = Fence("nightwatch", self.store.begin_term("nightwatch"))

    def add(self, name: str, namespace: str = "default", **info: object) -> Task:
        return self.store.add(NewTask(name, namespace, json.dumps({"image": "busybox", **info})))

    def run(self) -> None:
        self.standin.settle(self.gateway)  # the watches have seen what the stand-in did so far
        self.watcher.run(RunContext(fence=self.fence))

    def run_tolerant(self) -> bool:
        """One run as the scheduler makes it: a transient API error ends the run, logged."""
        try:
            self.run()
        except BackendUnavailableError:
            return False
        return True

    def status(self, task: Task) -> str:
        return self.store.get(task.id).status

    def message(self, task: Task) -> str:
        return self.store.get(task.id).message or ""

    def close(self) -> None:
        self.watcher.close()
        self.gateway.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def standin(clock: FakeClock) -> Iterator[ApiStandIn]:
    with ApiStandIn(namespaces=("default", "secure"), forbidden=("secure",), clock=clock,
                    start_after=1.0, finish_after=5.0) as s:
        yield s


@pytest.fixture
def kubeconfig(tmp_path: Path, standin: ApiStandIn) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", standin)


@pytest.fixture
def cycle(standin: ApiStandIn, kubeconfig: Path, clock: FakeClock) -> Iterator[Cycle]:
    c = Cycle(standin, kubeconfig, clock, allowed=("default", "demo", "secure"))
    yield c
    c.close()


def test_the_seed_rows(cycle: Cycle, standin: ApiStandIn, clock: FakeClock) -> None:
    one, two = (cycle.store.add(row) for row in SEED)
    cycle.run()
    assert cycle.status(one) == "Pending"
    assert cycle.status(two) == "Failed"
    assert cycle.message(two) == 'job rejected: namespaces "demo" not found'
    clock.advance(1)
    cycle.run()
    assert cycle.status(one) == "Running"
    clock.advance(4)
    cycle.run()
    assert cycle.status(one) == "Succeeded"
    assert [j["metadata"]["name"] for j in standin.jobs()] == ["demo-task-1"]


def test_the_seed_rows_with_demo_not_allowed(standin: ApiStandIn, kubeconfig: Path, clock: FakeClock) -> None:
    c = Cycle(standin, kubeconfig, clock, allowed=("default",))
    one, two = (c.store.add(row) for row in SEED)
    c.run()
    assert c.status(two) == "Failed"
    assert "namespace 'demo' is not allowed" in c.message(two)
    assert standin.requests["create"] == 1  # demo-task-1 only: no call for the refused task
    clock.advance(5)
    c.run()
    assert c.status(one) == "Succeeded"
    c.close()


def test_crash_between_create_and_status_write_is_adopted(cycle: Cycle, standin: ApiStandIn,
                                                          clock: FakeClock) -> None:
    task = cycle.add("crashed", command=["sleep", "1"])
    cycle.gateway.launch(task, parse_info(task.info))  # the Job exists; the status write never happened
    assert cycle.status(task) == "Normal"

    cycle.run()  # the next leader
    assert cycle.status(task) in ("Pending", "Running")
    clock.advance(5)
    cycle.run()

    assert cycle.status(task) == "Succeeded"
    assert standin.created == {("default", "crashed"): 1}
    assert standin.answers[("create", 409)] == 1 and len(standin.jobs()) == 1


def test_a_foreign_job_with_the_tasks_name_fails_the_task(cycle: Cycle, standin: ApiStandIn) -> None:
    foreign = build_job_manifest(Task(9999, "report", "default", "", "Normal"), JobSpec(image="busybox"))
    del foreign["metadata"]["labels"]
    standin.add_job(foreign)
    task = cycle.add("report")

    cycle.run()

    assert cycle.status(task) == "Failed"
    assert cycle.message(task) == ('job rejected: a Job named "report" already exists in namespace "default" '
                                   "and was not created for this task")
    assert standin.job("default", "report")["metadata"].get("labels") is None  # left alone


def test_a_job_deleted_behind_our_back_fails_after_the_grace_period(
    cycle: Cycle, standin: ApiStandIn, clock: FakeClock
) -> None:
    task = cycle.add("vanishing", command=["sleep", "3600"])
    standin.finish_after = None
    cycle.run()
    clock.advance(1)
    cycle.run()
    assert cycle.status(task) == "Running"

    standin.delete_job("default", "vanishing")
    cycle.run()
    clock.advance(59)
    cycle.run()
    assert cycle.status(task) == "Running"  # within the grace period
    clock.advance(2)
    cycle.run()

    assert cycle.status(task) == "Failed"
    assert cycle.message(task).startswith("job not found")
    assert standin.created == {("default", "vanishing"): 1}  # not re-created behind the user's back


FORBIDDEN = ('jobs.batch is forbidden: User "system:serviceaccount:nightwatch:nightwatch" cannot '
             'create resource "jobs" in API group "batch" in the namespace "secure"')


def test_a_422_refusal_fails_the_task_with_the_api_message_and_a_403_does_not(cycle: Cycle, clock: FakeClock) -> None:
    # built past the domain's own requests <= limits check, to show the API server's answer
    greedy = cycle.store.add(NewTask("greedy", "default", json.dumps({"image": "busybox"})))
    greedy_spec = JobSpec(image="busybox", resources={"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}})
    with pytest.raises(JobRejectedError) as e:
        cycle.gateway.launch(greedy, greedy_spec)
    assert str(e.value) == (
        'Job.batch "greedy" is invalid: spec.template.spec.containers[0].resources.requests: '
        'Invalid value: "2Gi": must be less than or equal to memory limit of 1Gi'
    )
    locked = cycle.add("locked", "secure")
    fine = cycle.add("fine")

    cycle.run()

    assert cycle.status(locked) == "Normal"  # forbidden: an operator's error, not the task's
    clock.advance(5)
    cycle.run()
    assert cycle.status(fine) == "Succeeded"


def run_for(cycle: Cycle, seconds: float, step: float = 2.0) -> None:
    """The watcher's runs, every ``step`` seconds of the fake clock, for ``seconds``."""
    end = cycle.clock.monotonic() + seconds
    while cycle.clock.monotonic() < end:
        cycle.run()
        cycle.clock.advance(step)


def test_forbidden_for_less_than_the_grace_keeps_tasks_normal_then_launches_them_once_allowed(
    cycle: Cycle, standin: ApiStandIn, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    locked = [cycle.add(f"locked-{i}", "secure") for i in range(3)]
    fine = cycle.add("fine")

    with caplog.at_level(logging.WARNING):
        run_for(cycle, 590)  # a RoleBinding that lags a config change by almost the grace

    assert [cycle.status(t) for t in locked] == ["Normal"] * 3
    assert cycle.status(fine) == "Succeeded"  # the other namespaces go on meanwhile
    attempts = standin.answers[("create", 403)]
    assert 3 * 5 <= attempts <= 3 * 15  # backed off (2 s doubling to 120 s), not once per run
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and "secure" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]  # once for the namespace

    standin.forbidden.discard("secure")  # the RoleBinding arrives
    run_for(cycle, 130)

    assert [cycle.status(t) for t in locked] != ["Normal"] * 3
    assert all(cycle.status(t) in ("Pending", "Running", "Succeeded") for t in locked)
    assert all(standin.created[("secure", t.name)] == 1 for t in locked)


def test_forbidden_past_the_grace_fails_the_task_with_the_api_message(
    cycle: Cycle, standin: ApiStandIn, clock: FakeClock
) -> None:
    locked = cycle.add("locked", "secure")

    run_for(cycle, 598)
    assert cycle.status(locked) == "Normal"
    run_for(cycle, 130)

    assert cycle.status(locked) == "Failed"
    assert cycle.message(locked).startswith(f"job rejected: {FORBIDDEN}")
    assert not standin.jobs("secure")


def test_with_ten_percent_faults_every_task_ends_with_exactly_one_job(
    kubeconfig: Path, standin: ApiStandIn, clock: FakeClock
) -> None:
    standin.fault_rate, standin.fault_kinds, standin.finish_after = 0.10, ("429", "500", "504"), 2.0
    c = Cycle(standin, kubeconfig, clock)
    tasks = [c.add(f"job-{i:03d}", command=["false"] if i % 3 == 0 else ["true"]) for i in range(300)]

    runs = failed_runs = 0
    while runs < 200 and any(c.status(t) not in TERMINAL for t in tasks):
        failed_runs += not c.run_tolerant()
        runs += 1
        clock.advance(2)
    c.close()

    print(f"\n300 tasks, 10% faults: {runs} runs ({failed_runs} ended by a transient error); "
          f"faults injected {dict(standin.faults)}; requests {dict(standin.requests)}")
    assert sum(standin.faults.values()) >= 20  # the faults really happened
    assert {t.name: c.status(t) for t in tasks} == {
        t.name: "Failed" if i % 3 == 0 else "Succeeded" for i, t in enumerate(tasks)
    }
    # the pod's exit code; the Job's own reason when its pods could not be read (a fault)
    assert all(c.message(t).startswith(("exit code 1", "BackoffLimitExceeded")) for t in tasks[::3])
    assert len(standin.created) == 300 and set(standin.created.values()) == {1}
    assert len(standin.jobs()) == 300


def test_syncing_2000_in_flight_tasks_costs_at_most_4_lists_and_no_get(
    kubeconfig: Path, standin: ApiStandIn, clock: FakeClock
) -> None:
    standin.start_after = standin.finish_after = None  # the Jobs wait until we say
    c = Cycle(standin, kubeconfig, clock)
    tasks = [c.add(f"bulk-{i:04d}") for i in range(2000)]

    def one_cycle(label: str) -> tuple[int, int]:
        standin.reset_counts()
        writes = c.store.writes
        started = time.monotonic()
        c.run()
        took = time.monotonic() - started
        print(f"\n{label}: {dict(standin.requests)}, rows written {c.store.writes - writes}, {took:.2f}s")
        assert standin.requests["get"] == 0
        assert standin.requests["list"] <= 4
        return standin.requests["list"], c.store.writes - writes

    one_cycle("launch cycle (2000 creates, then sync)")
    assert {c.status(t) for t in tasks} == {"Pending"}
    # the first sync LISTed (4 pages of 500) and watches since: no LIST in the later cycles
    assert one_cycle("sync, nothing changed") == (0, 0)  # only rows whose status changes are written
    standin.start_after = 0.0
    assert one_cycle("sync, all Jobs active") == (0, 2000)
    assert {c.status(t) for t in tasks} == {"Running"}
    standin.finish_after = 0.0
    assert one_cycle("sync, all Jobs complete") == (0, 2000)
    assert {c.status(t) for t in tasks} == {"Succeeded"}
    assert standin.requests["patch"] == 2000  # each finished Job retired, once
    assert standin.jobs() and all(j["metadata"]["labels"].get("nightwatch.io/done") == "true"
                                  for j in standin.jobs())
    c.close()
