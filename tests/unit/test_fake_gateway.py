"""What only the fake job gateway promises: its timeline under the fake clock, its failure
rule, the API server's refusals, and the faults tests inject."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import BACKOFF_LIMIT_EXCEEDED, DEADLINE_EXCEEDED, FakeJobGateway
from nightwatch.domain.constants import ATTEMPT_LABEL, MANAGED_BY_LABEL, TASK_ID_LABEL
from nightwatch.domain.errors import BackendUnavailableError, JobConflictError, JobRejectedError
from nightwatch.domain.jobspec import JobDefaults, JobSpec
from nightwatch.domain.model import JobPhase, JobState, Task
from nightwatch.domain.ports import LaunchOutcome

SLEEP_5 = JobSpec(image="alpine", command=("sleep",), args=("5",))


def task(task_id: int, name: str = "t", namespace: str = "default") -> Task:
    return Task(id=task_id, name=name, namespace=namespace, info="{}", status="Pending")


def phase_at(gateway: FakeJobGateway, clock: FakeClock, t: Task, at: float, start: float) -> JobPhase:
    clock.advance(start + at - clock.monotonic())
    return gateway.observe([t])[t.id].phase


def test_the_timeline_follows_start_delay_and_sleep_seconds() -> None:
    clock = FakeClock()
    gateway = FakeJobGateway(clock, start_delay=1.0)
    t, start = task(1), clock.monotonic()
    gateway.launch(t, SLEEP_5)

    assert phase_at(gateway, clock, t, 0.0, start) == JobPhase.PENDING
    assert phase_at(gateway, clock, t, 0.99, start) == JobPhase.PENDING
    assert phase_at(gateway, clock, t, 1.0, start) == JobPhase.RUNNING
    assert phase_at(gateway, clock, t, 5.99, start) == JobPhase.RUNNING
    assert phase_at(gateway, clock, t, 6.0, start) == JobPhase.SUCCEEDED


def test_other_commands_take_the_default_duration() -> None:
    clock = FakeClock()
    gateway = FakeJobGateway(clock, default_duration=2.0)
    t, start = task(1), clock.monotonic()
    gateway.launch(t, JobSpec(image="alpine", command=("sleep",), args=("soon",)))

    assert phase_at(gateway, clock, t, 1.9, start) == JobPhase.RUNNING
    assert phase_at(gateway, clock, t, 2.0, start) == JobPhase.SUCCEEDED


@pytest.mark.parametrize("spec", [
    JobSpec(image="alpine", command=("false",)),
    JobSpec(image="alpine", command=("sleep",), args=("5",), env={"FAKE_FAIL": "1"}),
])
def test_false_or_fake_fail_ends_failed_with_the_backoff_reason(spec: JobSpec) -> None:
    clock = FakeClock()
    gateway = FakeJobGateway(clock)
    gateway.launch(task(1), spec)

    clock.advance(10)

    assert gateway.observe([task(1)])[1] == JobState(JobPhase.FAILED, BACKOFF_LIMIT_EXCEEDED)


def test_a_failing_job_runs_once_per_allowed_retry() -> None:
    clock = FakeClock()
    gateway = FakeJobGateway(clock, defaults=JobDefaults(backoff_limit=2))
    t, start = task(1), clock.monotonic()
    gateway.launch(t, JobSpec(image="alpine", command=("sleep",), args=("5",), env={"FAKE_FAIL": "1"}))

    assert phase_at(gateway, clock, t, 14.9, start) == JobPhase.RUNNING
    assert phase_at(gateway, clock, t, 15.0, start) == JobPhase.FAILED


def test_active_deadline_fails_a_job_that_runs_too_long() -> None:
    clock = FakeClock()
    gateway = FakeJobGateway(clock, defaults=JobDefaults(active_deadline_seconds=3))
    gateway.launch(task(1), SLEEP_5)

    clock.advance(3)

    assert gateway.observe([task(1)])[1] == JobState(JobPhase.FAILED, DEADLINE_EXCEEDED)


def test_finished_jobs_disappear_after_their_ttl() -> None:
    clock = FakeClock()
    gateway = FakeJobGateway(clock, defaults=JobDefaults(ttl_seconds_after_finished=100))
    gateway.launch(task(1), SLEEP_5)

    clock.advance(104)
    assert gateway.observe([task(1)])[1].phase == JobPhase.SUCCEEDED
    clock.advance(1)

    assert gateway.observe([task(1)]) == {}
    assert gateway.jobs == {}


def test_jobs_carry_nightwatchs_labels() -> None:
    gateway = FakeJobGateway(FakeClock())
    gateway.launch(task(42, "labelled"), SLEEP_5)

    job = gateway.jobs[("default", "labelled")]

    assert job.labels == {MANAGED_BY_LABEL: "nightwatch", TASK_ID_LABEL: "42", ATTEMPT_LABEL: "1"}
    assert (job.task_id, job.spec) == (42, SLEEP_5)


def test_a_missing_namespace_is_refused_as_the_api_server_would() -> None:
    gateway = FakeJobGateway(FakeClock(), namespaces={"default"})

    with pytest.raises(JobRejectedError, match='^namespaces "demo" not found$'):
        gateway.launch(task(2, "demo-task-2", "demo"), SLEEP_5)
    assert gateway.launch(task(1, "demo-task-1"), SLEEP_5) == LaunchOutcome.CREATED


def test_an_empty_image_is_refused() -> None:
    with pytest.raises(JobRejectedError, match="image: Required value"):
        FakeJobGateway(FakeClock()).launch(task(1), JobSpec(image=" "))


def test_injected_create_failures_are_transient() -> None:
    gateway = FakeJobGateway(FakeClock())
    gateway.fail_next_creates = 2

    for _ in range(2):
        with pytest.raises(BackendUnavailableError):
            gateway.launch(task(1), SLEEP_5)

    assert gateway.launch(task(1), SLEEP_5) == LaunchOutcome.CREATED
    assert gateway.created == [("default", "t", 1)]


def test_an_unavailable_cluster_refuses_every_call() -> None:
    gateway = FakeJobGateway(FakeClock())
    gateway.launch(task(1), SLEEP_5)
    gateway.unavailable = True

    with pytest.raises(BackendUnavailableError):
        gateway.observe([task(1)])
    with pytest.raises(BackendUnavailableError):
        gateway.launch(task(2, "u"), SLEEP_5)
    gateway.unavailable = False
    assert 1 in gateway.observe([task(1)])


def test_adoption_and_conflict_read_the_existing_job_once_each() -> None:
    gateway = FakeJobGateway(FakeClock())
    gateway.launch(task(1), SLEEP_5)

    assert gateway.launch(task(1), SLEEP_5) == LaunchOutcome.ADOPTED
    with pytest.raises(JobConflictError):
        gateway.launch(task(2), SLEEP_5)

    assert gateway.get_calls == 2
    assert gateway.created == [("default", "t", 1)]


def test_record_path_gets_one_line_per_real_create(tmp_path: Path) -> None:
    record = tmp_path / "launches"
    gateway = FakeJobGateway(FakeClock(), record_path=str(record))
    gateway.launch(task(1, "a"), SLEEP_5)
    gateway.launch(task(1, "a"), SLEEP_5)
    gateway.launch(task(2, "b", "other"), SLEEP_5)

    assert record.read_text() == "1 default/a\n2 other/b\n"


def test_concurrent_launches_and_observes_create_each_job_once() -> None:
    clock = FakeClock()
    gateway = FakeJobGateway(clock)
    tasks = [task(i, f"t-{i}") for i in range(200)]
    outcomes: list[LaunchOutcome] = []
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for t in tasks:
            outcomes.append(gateway.launch(t, SLEEP_5))
            gateway.observe(tasks[:10])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    assert outcomes.count(LaunchOutcome.CREATED) == 200
    assert sorted(c[2] for c in gateway.created) == list(range(200))
