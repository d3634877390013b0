"""Cancel, attempts and automatic retries, whole cycles in memory under the fake clock
(the harness of test_cycle: memory store, memory lock, fake gateway, inline scheduler)."""

import dataclasses
import hashlib
import json

import pytest
from test_cycle import Cluster, info

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import BACKOFF_LIMIT_EXCEEDED, FakeJob, FakeJobGateway
from nightwatch.adapters.lock.memory import MemoryLockHub
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.domain.constants import TASK_ID_LABEL
from nightwatch.domain.model import JobPhase, JobState, Task, TaskStatus, job_name
from nightwatch.domain.retry import RetryPolicy

NO_JITTER = RetryPolicy(base=10.0, cap=600.0, jitter=0.0)


def failing(retries=None, args=("5",)):
    extra = {"env": {"FAKE_FAIL": "1"}}
    if retries is not None:
        extra["retries"] = retries
    return info(args=args, **extra)


def steps(c, n, seconds=0.5):
    for _ in range(n):
        c.step(seconds)


def events(c, task):
    return [(e.from_status, e.to_status, e.attempt) for e in c.store.events(task.id)]


def created_names(c):
    return [name for _, name, _ in c.gateway.created]


# -- cancel at each status ---------------------------------------------------------------------

def test_cancel_of_a_normal_task_ends_it_cancelled_without_a_job():
    c = Cluster()
    c.step()  # lead first, so the task is seen Normal by a run
    t = c.submit("never-run")
    assert c.store.request_cancel(t.id, "not needed after all", replica="cli").requested
    steps(c, 5)
    got = c.store.get(t.id)
    assert got.status == "Cancelled" and "not needed after all" in got.message
    assert got.finished_at is not None
    assert c.gateway.created == [] and c.gateway.cancelled == []
    [event] = c.store.events(t.id)
    assert (event.from_status, event.to_status, event.replica, event.epoch) == (
        "Normal", "Cancelled", "a", c.elector.fence.epoch)


@pytest.mark.parametrize("status, start_delay", [("Pending", 1000.0), ("Running", 0.0)])
def test_cancel_in_flight_deletes_the_job_then_cancels(status, start_delay):
    clock = FakeClock()
    c = Cluster(clock, gateway=FakeJobGateway(clock, start_delay=start_delay))
    t = c.submit("long", info_=info(args=["3600"]))
    steps(c, 4)
    assert c.store.get(t.id).status == status
    c.store.request_cancel(t.id, "user alice: wrong input", replica="api")
    steps(c, 5)
    got = c.store.get(t.id)
    assert got.status == "Cancelled", got
    assert "user alice: wrong input" in got.message and "Job default/long deleted" in got.message
    assert c.gateway.cancelled == [("default", "long", t.id)] and ("default", "long") not in c.gateway.jobs
    steps(c, 200)  # nothing comes back: not relaunched, not retried
    assert c.store.get(t.id).status == "Cancelled" and len(c.gateway.created) == 1
    assert events(c, t)[-1] == (status, "Cancelled", 1)


@pytest.mark.parametrize("info_, final", [(info(args=["1"]), "Succeeded"), (failing(), "Failed")])
def test_cancel_of_a_finished_task_leaves_it_as_it_is(info_, final):
    c = Cluster()
    t = c.submit("done", info_=info_)
    c.run_until_settled()
    before = c.store.get(t.id)
    assert before.status == final
    request = c.store.request_cancel(t.id, "too late", replica="cli")
    assert not request.requested and request.task.status == final
    # a user's own UPDATE of the cancel columns on a finished row changes nothing either
    c.store.tasks[t.id] = dataclasses.replace(before, cancel_requested_at=c.clock.now(), cancel_reason="x")
    n = len(c.store.event_log)
    steps(c, 20)
    assert c.store.get(t.id).status == final and len(c.store.event_log) == n
    assert c.gateway.cancelled == []


def test_a_job_seen_succeeded_first_wins_over_a_late_cancel():
    c = Cluster()
    t = c.submit("quick", info_=info(args=["2"]))
    steps(c, 2)
    assert c.store.get(t.id).status == "Running"
    c.clock.advance(5)  # the Job ends before the next run looks
    c.store.request_cancel(t.id, "late", replica="cli")
    c.step()
    assert c.store.get(t.id).status == "Succeeded" and c.gateway.cancelled == []


def test_a_cancelled_failing_job_is_never_retried():
    c = Cluster(retry_policy=NO_JITTER)
    t = c.submit("flaky", info_=failing(retries=5, args=["1000"]))
    steps(c, 4)
    c.store.request_cancel(t.id, "stop it", replica="cli")
    steps(c, 400)
    got = c.store.get(t.id)
    assert got.status == "Cancelled" and got.attempt == 1 and created_names(c) == ["flaky"]


# -- retry after Failed, the user's reset ------------------------------------------------------

def test_a_retry_after_failed_runs_a_new_job_for_the_next_attempt():
    c = Cluster()
    t = c.submit("again", info_=failing(args=["1"]))
    c.run_until_settled()
    assert c.store.get(t.id).status == "Failed"
    # the user fixes the input, then retries (as `nightwatch task retry` does)
    c.store.tasks[t.id] = dataclasses.replace(c.store.get(t.id), info=info(args=["1"]))
    assert c.store.requeue(t.id, TaskStatus.FAILED, 1, replica="cli")
    c.run_until_settled()
    got = c.store.get(t.id)
    assert (got.status, got.attempt, got.message) == ("Succeeded", 2, None)
    assert created_names(c) == ["again", job_name("again", 2)]  # the old Job was not adopted
    assert ("default", "again") in c.gateway.jobs  # ... though it is still there
    assert events(c, t) == [("Normal", "Pending", 1), ("Pending", "Running", 1), ("Running", "Failed", 1),
                            ("Failed", "Normal", 2), ("Normal", "Pending", 2), ("Pending", "Running", 2),
                            ("Running", "Succeeded", 2)]
    assert [e.replica for e in c.store.events(t.id)][3] == "cli"


def reset_by_hand(c, task_id, **changes):
    """The user's own ``UPDATE task SET status='Normal'``: nightwatch's columns stay as they were."""
    c.store.tasks[task_id] = dataclasses.replace(c.store.get(task_id), status="Normal", **changes)


def test_the_users_reset_of_a_finished_task_is_the_next_attempt_never_adoption():
    c = Cluster()
    t = c.submit("rerun", info_=info(args=["1"]))
    c.run_until_settled()
    assert c.store.get(t.id).finished_at is not None
    reset_by_hand(c, t.id)
    c.run_until_settled()
    got = c.store.get(t.id)
    assert (got.status, got.attempt) == ("Succeeded", 2)
    assert created_names(c) == ["rerun", job_name("rerun", 2)]
    assert events(c, t)[3:5] == [("Normal", "Normal", 2), ("Normal", "Pending", 2)]
    assert "attempt 1 was reset to Normal" in c.store.events(t.id)[3].message


def test_a_reset_cancelled_task_runs_again_but_a_cancel_asked_after_the_reset_holds():
    c = Cluster()
    stale = c.submit("stale", info_=info(args=["1"]))
    fresh = c.submit("fresh", info_=info(args=["1"]))
    for t in (stale, fresh):
        c.store.request_cancel(t.id, "first", replica="cli")
    steps(c, 5)
    assert {c.store.get(t.id).status for t in (stale, fresh)} == {"Cancelled"}
    reset_by_hand(c, stale.id)  # the cancel columns of the first attempt are still set
    c.clock.advance(1)
    reset_by_hand(c, fresh.id, cancel_requested_at=c.clock.now(), cancel_reason="again")
    c.run_until_settled()
    assert (c.store.get(stale.id).status, c.store.get(stale.id).attempt) == ("Succeeded", 2)
    got = c.store.get(fresh.id)
    assert got.status == "Cancelled" and "again" in got.message
    assert created_names(c) == [job_name("stale", 2)]


def test_a_cancel_asked_after_the_reset_of_a_finished_task_keeps_the_last_attempts_job():
    c = Cluster()
    t = c.submit("nightly", info_=info(args=["1"]))
    c.run_until_settled()
    assert c.store.get(t.id).status == "Succeeded" and ("default", "nightly") in c.gateway.jobs
    c.clock.advance(1)
    reset_by_hand(c, t.id, cancel_requested_at=c.clock.now(), cancel_reason="not tonight")
    c.run_until_settled()
    got = c.store.get(t.id)
    assert (got.status, got.attempt) == ("Cancelled", 1) and "not tonight" in got.message
    assert c.gateway.cancelled == [] and ("default", "nightly") in c.gateway.jobs  # its logs are still there
    assert list(c.gateway.logs(got)) == list(c.gateway.logs(dataclasses.replace(got, status="Succeeded")))
    assert created_names(c) == ["nightly"]


# -- automatic retries -----------------------------------------------------------------------

def test_a_cancel_asked_while_the_failing_job_is_synced_wins_over_the_automatic_retry():
    """The watcher read the row (no cancel), then the user asked to cancel before its retry was
    written: the retry must not erase the request."""
    c = Cluster(retry_policy=NO_JITTER)
    t = c.submit("flaky", info_=failing(retries=3, args=["1"]))
    real = c.gateway.observe
    asked = []

    def observe(tasks):  # the user's request lands between the watcher's read and its write
        states = real(tasks)
        if not asked and states.get(t.id) is not None and states[t.id].phase is JobPhase.FAILED:
            asked.append(c.store.request_cancel(t.id, "stop retrying", replica="api").requested)
        return states

    c.gateway.observe = observe
    c.run_until_settled()
    got = c.store.get(t.id)
    assert asked == [True]
    assert (got.status, got.attempt) == ("Cancelled", 1) and "stop retrying" in got.message, got
    assert created_names(c) == ["flaky"] and events(c, t)[-1] == ("Running", "Cancelled", 1)


class LaunchLog:
    """Wraps a gateway's launch: when each Job was created (wall clock) and by whom."""

    def __init__(self, gateway, clock, leader=lambda: None):
        self.created = []  # (job name, wall time, leader)
        real = gateway.launch

        def launch(task, spec):
            outcome = real(task, spec)
            if outcome.value == "created":
                self.created.append((task.job_name, clock.now(), leader()))
            return outcome

        gateway.launch = launch


def test_automatic_retries_back_off_then_the_last_failure_fails_the_task():
    c = Cluster(retry_policy=NO_JITTER)
    log = LaunchLog(c.gateway, c.clock)
    t = c.submit("retry-me", info_=failing(retries=2))
    waiting = []
    for _ in range(600):
        c.step()
        got = c.store.get(t.id)
        if got.status == "Normal" and got.message and got.message not in waiting:
            waiting.append(got.message)
        if got.status == "Failed":
            break
    assert (got.status, got.attempt, got.message) == ("Failed", 3, BACKOFF_LIMIT_EXCEEDED)
    assert waiting == [f"attempt 1 failed: {BACKOFF_LIMIT_EXCEEDED}; retrying in 10s",
                       f"attempt 2 failed: {BACKOFF_LIMIT_EXCEEDED}; retrying in 20s"]
    assert [name for name, _, _ in log.created] == ["retry-me", job_name("retry-me", 2), job_name("retry-me", 3)]
    requeues = [e for e in c.store.events(t.id) if e.to_status == "Normal"]
    assert [e.from_status for e in requeues] == ["Running", "Running"]
    for (_, launched, _), requeue, delay in zip(log.created[1:], requeues, (10, 20), strict=True):
        assert (launched - requeue.at).total_seconds() >= delay  # never early


def test_retries_come_from_info_else_the_default():
    c = Cluster(retry_policy=NO_JITTER, retries=1)
    by_default = c.submit("by-default", info_=failing())
    none = c.submit("none", info_=failing(retries=0))
    c.run_until_settled(limit=1200)
    assert c.store.get(by_default.id).attempt == 2 and c.store.get(none.id).attempt == 1
    assert {c.store.get(t.id).status for t in (by_default, none)} == {"Failed"}


def test_automatic_retry_waits_out_its_delay_across_a_leader_change():
    clock, hub = FakeClock(), MemoryLockHub()
    store, gateway = InMemoryTaskStore(clock), FakeJobGateway(clock)
    policy = RetryPolicy(base=120.0, cap=600.0, jitter=0.0)
    a = Cluster(clock, store, gateway, hub, "a", retry_policy=policy)
    b = Cluster(clock, store, gateway, hub, "b", retry_policy=policy)
    log = LaunchLog(gateway, clock, leader=lambda: "b" if b.elector.is_leader else "a")
    t = a.submit("survivor", info_=failing(retries=1, args=["1"]))
    while store.get(t.id).status != "Normal" or store.get(t.id).attempt != 2:
        a.step(0)
        b.step(0.5)
    assert a.elector.is_leader
    retry_at = store.get(t.id).retry_at
    assert (retry_at - clock.now()).total_seconds() == pytest.approx(120.0, abs=1)
    # a dies right after writing the delay: b takes over well before it is over
    for _ in range(60):
        b.step()
    assert b.elector.is_leader and clock.now() < retry_at
    assert store.get(t.id).status == "Normal" and len(log.created) == 1  # b did not launch early
    for _ in range(400):
        b.step()
    assert [(name, who) for name, _, who in log.created] == [("survivor", "a"), (job_name("survivor", 2), "b")]
    assert log.created[1][1] >= retry_at
    got = store.get(t.id)
    assert (got.status, got.attempt) == ("Failed", 2)
    assert {e.replica for e in store.events(t.id)} == {"a", "b"}


def test_never_retried_invalid_spec_rejected_job_or_non_retryable_failure():
    clock = FakeClock()
    gateway = FakeJobGateway(clock, namespaces={"default"})
    c = Cluster(clock, gateway=gateway, retry_policy=NO_JITTER, retries=3,
                allowed_namespaces=["default", "gone"])
    invalid = c.submit("invalid", info_=json.dumps({"image": "", "retries": 3}))
    rejected = c.submit("rejected", "gone", info_=failing(retries=3))
    fatal = c.submit("fatal", info_=failing(retries=3, args=["1"]))
    real = gateway.observe

    def observe(tasks):  # e.g. an image that can never be pulled
        return {k: JobState(JobPhase.FAILED, "ErrImagePull: no such image", retryable=False)
                if s.phase is JobPhase.FAILED else s for k, s in real(tasks).items()}

    gateway.observe = observe
    c.run_until_settled()
    for t, message in [(invalid, "invalid task"), (rejected, "job rejected"), (fatal, "ErrImagePull")]:
        got = c.store.get(t.id)
        assert (got.status, got.attempt) == ("Failed", 1) and message in got.message, got
    assert created_names(c) == ["fatal"]


def test_a_bad_info_retries_fails_its_task_with_a_clear_message():
    c = Cluster()
    t = c.submit("bad-retries", info_=info(retries=101))
    c.run_until_settled()
    got = c.store.get(t.id)
    assert got.status == "Failed" and "info.retries must be a whole number from 0 to 100, got 101" in got.message


# -- a re-queued task never adopts an old Job --------------------------------------------------

def ignore_attempt(job, task):
    return job.labels.get(TASK_ID_LABEL) == str(task.id)


@pytest.mark.parametrize("names_per_attempt, attempt_label_checked, adopts", [
    (True, True, False),    # as shipped
    (False, True, False),   # one name for every attempt: the attempt label alone refuses it
    (True, False, False),   # the attempt label ignored: the new name alone avoids the old Job
    (False, False, True),   # both switched off (from the test side): the old result is copied
])
def test_a_requeued_task_never_adopts_the_old_job(monkeypatch, names_per_attempt, attempt_label_checked,
                                                  adopts):
    if not names_per_attempt:
        monkeypatch.setattr(Task, "job_name", property(lambda task: task.name))
    if not attempt_label_checked:
        monkeypatch.setattr(FakeJob, "belongs_to", ignore_attempt)
    c = Cluster()
    t = c.submit("once", info_=info(args=["1"]))
    c.run_until_settled()
    assert c.store.get(t.id).status == "Succeeded"
    c.store.requeue(t.id, TaskStatus.SUCCEEDED, 1, force=True, replica="cli")
    c.run_until_settled()
    got = c.store.get(t.id)
    adopted = len(c.gateway.created) == 1 and got.status == "Succeeded"  # the old result, copied
    assert adopted == adopts
    if not adopts:
        assert got.attempt == 2 and got.status in ("Succeeded", "Failed")
        if names_per_attempt:
            assert (got.status, created_names(c)) == ("Succeeded", ["once", job_name("once", 2)])
        else:  # the name is taken by attempt 1's Job: refused, never adopted
            assert got.status == "Failed" and "not created for this task (attempt 2)" in got.message


def test_a_cancel_while_waiting_for_an_automatic_retry_ends_it_cancelled_without_a_new_job():
    c = Cluster(retry_policy=RetryPolicy(base=300.0, jitter=0.0))
    t = c.submit("waiting", info_=failing(retries=3, args=["1"]))
    while c.store.get(t.id).attempt == 1:
        c.step()
    assert c.store.get(t.id).status == "Normal" and c.store.get(t.id).retry_at > c.clock.now()
    c.store.request_cancel(t.id, "give up", replica="cli")
    steps(c, 5)
    got = c.store.get(t.id)
    assert (got.status, got.attempt) == ("Cancelled", 2) and "give up" in got.message
    steps(c, 1000)
    assert c.store.get(t.id).status == "Cancelled" and created_names(c) == ["waiting"]


def test_a_cancel_is_not_held_back_by_a_launch_backoff():
    c = Cluster()
    c.gateway.fail_next_creates = 5
    t = c.submit("backed-off")
    steps(c, 30)  # launches failed at 0, 2, 6 and 14 s: the next is due at 30 s
    assert c.store.get(t.id).status == "Normal" and c.gateway.fail_next_creates > 0
    c.store.request_cancel(t.id, "stop", replica="cli")
    steps(c, 5)  # one task-watcher run, far less than the backoff
    assert c.store.get(t.id).status == "Cancelled" and c.gateway.created == []


# -- Job names ---------------------------------------------------------------------------------

def test_job_names_of_later_attempts_never_take_another_tasks_name():
    assert job_name("a", 1) == "a" and job_name("a-2", 1) == "a-2"
    assert job_name("a", 2) == f"a-{hashlib.sha256(b'a').hexdigest()[:8]}-2" != "a-2"
    long = "x" * 50 + "-" + "y" * 12  # 63 characters
    for attempt in (2, 10, 12345):
        name = job_name(long, attempt)
        assert len(name) <= 63 and name.endswith(f"-{attempt}") and "--" not in name
        assert name != job_name(long[:-1] + "z", attempt)  # same prefix, another name


def test_task_a_at_attempt_2_and_task_a_2_both_run_in_one_namespace():
    c = Cluster()
    a = c.submit("a", info_=info(args=["1"]))
    c.run_until_settled()
    assert c.store.requeue(a.id, TaskStatus.SUCCEEDED, 1, force=True, replica="cli")
    a2 = c.submit("a-2", info_=info(args=["30"]))  # launched while a's attempt 2 runs
    c.run_until_settled()
    assert [(c.store.get(t.id).status, c.store.get(t.id).attempt) for t in (a, a2)] == [
        ("Succeeded", 2), ("Succeeded", 1)]
    assert sorted(created_names(c)) == sorted(["a", job_name("a", 2), "a-2"])
