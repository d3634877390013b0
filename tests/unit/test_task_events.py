"""The task watcher's history: every transition it makes has exactly one event, a fenced or
lost compare-and-set has none; and the history watcher prunes only old events."""

import dataclasses
import threading
from collections import Counter
from datetime import timedelta

import pytest
from test_cycle import Cluster, info
from unfenced import UnfencedStore

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.lock.memory import MemoryLockHub
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.history_watcher import HistoryWatcher
from nightwatch.app.task_watcher import TaskWatcher
from nightwatch.domain.errors import FencedError
from nightwatch.domain.model import Fence, NewTask, TaskEvent, TaskStatus
from nightwatch.domain.ports import RunContext
from nightwatch.domain.retry import RetryPolicy


class RecordingStore(InMemoryTaskStore):
    """Notes every status write that applied, as the caller saw it (the store's answer)."""

    def __init__(self, clock):
        super().__init__(clock)
        self.applied = []  # (task id, from, to)
        self._noted = threading.Lock()

    def transition(self, task_id, old, new, message=None, fence=None, **kw):
        ok = super().transition(task_id, old, new, message, fence, **kw)
        if ok:
            with self._noted:
                self.applied.append((task_id, str(old), str(new)))
        return ok

    def requeue(self, task_id, old, attempt, message=None, **kw):
        ok = super().requeue(task_id, old, attempt, message, **kw)
        if ok:
            with self._noted:
                self.applied.append((task_id, str(old), "Normal"))
        return ok


def test_every_transition_has_exactly_one_event_through_cancels_retries_resets_and_a_failover():
    clock, hub = FakeClock(), MemoryLockHub()
    store, gateway = RecordingStore(clock), FakeJobGateway(clock)
    policy = RetryPolicy(base=5.0, cap=60.0, jitter=0.5)
    a = Cluster(clock, store, gateway, hub, "a", retry_policy=policy, batch_size=7)
    b = Cluster(clock, store, gateway, hub, "b", retry_policy=policy, batch_size=7)
    tasks = []
    for i in range(60):
        fails = i % 3 == 0
        env = {"FAKE_FAIL": "1"} if fails else {}
        tasks.append(a.submit(f"t-{i}", info_=info(args=[str(i % 4 + 1)], env=env, retries=i % 2)))
    tasks.append(a.submit("bad", info_='{"image": ""}'))
    for _ in range(6):
        a.step(0)
        b.step(0.5)
    for t in tasks[::5]:
        store.request_cancel(t.id, "test", replica="cli")
    for _ in range(20):
        a.step(0)
        b.step(0.5)
    # a dies; b leads; meanwhile users retry and reset finished tasks
    for _ in range(40):
        b.step()
    for t in tasks[1::7]:
        got = store.get(t.id)
        if got.status in ("Failed", "Cancelled"):
            store.requeue(t.id, TaskStatus(got.status), got.attempt, replica="cli")
        elif got.status == "Succeeded":
            store.tasks[t.id] = dataclasses.replace(got, status="Normal")
    b.run_until_settled(limit=2000)
    assert sum(store.count_by_status().values()) == len(tasks)
    assert Counter(store.applied) == Counter((e.task_id, e.from_status, e.to_status) for e in store.event_log)
    assert len(store.event_log) == len(store.applied) > 3 * len(tasks)
    for t in tasks:  # each history is one unbroken chain, ending where the row is
        chain = store.events(t.id)
        assert chain[0].from_status == "Normal"
        assert all(x.to_status == y.from_status or y.from_status == "Normal" and x.to_status != "Normal"
                   for x, y in zip(chain, chain[1:], strict=False))
        assert chain[-1].to_status == store.get(t.id).status and chain[-1].attempt == store.get(t.id).attempt
        assert all(e.replica in ("a", "b", "cli") and (e.epoch is None) == (e.replica == "cli") for e in chain)
    # every attempt had at most one Job
    assert len(gateway.created) == len({(ns, name) for ns, name, _ in gateway.created})


class LaggingEpochStore(InMemoryTaskStore):
    """Its ``current_epoch`` answers what ``lag_at`` says: the stale leader's term check passes
    (a read that raced the successor's election), so only the write's own fence is left."""

    lag_at = None

    def current_epoch(self, name):
        return self.lag_at if self.lag_at is not None else super().current_epoch(name)


def test_a_fenced_write_records_no_event_for_cancels_resets_and_retries():
    clock = FakeClock()
    store = LaggingEpochStore(clock)
    gateway = FakeJobGateway(clock)
    stale = TaskWatcher(store, gateway, clock, allowed_namespaces=["default"], retries=3, concurrency=1)
    fence = Fence("nightwatch", store.begin_term("nightwatch"), "old")
    in_flight = store.add(NewTask("in-flight", "default", info(args=["100"])))
    failing = store.add(NewTask("failing", "default", info(args=["1"], env={"FAKE_FAIL": "1"})))
    stale.run(RunContext(fence))
    clock.advance(10)  # failing's Job has failed
    n = len(store.event_log)
    store.request_cancel(in_flight.id, "x", replica="cli")
    cancel = store.add(NewTask("cancel-me", "default", info()))
    store.request_cancel(cancel.id, "y", replica="cli")
    reset = store.add(NewTask("reset-me", "default", info()))
    store.tasks[reset.id] = dataclasses.replace(store.get(reset.id), finished_at=clock.now())
    store.lag_at = fence.epoch
    store.begin_term("nightwatch")  # a successor took over
    for _ in range(4):  # every one of them meets the fence, in whatever order
        with pytest.raises(FencedError):
            stale.run(RunContext(fence))
    assert len(store.event_log) == n
    assert [store.get(t.id).status for t in (in_flight, failing, cancel, reset)] == [
        "Running", "Running", "Normal", "Normal"]
    assert all(store.get(t.id).attempt == 1 for t in (in_flight, failing, cancel, reset))
    assert stale._metrics.fenced_writes._value.get() >= 4


def test_fencing_switched_off_shows_the_stale_cancels_resets_and_retries():
    """Positive control of the test above, with the epoch check dropped on the test side."""
    clock = FakeClock()
    real = InMemoryTaskStore(clock)
    store = UnfencedStore(real)
    stale = TaskWatcher(store, FakeJobGateway(clock), clock, allowed_namespaces=["default"], retries=3)
    fence = Fence("nightwatch", store.begin_term("nightwatch"), "old")
    failing = store.add(NewTask("failing", "default", info(args=["1"], env={"FAKE_FAIL": "1"})))
    stale.run(RunContext(fence))
    clock.advance(10)
    cancel = store.add(NewTask("cancel-me", "default", info()))
    store.request_cancel(cancel.id, "y", replica="cli")
    real.begin_term("nightwatch")  # a successor took over
    n = len(real.event_log)
    stale.run(RunContext(fence))
    assert len(real.event_log) > n
    assert store.get(cancel.id).status == "Cancelled" and store.get(failing.id).attempt == 2


def test_a_lost_compare_and_set_writes_no_event():
    """The user's system moves the row between the watcher's read and its write."""
    c = Cluster()
    t = c.submit("raced")
    real = c.gateway.launch

    def launch(task, spec):
        outcome = real(task, spec)
        c.store.tasks[task.id] = dataclasses.replace(c.store.tasks[task.id], status="Paused")  # their UPDATE
        return outcome

    c.gateway.launch = launch
    for _ in range(10):
        c.step()
    assert c.store.get(t.id).status == "Paused" and c.store.events(t.id) == []
    assert c.watcher._metrics.task_transitions.labels("Normal", "Pending")._value.get() == 0


def test_a_lost_requeue_writes_no_event():
    """A retry (CLI) and the leader's automatic retry race for the same failed attempt."""
    c = Cluster(retry_policy=RetryPolicy(base=30.0, jitter=0.0))
    t = c.submit("both", info_=info(env={"FAKE_FAIL": "1"}, retries=1, args=["1"]))
    for _ in range(6):
        c.step()
    got = c.store.get(t.id)
    assert got.status == "Normal" and got.attempt == 2  # the leader requeued it
    before = len(c.store.event_log)
    assert not c.store.requeue(t.id, TaskStatus.RUNNING, 1, replica="cli")  # too late: lost
    assert len(c.store.event_log) == before


# -- the history watcher ----------------------------------------------------------------------

def put_events(store, clock, ages_in_days):
    for i, age in enumerate(ages_in_days):
        store._event_id += 1
        store.event_log.append(TaskEvent(task_id=1, attempt=1, at=clock.now() - timedelta(days=age),
                                         from_status="Normal", to_status="Pending", id=store._event_id + i))


def test_the_history_watcher_prunes_only_old_events_in_batches():
    clock = FakeClock()
    store = InMemoryTaskStore(clock)
    task = store.add(NewTask("kept", "default", info()))
    put_events(store, clock, [40, 31, 30.5, 35, 29.9, 1, 0, 45, 60, 90])
    calls = []
    real = store.prune_events
    store.prune_events = lambda before, limit: calls.append(limit) or real(before, limit)
    gone = HistoryWatcher(store, clock, retention=30 * 86400.0, batch_size=2).prune(RunContext(None))
    assert gone == 7 and calls == [2, 2, 2, 2]  # 2 + 2 + 2 + 1: a short batch ends the run
    assert sorted(round((clock.now() - e.at).total_seconds() / 86400, 1) for e in store.event_log) == [0, 1, 29.9]
    assert store.get(task.id).name == "kept"  # task rows are never deleted


def test_a_cancelled_history_run_stops_between_batches():
    clock = FakeClock()
    store = InMemoryTaskStore(clock)
    put_events(store, clock, [40] * 10)
    ctx = RunContext(None)
    real = store.prune_events

    def prune(before, limit):
        ctx.cancelled.set()  # the leader steps down during the first batch
        return real(before, limit)

    store.prune_events = prune
    assert HistoryWatcher(store, clock, retention=86400.0, batch_size=3).prune(ctx) == 3
    assert len(store.event_log) == 7


def test_the_history_watcher_runs_on_its_schedule_with_the_leader():
    from nightwatch.app.scheduler import Scheduler

    clock = FakeClock()
    store = InMemoryTaskStore(clock)
    put_events(store, clock, [31, 1])
    scheduler = Scheduler([HistoryWatcher(store, clock, spec="@every 10m")], clock, inline=True)
    scheduler.start(Fence("nightwatch", store.begin_term("nightwatch"), "a"))
    for _ in range(700):
        scheduler.tick()
        clock.advance(1)
    assert len(store.event_log) == 1
