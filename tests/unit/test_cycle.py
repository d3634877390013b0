"""The whole cycle in memory, deterministic: memory store, memory lock, fake gateway, fake clock."""

import dataclasses
import json
import logging

import pytest
from unfenced import UnfencedStore

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.lock.memory import InMemoryLeaderLock, MemoryLockHub
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.elector import LeaderElector
from nightwatch.app.scheduler import Scheduler
from nightwatch.app.task_watcher import TaskWatcher
from nightwatch.domain.errors import FencedError
from nightwatch.domain.jobspec import parse_info
from nightwatch.domain.model import Fence, NewTask
from nightwatch.domain.ports import RunContext

TERMINAL = {"Succeeded", "Failed"}


def info(image="alpine", command=("sleep",), args=("3",), **extra):
    return json.dumps({"image": image, "command": list(command), "args": list(args), **extra})


class Cluster:
    """One replica's daemon, stepped by hand: elector + inline scheduler + task watcher."""

    def __init__(self, clock=None, store=None, gateway=None, hub=None, name="a", **watcher_kw):
        self.clock = clock or FakeClock()
        self.store = store or InMemoryTaskStore(self.clock)
        self.gateway = gateway or FakeJobGateway(self.clock)
        kw = {"allowed_namespaces": ["default"], "missing_grace": 60.0, "spec": "@every 2s"} | watcher_kw
        self.watcher = TaskWatcher(self.store, self.gateway, self.clock, **kw)
        self.scheduler = Scheduler([self.watcher], self.clock, inline=True)
        lock = InMemoryLeaderLock("nightwatch", name, 10.0, self.clock, hub or MemoryLockHub())
        self.elector = LeaderElector(
            lock, self.store, self.clock, identity=name,
            on_elected=self.scheduler.start, on_stepped_down=lambda r: self.scheduler.stop(0),
        )

    def step(self, seconds=0.5):
        self.elector.tick()
        if self.elector.is_leader:
            self.scheduler.tick()
        self.clock.advance(seconds)

    def run_until_settled(self, limit=600.0):
        end = self.clock.monotonic() + limit
        while self.clock.monotonic() < end:
            self.step()
            counts = self.store.count_by_status()
            if not counts.get("Normal") and not counts.get("Pending") and not counts.get("Running"):
                return
        raise AssertionError(f"not settled: {self.store.count_by_status()}")

    def submit(self, name, namespace="default", info_=None, status="Normal"):
        return self.store.add(NewTask(name, namespace, info_ if info_ is not None else info(), 1, status))

    def insert_directly(self, name, info_):
        """A row the user's system put in the table itself, past what ``add`` accepts."""
        task = self.store.add(NewTask(name, "default", info(), 1, "Normal"))
        self.store.tasks[task.id] = dataclasses.replace(task, info=info_)
        return self.store.tasks[task.id]


def test_a_thousand_tasks_reach_the_right_terminal_status_each_launched_once():
    c = Cluster(batch_size=100)
    for i in range(1000):
        c.submit(f"t-{i}", info_=info(command=["false"] if i % 10 == 0 else ["sleep"], args=[str(i % 7)]))
    c.run_until_settled()
    tasks = {t.id: t for t in c.store.page(None, 0, 5000)}
    assert len(tasks) == 1000
    failed = {t.name for t in tasks.values() if t.status == "Failed"}
    assert failed == {f"t-{i}" for i in range(0, 1000, 10)}
    assert all(t.status == "Succeeded" for t in tasks.values() if t.name not in failed)
    assert len(c.gateway.created) == 1000 and len({(ns, n) for ns, n, _ in c.gateway.created}) == 1000


def test_a_failing_job_fails_its_task_with_the_reason():
    c = Cluster()
    t = c.submit("bad-job", info_=info(command=["false"], args=[]))
    c.run_until_settled()
    got = c.store.get(t.id)
    assert got.status == "Failed" and "BackoffLimitExceeded" in got.message


def test_the_seed_rows():
    c = Cluster()
    one = c.submit("demo-task-1", "default", '{"image":"alpine","command":["sleep"],"args":["60"]}')
    two = c.submit("demo-task-2", "demo", '{"image":"busybox","command":["sleep"],"args":["3600"]}')
    c.run_until_settled(limit=120)
    assert c.store.get(one.id).status == "Succeeded"
    two = c.store.get(two.id)
    assert two.status == "Failed" and "namespace 'demo' is not allowed" in two.message


def test_crash_between_job_creation_and_status_write_is_adopted_not_relaunched():
    c = Cluster()
    t = c.submit("crashy")
    # the previous leader created the Job, then died before writing Pending
    c.gateway.launch(t, parse_info(t.info))
    assert c.store.get(t.id).status == "Normal" and len(c.gateway.created) == 1
    c.run_until_settled()
    assert c.store.get(t.id).status == "Succeeded"
    assert len(c.gateway.created) == 1  # adopted, not created again


def test_a_job_named_like_the_task_but_for_another_task_fails_it():
    c = Cluster()
    first = c.submit("same", "default")
    c.gateway.launch(first, parse_info(first.info))
    c.store.tasks.pop(first.id)  # a foreign Job now holds the name
    second = c.submit("same", "default")
    c.run_until_settled()
    got = c.store.get(second.id)
    assert got.status == "Failed" and "not created for this task" in got.message


def test_every_bad_input_fails_only_its_own_task(caplog):
    c = Cluster(allowed_images=["alpine", "busybox"])
    good = [c.submit(f"good-{i}") for i in range(3)]
    bad = {
        "not-json": (c.submit("not-json", info_="{oops"), "not valid JSON"),
        "not-object": (c.submit("not-object", info_='["alpine"]'), "must be a JSON object"),
        "no-image": (c.submit("no-image", info_='{"command": ["true"]}'), "image is missing or empty"),
        "empty-image": (c.submit("empty-image", info_='{"image": ""}'), "image is missing or empty"),
        "command-str": (c.submit("command-str", info_='{"image": "alpine", "command": "sleep 1"}'),
                        "command must be a list of strings"),
        "args-ints": (c.submit("args-ints", info_='{"image": "alpine", "args": [1]}'),
                      "args must be a list of strings"),
        "too-big": (c.insert_directly("too-big", info(args=["x" * 70000])), "at most 65536 bytes"),
        "bad-name": (c.submit("Bad_Name"), "not a DNS-1123 label"),
        "ns": (c.submit("other-ns", "kube-system"), "namespace 'kube-system' is not allowed"),
        "image": (c.submit("wrong-image", info_=info(image="evil/miner")), "image 'evil/miner' is not allowed"),
    }
    weird = c.submit("weird", status="Paused")
    with caplog.at_level(logging.WARNING):
        c.run_until_settled()
        for _ in range(20):
            c.step()
    for task, message in bad.values():
        got = c.store.get(task.id)
        assert got.status == "Failed", got
        assert message in got.message
    assert all(c.store.get(t.id).status == "Succeeded" for t in good)
    assert c.store.get(weird.id).status == "Paused"  # untouched ...
    unknown = [r for r in caplog.records if "'Paused'" in r.getMessage()]
    assert len(unknown) == 1  # ... and logged once, however many cycles ran
    assert c.elector.is_leader  # the daemon kept going


def test_transient_create_errors_leave_the_task_normal_and_are_retried_with_backoff():
    c = Cluster()
    c.gateway.fail_next_creates = 3
    t = c.submit("flaky")
    c.step()
    assert c.store.get(t.id).status == "Normal"
    c.run_until_settled()
    assert c.store.get(t.id).status == "Succeeded"
    assert len(c.gateway.created) == 1


def test_a_job_deleted_behind_our_back_fails_after_the_grace_period():
    c = Cluster(missing_grace=30.0)
    t = c.submit("doomed", info_=info(args=["1000"]))
    for _ in range(6):
        c.step()
    assert c.store.get(t.id).status == "Running"
    c.gateway.delete("default", "doomed")
    for _ in range(50):  # 25 s: still within grace
        c.step()
    assert c.store.get(t.id).status == "Running"
    for _ in range(20):
        c.step()
    got = c.store.get(t.id)
    assert got.status == "Failed" and got.message.startswith("job not found")


def test_two_leaders_at_once_still_create_one_job_per_task_and_the_stale_one_is_fenced():
    clock = FakeClock()
    store = InMemoryTaskStore(clock)
    gateway = FakeJobGateway(clock)
    old = TaskWatcher(store, gateway, clock, allowed_namespaces=["default"], concurrency=1)
    new = TaskWatcher(store, gateway, clock, allowed_namespaces=["default"])
    old_fence = Fence("nightwatch", store.begin_term("nightwatch"))
    new_fence = Fence("nightwatch", store.begin_term("nightwatch"))  # a successor took over
    tasks = [store.add(NewTask(f"t-{i}", "default", info(), 0)) for i in range(20)]
    with pytest.raises(FencedError):
        old.run(RunContext(old_fence))  # the paused ex-leader wakes up and tries its cycle
    assert store.writes == 0  # it wrote nothing ...
    assert gateway.created == []  # ... and created no Job either
    assert all(store.get(t.id).status == "Normal" for t in tasks)
    new.run(RunContext(new_fence))
    assert len(gateway.created) == len({(ns, n) for ns, n, _ in gateway.created})  # one Job per task
    assert len(gateway.created) == 20
    assert all(store.get(t.id).status in ("Pending", "Running") for t in tasks)


def test_fencing_switched_off_shows_the_stale_write():
    """Positive control for the test above: with a store that drops the epoch check (built
    here, on the test side) the stale leader writes."""
    clock = FakeClock()
    real = InMemoryTaskStore(clock)
    store = UnfencedStore(real)
    gateway = FakeJobGateway(clock)
    old = TaskWatcher(store, gateway, clock, allowed_namespaces=["default"])
    old_fence = Fence("nightwatch", store.begin_term("nightwatch"))
    real.begin_term("nightwatch")  # a successor took over
    t = store.add(NewTask("t", "default", info(), 0))
    old.run(RunContext(old_fence))
    assert real.writes > 0 and store.get(t.id).status != "Normal"  # written by a deposed leader


def test_failover_mid_way_loses_nothing():
    clock, hub = FakeClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    gateway = FakeJobGateway(clock)
    a = Cluster(clock, store, gateway, hub, "a", batch_size=50)
    b = Cluster(clock, store, gateway, hub, "b", batch_size=50)
    for i in range(300):
        a.submit(f"t-{i}", info_=info(args=[str(i % 5)]))
    for _ in range(6):
        a.step(0)
        b.step(0.5)
    assert a.elector.is_leader
    # a dies: it stops ticking; its lease runs out and b takes over
    for _ in range(400):
        b.step()
    assert b.elector.is_leader
    assert store.count_by_status() == {"Succeeded": 300}
    assert len(gateway.created) == 300


def test_a_job_backend_that_is_down_costs_a_run_a_few_attempts_not_one_per_task():
    c = Cluster(concurrency=4)
    for i in range(100):
        c.submit(f"t-{i}")
    attempts = []
    real_launch = c.gateway.launch

    def counting_launch(task, spec):
        attempts.append(task.id)
        return real_launch(task, spec)

    c.gateway.launch = counting_launch
    c.gateway.unavailable = True
    c.step()
    assert 4 <= len(attempts) <= 8  # the run gave up after `concurrency` failures in a row
    assert c.store.count_by_status() == {"Normal": 100}
    c.gateway.unavailable = False
    c.run_until_settled()
    assert c.store.count_by_status() == {"Succeeded": 100}


def test_a_bug_met_by_one_task_backs_it_off_and_the_others_go_on():
    c = Cluster()
    good = c.submit("good")
    bad = c.submit("bad")
    real_launch = c.gateway.launch

    def launch(task, spec):
        if task.id == bad.id:
            raise RuntimeError("a bug only this task meets")
        return real_launch(task, spec)

    c.gateway.launch = launch
    for _ in range(10):
        c.step()
    assert c.store.get(good.id).status == "Succeeded"
    assert c.store.get(bad.id).status == "Normal"  # kept, retried later with backoff


class CountingStore(InMemoryTaskStore):
    def __init__(self, clock):
        super().__init__(clock)
        self.counts = 0  # grouped counts: a full scan of the table on a real database

    def count_by_status(self):
        self.counts += 1
        return super().count_by_status()


def test_the_grouped_count_runs_at_most_every_count_interval():
    clock = FakeClock()
    store = CountingStore(clock)
    watcher = TaskWatcher(store, FakeJobGateway(clock), clock, allowed_namespaces=["default"], count_interval=30.0)
    fence = Fence("nightwatch", store.begin_term("nightwatch"))
    for _ in range(15):  # 30 s of runs every 2 s
        watcher.run(RunContext(fence))
        clock.advance(2)
    assert store.counts == 1
    watcher.run(RunContext(fence))
    assert store.counts == 2
