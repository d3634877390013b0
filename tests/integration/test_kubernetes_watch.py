"""The Kubernetes gateway's watches (issue 11): observe() reads a cache kept by one LIST + WATCH
per namespace, through the official client, over HTTP, against the API stand-in -- which serves
watch streams with bookmarks, expiring resourceVersions, cut and stalled connections."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from k8s_standin import ApiStandIn, write_kubeconfig

from nightwatch.adapters.jobs.kubernetes import KubernetesJobGateway
from nightwatch.adapters.jobs.manifest import build_job_manifest
from nightwatch.domain.constants import WORKING_SELECTOR
from nightwatch.domain.jobspec import JobSpec, parse_info
from nightwatch.domain.model import JobPhase, JobState, Task
from nightwatch.domain.ports import LaunchOutcome


def task(task_id: int, namespace: str = "default", status: str = "Running") -> Task:
    return Task(task_id, f"task-{task_id}", namespace, '{"image": "alpine"}', status)


@pytest.fixture
def standin() -> Iterator[ApiStandIn]:
    with ApiStandIn(namespaces=("default", "other")) as s:  # Jobs run until finished by hand
        yield s


@pytest.fixture
def kubeconfig(tmp_path: Path, standin: ApiStandIn) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", standin)


@pytest.fixture
def make(kubeconfig: Path) -> Iterator[Callable[..., KubernetesJobGateway]]:
    made: list[KubernetesJobGateway] = []

    def gateway(**kwargs: Any) -> KubernetesJobGateway:
        made.append(KubernetesJobGateway(kubeconfig=str(kubeconfig), qps=0, **kwargs))
        return made[-1]

    yield gateway
    for g in made:
        g.close()


def launched(g: KubernetesJobGateway, standin: ApiStandIn, *tasks: Task) -> None:
    """Launch the tasks, observe them once (the first LIST, then the watch), let the watch settle."""
    for t in tasks:
        assert g.launch(t, parse_info(t.info)) is LaunchOutcome.CREATED
    g.observe(tasks)
    standin.settle(g)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.02)


def test_a_job_finishing_is_seen_without_a_list_and_wakes_the_watcher(make: Any, standin: ApiStandIn) -> None:
    g = make()
    wakes = threading.Semaphore(0)
    g.set_wake(wakes.release)
    t = task(1)
    launched(g, standin, t)
    assert g.observe([t]) == {1: JobState(JobPhase.RUNNING)}
    while wakes.acquire(blocking=False):
        pass
    standin.reset_counts()
    standin.finish("default", t.job_name)
    assert wakes.acquire(timeout=10)  # the MODIFIED event woke the watcher's sync
    standin.settle(g)
    assert g.observe([t]) == {1: JobState(JobPhase.SUCCEEDED)}
    assert standin.requests == {}  # not one request: the event came on the open watch


def test_with_the_watches_healthy_sync_cycles_make_no_api_call(make: Any, standin: ApiStandIn) -> None:
    g = make()
    tasks = [task(i, "default" if i % 2 else "other") for i in range(1, 41)]
    launched(g, standin, *tasks)
    before = sum(g.requests.values())
    standin.reset_counts()
    for _ in range(20):
        states = g.observe(tasks)
        assert set(states.values()) == {JobState(JobPhase.RUNNING)} and len(states) == 40
    assert standin.requests == {} and sum(g.requests.values()) == before


@pytest.mark.parametrize("expire_as", ["event", "http"])
def test_an_expired_resource_version_relists_once(make: Any, standin: ApiStandIn, expire_as: str) -> None:
    standin.watches.expire_as = expire_as  # an ERROR event with a 410 Status, or an HTTP 410
    g = make()
    t = task(1)
    launched(g, standin, t)
    standin.reset_counts()
    standin.expire()
    standin.finish("default", t.job_name)  # while the watch is down: only the new LIST shows it
    standin.watches.drop_streams()
    standin.settle(g)
    assert g.observe([t]) == {1: JobState(JobPhase.SUCCEEDED)}
    assert standin.requests["list"] == 1  # one 410, one LIST, then watching again
    assert standin.requests["watch"] == 2
    assert standin.answers[("watch", 410)] == (1 if expire_as == "http" else 0)


def test_a_dropped_stream_reconnects_from_where_it_was(make: Any, standin: ApiStandIn) -> None:
    g = make()
    t = task(1)
    launched(g, standin, t)
    standin.reset_counts()
    standin.watches.drop_streams()
    standin.finish("default", t.job_name, ok=False)
    standin.settle(g)
    assert g.observe([t])[1].phase is JobPhase.FAILED
    assert standin.requests["watch"] == 1 and standin.requests["list"] == 0  # no LIST: resumed


def test_a_stalled_stream_is_noticed_by_the_read_timeout_and_made_again(make: Any, standin: ApiStandIn) -> None:
    g = make(watch_read_timeout=0.5)
    t = task(1)
    launched(g, standin, t)
    standin.reset_counts()
    standin.watches.stall_streams()  # the connection stays open and goes silent
    standin.finish("default", t.job_name)
    eventually(lambda: g.observe([t]) == {1: JobState(JobPhase.SUCCEEDED)})
    assert standin.requests["watch"] == 1 and standin.requests["list"] == 0


def test_a_deleted_namespace_leaves_its_tasks_missing_not_unknown(make: Any, standin: ApiStandIn) -> None:
    g = make()
    mine, elsewhere = task(1), task(2, "other")
    launched(g, standin, mine, elsewhere)
    standin.delete_namespace("other")
    standin.settle(g)
    assert g.observe([mine, elsewhere]) == {1: JobState(JobPhase.RUNNING)}  # task 2: its Job is gone


def test_a_resync_finds_a_change_the_watch_missed(make: Any, standin: ApiStandIn) -> None:
    g = make(resync=1.0)
    t = task(1)
    launched(g, standin, t)
    lists = standin.requests["list"]
    standin.watches.drop_next_event("default")
    standin.finish("default", t.job_name)
    standin.settle(g)  # the watch is past the change (bookmarks) but never got it
    assert g.observe([t]) == {1: JobState(JobPhase.RUNNING)} and standin.watches.dropped == 1
    eventually(lambda: g.observe([t]) == {1: JobState(JobPhase.SUCCEEDED)})
    assert standin.requests["list"] > lists


def test_a_broken_watch_reports_its_tasks_unknown_until_it_recovers(make: Any, standin: ApiStandIn) -> None:
    g = make()
    mine, elsewhere = task(1), task(2, "other")
    launched(g, standin, mine, elsewhere)
    standin.fail_verbs = {"watch"}
    standin.watches.drop_streams()
    eventually(lambda: g.observe([mine])[1].phase is JobPhase.UNKNOWN)
    states = g.observe([mine, elsewhere])
    assert "answered 500" in states[1].message
    standin.fail_verbs = set()
    standin.settle(g)
    assert g.observe([mine, elsewhere]) == {1: JobState(JobPhase.RUNNING), 2: JobState(JobPhase.RUNNING)}


def test_retired_jobs_are_not_listed_or_watched_but_still_found_by_name(make: Any, standin: ApiStandIn) -> None:
    g = make()
    done, running = task(1), task(2)
    launched(g, standin, done, running)
    standin.finish("default", done.job_name)
    g.retire(done)
    standin.settle(g)
    watch = g.watches.get("default")
    assert watch is not None and [j["metadata"]["name"] for j in watch.jobs()] == ["task-2"]
    assert g.observe([done, running]) == {2: JobState(JobPhase.RUNNING)}
    assert standin.requests["patch"] == 1
    job = standin.job("default", done.job_name)
    assert job is not None and job["metadata"]["labels"]["nightwatch.io/done"] == "true"
    # a new replica's LIST does not return it either
    fresh = make()
    assert fresh.observe([done, running]) == {2: JobState(JobPhase.RUNNING)}
    listed = standin.handle("GET", f"/apis/batch/v1/namespaces/default/jobs?labelSelector={WORKING_SELECTOR}",
                            {"Authorization": f"Bearer {standin.token}"}, b"")[1]
    assert [j["metadata"]["name"] for j in listed["items"]] == ["task-2"]
    # adoption and cancel still find it by name
    assert fresh.launch(done, parse_info(done.info)) is LaunchOutcome.ADOPTED
    fresh.cancel(done)
    assert standin.job("default", done.job_name) is None
    g.retire(done)  # gone already: nothing raised


def test_a_retire_that_fails_is_logged_not_raised(make: Any, standin: ApiStandIn,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    g = make()
    t = task(1)
    launched(g, standin, t)
    standin.fail_verbs = {"patch"}
    g.retire(t)
    assert "cannot label its Job default/task-1 done" in caplog.text
    other = Task(9, "task-1", "default", '{"image": "alpine"}', "Running")  # same name, another task
    standin.fail_verbs = set()
    g.retire(other)  # the patch's "test" refuses: not that task's Job
    job = standin.job("default", "task-1")
    assert job is not None and "nightwatch.io/done" not in job["metadata"]["labels"]


def test_an_idle_namespace_stops_being_watched_and_close_stops_the_threads(make: Any,
                                                                           standin: ApiStandIn) -> None:
    before = set(threading.enumerate())  # other tests' gateways may still be winding down theirs
    g = make(watch_idle_after=0.3)
    t, u = task(1), task(2, "other")
    launched(g, standin, t, u)
    other = g.watches.get("other")
    assert other is not None
    eventually(lambda: g.observe([t]) is not None and not other.alive)  # "other" not asked about
    watch = g.watches.get("default")
    assert watch is not None and watch.alive
    g.close()
    eventually(lambda: not watch.alive, timeout=5)
    eventually(lambda: not [th for th in set(threading.enumerate()) - before if th.name.startswith("k8s-watch-")],
               timeout=5)


def test_a_job_added_by_someone_else_comes_through_the_watch(make: Any, standin: ApiStandIn) -> None:
    g = make()
    t, adopted = task(1), task(2)
    launched(g, standin, t)
    standin.add_job(build_job_manifest(adopted, JobSpec(image="x")))  # e.g. created by another replica
    standin.settle(g)
    assert g.observe([t, adopted]) == {1: JobState(JobPhase.RUNNING), 2: JobState(JobPhase.RUNNING)}


def test_streams_that_end_as_soon_as_they_begin_are_retried_with_a_growing_delay(
        make: Any, standin: ApiStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy that answers a watch and closes it at once must not get a request storm: such
    retries back off (0.2 s doubling), as failed ones do."""
    g = make()
    t = task(1)
    launched(g, standin, t)
    monkeypatch.setattr(standin.watches, "stream", lambda *args, **kwargs: iter(()))  # ends at once
    standin.watches.drop_streams()
    standin.reset_counts()
    time.sleep(2.0)
    assert 1 <= standin.requests["watch"] <= 6, standin.requests  # 0.2 + 0.4 + 0.8: a handful, not hundreds
