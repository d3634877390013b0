"""The JobGateway contract, against the Protocol only, over every adapter (fake, local, kubernetes).

What one adapter alone promises lives in tests/unit (test_fake_gateway, test_local_gateway).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from job_drivers import DRIVERS, FINISHED, JobDriver, probe_spec

from nightwatch.domain.errors import JobConflictError, JobNotFoundError, JobRejectedError
from nightwatch.domain.jobspec import JobSpec
from nightwatch.domain.model import JobPhase, Task, job_name
from nightwatch.domain.ports import JobGateway, LaunchOutcome

ORDER = {JobPhase.PENDING: 0, JobPhase.RUNNING: 1, JobPhase.SUCCEEDED: 2, JobPhase.FAILED: 2}


@pytest.fixture(params=list(DRIVERS))
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobDriver]:
    d = DRIVERS[request.param](tmp_path)
    yield d
    d.close()


@pytest.fixture
def uid() -> str:
    """A suffix that keeps Job names unique even on a backend shared by the whole session."""
    return uuid.uuid4().hex[:8]


_ids = iter(range(10_000_000, 2**62))


def make_task(name: str, namespace: str, spec: JobSpec, task_id: int | None = None, attempt: int = 1) -> Task:
    info = json.dumps({"image": spec.image, "command": list(spec.command), "args": list(spec.args),
                       "env": dict(spec.env)})
    return Task(id=task_id if task_id is not None else next(_ids), name=name, namespace=namespace,
                info=info, status="Pending", attempt=attempt)


def next_attempt(task: Task) -> Task:
    return replace(task, attempt=task.attempt + 1, status="Pending")


def wait_until_running(driver: JobDriver, gateway: JobGateway, task: Task, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / driver.poll_step) + 1):
        state = gateway.observe([task]).get(task.id)
        if state is not None and state.phase is not JobPhase.PENDING:
            assert state.phase is JobPhase.RUNNING, state
            return
        driver.advance(driver.poll_step)
    raise AssertionError(f"{driver.name}: Job of task {task.id} not running after {timeout}s")


def test_launch_creates_a_job_that_runs_to_success(driver: JobDriver, tmp_path: Path, uid: str) -> None:
    gateway = driver.make_gateway()
    spec = probe_spec(tmp_path / "marker", seconds=0.3)
    task = make_task(f"ok-{uid}", driver.namespaces[0], spec)

    assert gateway.launch(task, spec) == LaunchOutcome.CREATED

    first = gateway.observe([task])[task.id]
    assert first.phase in (JobPhase.PENDING, JobPhase.RUNNING)
    phases: list[JobPhase] = [first.phase]
    for _ in range(int(10 / driver.poll_step)):
        state = gateway.observe([task])[task.id]
        assert ORDER[state.phase] >= ORDER[phases[-1]], f"phase moved backwards: {phases} then {state}"
        phases.append(state.phase)
        if state.phase in FINISHED:
            break
        driver.advance(driver.poll_step)
    assert state.phase == JobPhase.SUCCEEDED, phases
    assert driver.runs(gateway, task, tmp_path / "marker") == 1


def test_a_failing_command_ends_failed_with_a_message(driver: JobDriver, uid: str) -> None:
    gateway = driver.make_gateway()
    spec = JobSpec(image="busybox", command=("false",))
    task = make_task(f"fails-{uid}", driver.namespaces[0], spec)

    gateway.launch(task, spec)
    state = driver.wait_until_finished(gateway, [task])[task.id]

    assert state.phase == JobPhase.FAILED
    assert state.message.strip()


def test_launching_the_same_task_again_adopts_its_job(driver: JobDriver, tmp_path: Path, uid: str) -> None:
    gateway = driver.make_gateway()
    marker = tmp_path / "marker"
    spec = probe_spec(marker, seconds=0.2)
    task = make_task(f"twice-{uid}", driver.namespaces[0], spec)

    assert gateway.launch(task, spec) == LaunchOutcome.CREATED
    assert gateway.launch(task, spec) == LaunchOutcome.ADOPTED  # the crash-before-status-write case
    driver.wait_until_finished(gateway, [task])
    assert gateway.launch(task, spec) == LaunchOutcome.ADOPTED  # also once it has finished

    assert gateway.observe([task])[task.id].phase == JobPhase.SUCCEEDED
    assert driver.runs(gateway, task, marker) == 1


def test_concurrent_launches_of_one_task_create_one_job(driver: JobDriver, tmp_path: Path, uid: str) -> None:
    gateway = driver.make_gateway()
    marker = tmp_path / "marker"
    spec = probe_spec(marker)
    task = make_task(f"race-{uid}", driver.namespaces[0], spec)
    outcomes: list[LaunchOutcome] = []
    start = threading.Barrier(8)

    def launch() -> None:
        start.wait()
        outcomes.append(gateway.launch(task, spec))

    threads = [threading.Thread(target=launch) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    driver.wait_until_finished(gateway, [task])

    assert sorted(outcomes) == sorted([LaunchOutcome.CREATED] + [LaunchOutcome.ADOPTED] * 7)
    assert driver.runs(gateway, task, marker) == 1


def test_a_job_of_the_same_name_for_another_task_is_a_conflict(
    driver: JobDriver, tmp_path: Path, uid: str
) -> None:
    gateway = driver.make_gateway()
    marker = tmp_path / "marker"
    spec = probe_spec(marker)
    owner = make_task(f"taken-{uid}", driver.namespaces[0], spec)
    intruder = make_task(owner.name, owner.namespace, spec)
    gateway.launch(owner, spec)

    with pytest.raises(JobConflictError, match="already exists") as caught:
        gateway.launch(intruder, spec)

    assert owner.name in str(caught.value)
    observed = driver.wait_until_finished(gateway, [owner])
    assert intruder.id not in gateway.observe([owner, intruder])  # the Job is not the intruder's
    assert observed[owner.id].phase == JobPhase.SUCCEEDED
    assert driver.runs(gateway, owner, marker) == 1


def test_the_same_name_in_another_namespace_is_another_job(driver: JobDriver, tmp_path: Path, uid: str) -> None:
    gateway = driver.make_gateway()
    a = make_task(f"twin-{uid}", driver.namespaces[0], spec_a := probe_spec(tmp_path / "a"))
    b = make_task(a.name, driver.namespaces[1], spec_b := probe_spec(tmp_path / "b"))

    assert gateway.launch(a, spec_a) == LaunchOutcome.CREATED
    assert gateway.launch(b, spec_b) == LaunchOutcome.CREATED
    observed = driver.wait_until_finished(gateway, [a, b])

    assert {observed[a.id].phase, observed[b.id].phase} == {JobPhase.SUCCEEDED}


def test_a_task_whose_job_never_existed_is_absent(driver: JobDriver, uid: str) -> None:
    gateway = driver.make_gateway()
    spec = JobSpec(image="busybox", command=("true",))
    launched = make_task(f"here-{uid}", driver.namespaces[0], spec)
    never = make_task(f"never-{uid}", driver.namespaces[0], spec)
    elsewhere = make_task(f"nowhere-{uid}", driver.namespaces[1], spec)
    gateway.launch(launched, spec)

    observed = gateway.observe([launched, never, elsewhere])

    assert set(observed) == {launched.id}
    assert gateway.observe([]) == {}


def test_a_job_deleted_behind_our_back_is_absent(driver: JobDriver, tmp_path: Path, uid: str) -> None:
    gateway = driver.make_gateway()
    spec = probe_spec(tmp_path / "marker", seconds=5)
    task = make_task(f"deleted-{uid}", driver.namespaces[0], spec)
    gateway.launch(task, spec)
    assert task.id in gateway.observe([task])

    driver.delete(gateway, task)

    assert task.id not in gateway.observe([task])


def test_observe_costs_one_listing_per_namespace(driver: JobDriver, uid: str) -> None:
    gateway = driver.make_gateway()
    spec = JobSpec(image="busybox", command=("true",))
    tasks = [make_task(f"many-{uid}-{i}", driver.namespaces[i % 2], spec) for i in range(50)]
    for task in tasks:
        gateway.launch(task, spec)
    before = driver.list_calls(gateway)

    observed = gateway.observe(tasks)

    assert set(observed) == {t.id for t in tasks}
    assert driver.list_calls(gateway) - before == 2


def test_the_specs_env_reaches_the_process(driver: JobDriver, tmp_path: Path, uid: str) -> None:
    gateway = driver.make_gateway()
    marker = tmp_path / "marker"
    spec = probe_spec(marker, env={"FOO": "hello from info.env"})
    task = make_task(f"env-{uid}", driver.namespaces[0], spec)

    gateway.launch(task, spec)
    driver.wait_until_finished(gateway, [task])

    assert driver.env_seen(gateway, task, marker) == "hello from info.env"


@pytest.mark.parametrize("name", ["Upper-Case", "under_score", "x" * 64, "-leading-dash"])
def test_a_name_that_is_no_dns_label_is_rejected_for_good(driver: JobDriver, name: str) -> None:
    gateway = driver.make_gateway()
    spec = JobSpec(image="busybox", command=("true",))
    task = make_task(name, driver.namespaces[0], spec)

    with pytest.raises(JobRejectedError) as caught:
        gateway.launch(task, spec)

    assert not isinstance(caught.value, JobConflictError)
    assert task.id not in gateway.observe([task])


# -- attempts ------------------------------------------------------------------------------


def test_each_attempt_has_its_own_job(driver: JobDriver, tmp_path: Path, uid: str) -> None:
    gateway = driver.make_gateway()
    first = make_task(f"again-{uid}", driver.namespaces[0], spec := probe_spec(tmp_path / "marker"))
    assert gateway.launch(first, spec) == LaunchOutcome.CREATED
    driver.wait_until_finished(gateway, [first])
    second = next_attempt(first)
    assert second.job_name == job_name(first.name, 2) != first.job_name

    spec2 = probe_spec(tmp_path / "marker2")
    assert gateway.launch(second, spec2) == LaunchOutcome.CREATED  # the old Job is not adopted
    driver.wait_until_finished(gateway, [second])

    assert driver.runs(gateway, first, tmp_path / "marker") == 1
    assert driver.runs(gateway, second, tmp_path / "marker2") == 1
    assert gateway.launch(second, spec2) == LaunchOutcome.ADOPTED  # its own Job, once it exists
    assert gateway.observe([second])[second.id].phase is JobPhase.SUCCEEDED


def test_a_job_of_another_attempt_is_never_adopted_or_observed(driver: JobDriver, uid: str) -> None:
    gateway = driver.make_gateway()
    spec = JobSpec(image="busybox", command=("sleep",), args=("30",))
    # A task named like attempt 2 of "<n>" (the same task id): the Job of one attempt under the
    # other's name -- only the attempt label tells them apart.
    older = make_task(job_name(f"clash-{uid}", 2), driver.namespaces[0], spec)
    current = replace(make_task(f"clash-{uid}", older.namespace, spec, task_id=older.id), attempt=2)
    assert current.job_name == older.job_name
    assert gateway.launch(older, spec) == LaunchOutcome.CREATED

    with pytest.raises(JobConflictError, match="already exists"):
        gateway.launch(current, spec)
    assert current.id not in gateway.observe([current])
    with pytest.raises(JobNotFoundError):
        gateway.logs(current)
    gateway.cancel(current)  # not its Job: left alone
    assert older.id in gateway.observe([older])


def test_without_the_attempt_check_the_old_attempts_job_would_be_adopted(
    driver: JobDriver, uid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The previous test can fail: with the adapter's attempt check switched off from here, the
    other attempt's Job is adopted and observed as this attempt's."""
    driver.disable_attempt_check(monkeypatch)
    gateway = driver.make_gateway()
    spec = JobSpec(image="busybox", command=("sleep",), args=("30",))
    older = make_task(job_name(f"clash-{uid}", 2), driver.namespaces[0], spec)
    current = replace(make_task(f"clash-{uid}", older.namespace, spec, task_id=older.id), attempt=2)
    gateway.launch(older, spec)

    assert gateway.launch(current, spec) == LaunchOutcome.ADOPTED
    assert current.id in gateway.observe([current])


# -- cancel --------------------------------------------------------------------------------


def test_cancel_stops_the_job_of_the_current_attempt(driver: JobDriver, uid: str) -> None:
    gateway = driver.make_gateway()
    spec = JobSpec(image="busybox", command=("sleep",), args=("30",))
    first = make_task(f"stop-{uid}", driver.namespaces[0], JobSpec(image="busybox", command=("true",)))
    gateway.launch(first, JobSpec(image="busybox", command=("true",)))
    driver.wait_until_finished(gateway, [first])
    second = next_attempt(first)
    gateway.launch(second, spec)
    wait_until_running(driver, gateway, second)

    gateway.cancel(second)

    assert second.id not in gateway.observe([second])  # gone, as after a DELETE
    assert gateway.observe([first])[first.id].phase is JobPhase.SUCCEEDED  # the other attempt's is left
    gateway.cancel(second)  # again: nothing left to stop, not an error
    gateway.cancel(make_task(f"never-{uid}", driver.namespaces[0], spec))


# -- logs ----------------------------------------------------------------------------------


def test_logs_of_a_finished_job_tail_and_all(driver: JobDriver, uid: str) -> None:
    gateway = driver.make_gateway()
    output = [f"line-{i}" for i in range(1, 8)]
    spec = driver.output_spec(output)
    task = make_task(f"talks-{uid}", driver.namespaces[0], spec)
    gateway.launch(task, spec)
    driver.print(gateway, task, output)
    driver.wait_until_finished(gateway, [task])

    assert list(gateway.logs(task, tail=3)) == output[-3:]
    assert list(gateway.logs(task, tail=None)) == output
    assert list(gateway.logs(task, tail=100)) == output
    assert list(gateway.logs(task, tail=0)) == []
    assert list(gateway.logs(task, tail=2, follow=True)) == output[-2:]  # the Job has ended: no waiting


def test_logs_without_a_job_is_job_not_found(driver: JobDriver, uid: str) -> None:
    gateway = driver.make_gateway()
    spec = JobSpec(image="busybox", command=("true",))
    task = make_task(f"silent-{uid}", driver.namespaces[0], spec)

    with pytest.raises(JobNotFoundError):
        gateway.logs(task)
    gateway.launch(task, spec)
    driver.wait_until_finished(gateway, [task])
    with pytest.raises(JobNotFoundError):
        gateway.logs(next_attempt(task))  # the next attempt has no Job yet


def test_follow_yields_new_lines_until_the_job_ends(driver: JobDriver, uid: str) -> None:
    if not driver.follows:
        pytest.skip(f"{driver.name}: no time passes while a caller follows")
    gateway = driver.make_gateway()
    spec = driver.output_spec(["first"], seconds=0.6) if driver.name != "local" else JobSpec(
        image="busybox", command=("sh", "-c", "echo first; sleep 0.6; echo second; sleep 0.3; echo third"))
    task = make_task(f"follow-{uid}", driver.namespaces[0], spec)
    gateway.launch(task, spec)
    wait_until_running(driver, gateway, task)
    driver.print(gateway, task, ["first"])
    seen: list[str] = []
    got_first = threading.Event()

    def follow() -> None:
        for line in gateway.logs(task, tail=None, follow=True):
            seen.append(line)
            got_first.set()

    reader = threading.Thread(target=follow)
    reader.start()
    assert got_first.wait(10)
    driver.print(gateway, task, ["second", "third"])
    driver.finish(gateway, task)
    reader.join(10)

    assert not reader.is_alive()
    assert seen == ["first", "second", "third"]
