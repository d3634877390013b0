"""The daemon loop with real threads and time, on memory backends (fast: sub-second timings)."""

import threading
import time

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.lock.memory import InMemoryLeaderLock, MemoryLockHub
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.daemon import Daemon
from nightwatch.app.elector import LeaderElector
from nightwatch.app.metrics import Metrics
from nightwatch.app.scheduler import Scheduler
from nightwatch.app.task_watcher import TaskWatcher
from nightwatch.domain.model import NewTask


def build(store, hub, name, clock, metrics=None, retry=0.1, **kw):
    metrics = metrics or Metrics()
    watcher = TaskWatcher(store, FakeJobGateway(clock, default_duration=0.05), clock,
                          allowed_namespaces=["default"], spec="@every 100ms", metrics=metrics)
    lock = InMemoryLeaderLock("nightwatch", name, 1.0, clock, hub)
    elector = LeaderElector(lock, store, clock, identity=name, renew_interval=0.2, renew_deadline=0.7,
                            retry_interval=retry, metrics=metrics)
    return Daemon(store, elector, Scheduler([watcher], clock, metrics=metrics), retry_interval=retry, **kw)


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def start(daemon):
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    return t


def test_a_fenced_write_makes_the_leader_step_down():
    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    metrics = Metrics()
    d = build(store, hub, "a", clock, metrics)
    thread = start(d)
    try:
        assert wait_for(lambda: d.elector.is_leader)
        first_epoch = d.elector.fence.epoch
        store.begin_term("nightwatch")  # someone else started a newer term
        store.add(NewTask("t1", "default", '{"image": "a", "command": ["true"]}'))
        assert wait_for(lambda: metrics.leader_transitions.labels("fenced")._value.get() == 1)
        assert metrics.fenced_writes._value.get() >= 1
        # it lets go, then (being alone) wins a new term with a current epoch and finishes the task
        assert wait_for(lambda: d.elector.is_leader and d.elector.fence.epoch > first_epoch + 1)
        assert wait_for(lambda: store.count_by_status() == {"Succeeded": 1})
    finally:
        d.request_stop()
        thread.join(5)
    assert not thread.is_alive()


def test_shutdown_releases_and_a_standby_takes_over_at_once():
    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    # standbys retry only every 3 s: taking over sooner proves the release woke the standby
    a, b = build(store, hub, "a", clock, retry=3.0), build(store, hub, "b", clock, retry=3.0)
    ta = start(a)
    assert wait_for(lambda: a.elector.is_leader)
    tb = start(b)
    time.sleep(0.3)
    assert not b.elector.is_leader
    stopped = time.monotonic()
    a.request_stop()
    ta.join(5)
    assert wait_for(lambda: b.elector.is_leader, 2.0)
    took = time.monotonic() - stopped
    assert took < 0.3, took
    b.request_stop()
    tb.join(5)
    assert not ta.is_alive() and not tb.is_alive()


def test_a_standby_stops_at_once():
    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    a, b = build(store, hub, "a", clock), build(store, hub, "b", clock)
    ta, tb = start(a), None
    try:
        assert wait_for(lambda: a.elector.is_leader)
        tb = start(b)
        time.sleep(0.2)
        t0 = time.monotonic()
        b.request_stop()
        tb.join(2)
        assert not tb.is_alive() and time.monotonic() - t0 < 0.5
    finally:
        a.request_stop()
        ta.join(5)


def test_a_late_fenced_write_of_an_old_term_does_not_depose_the_current_term():
    from nightwatch.domain.errors import FencedError

    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    metrics = Metrics()
    d = build(store, hub, "a", clock, metrics)
    thread = start(d)
    try:
        assert wait_for(lambda: d.elector.is_leader)
        epoch = d.elector.fence.epoch
        d.fenced(FencedError("nightwatch", epoch - 1))  # a straggler from an earlier term
        time.sleep(0.3)
        assert d.elector.is_leader and d.elector.fence.epoch == epoch
        d.fenced(FencedError("nightwatch", epoch))  # the current term's own write was refused
        assert wait_for(lambda: metrics.leader_transitions.labels("fenced")._value.get() == 1)
    finally:
        d.request_stop()
        thread.join(5)


def test_the_lease_does_not_lapse_while_shutdown_lets_a_long_run_finish():
    """Defect #2 of the original: on shutdown its lock lapsed while a cycle was still running."""
    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    run_started, run_ended = threading.Event(), threading.Event()

    class Slow:
        name, spec = "slow", "@every 100ms"

        def run(self, ctx):
            if run_started.is_set():
                return
            run_started.set()
            time.sleep(1.6)  # longer than the 1 s lease, shorter than the shutdown timeout
            run_ended.set()

    def daemon(name):
        lock = InMemoryLeaderLock("nightwatch", name, 1.0, clock, hub)
        elector = LeaderElector(lock, store, clock, identity=name, renew_interval=0.2, renew_deadline=0.7,
                                retry_interval=0.05)
        return Daemon(store, elector, Scheduler([Slow()], clock), retry_interval=0.05, shutdown_timeout=3.0)

    a, b = daemon("a"), daemon("b")
    ta = start(a)
    assert wait_for(lambda: a.elector.is_leader)
    tb = start(b)
    try:
        assert run_started.wait(2)
        a.request_stop()
        while not run_ended.is_set():
            assert not b.elector.is_leader, "the standby took over while the old leader's run was in flight"
            time.sleep(0.01)
        assert wait_for(lambda: b.elector.is_leader, 1.0)  # released after the run: taken over at once
    finally:
        a.request_stop()
        b.request_stop()
        ta.join(5)
        tb.join(5)


def test_run_once_waits_the_retry_interval_between_attempts_while_the_store_is_down(caplog):
    import logging

    from nightwatch.domain.errors import BackendUnavailableError

    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    attempts = []

    def down(stop=None):
        attempts.append(time.monotonic())
        raise BackendUnavailableError("db down")

    store.migrate = down
    d = build(store, hub, "a", clock, retry=0.3)
    with caplog.at_level(logging.WARNING):
        assert d.run_once(wait=1.2) == 1
    assert 3 <= len(attempts) <= 6, len(attempts)  # one per 0.3 s, as each warning promises
    warned = [r for r in caplog.records if "store unavailable" in r.getMessage()]
    assert len(warned) == len(attempts) and "retrying in 0.3s" in warned[0].getMessage()


def test_a_config_error_on_renew_cancels_the_run_releases_and_stops_the_daemon_with_it(caplog):
    import logging

    from nightwatch.domain.errors import ConfigError

    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    started, cancelled = threading.Event(), threading.Event()

    class Slow:
        name, spec = "slow", "@every 100ms"

        def run(self, ctx):
            started.set()
            if ctx.cancelled.wait(10):
                cancelled.set()

    class RotatedPassword(InMemoryLeaderLock):
        error = None
        renews_after = 0

        def renew(self):
            if self.error is not None:
                self.renews_after += 1
                raise self.error
            return super().renew()

    lock = RotatedPassword("nightwatch", "a", 1.0, clock, hub)
    elector = LeaderElector(lock, store, clock, identity="a", renew_interval=0.2, renew_deadline=0.7,
                            retry_interval=0.05)
    d = Daemon(store, elector, Scheduler([Slow()], clock), retry_interval=0.05, shutdown_timeout=3.0)
    outcome = []

    def run():
        try:
            outcome.append(d.run())
        except ConfigError as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    with caplog.at_level(logging.INFO):
        thread.start()
        assert started.wait(2)
        lock.error = ConfigError("lock.redis.urls: Redis at redis://x refused our credentials")
        t0 = time.monotonic()
        assert cancelled.wait(2), "the run in flight was not cancelled"
        thread.join(2)
    assert not thread.is_alive() and time.monotonic() - t0 < 1.5
    assert len(outcome) == 1 and isinstance(outcome[0], ConfigError)
    assert "refused our credentials" in str(outcome[0])
    assert lock.renews_after == 1  # shutdown did not meet the same error again
    assert hub.leases == {}  # released at once, not left to expire
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert any("stepping down" in r.getMessage() for r in caplog.records)


class Waiting:
    """A watcher whose run lasts ``seconds`` unless cancelled; records how each run ended."""

    def __init__(self, seconds, name="slow"):
        self.name, self.spec, self.seconds = name, "@every 100ms", seconds
        self.started, self.ended = threading.Event(), []

    def run(self, ctx):
        self.started.set()
        self.ended.append("cancelled" if ctx.cancelled.wait(self.seconds) else "finished")


def once_daemon(store, hub, name, watchers, clock, shutdown_timeout=0.5):
    lock = InMemoryLeaderLock("nightwatch", name, 1.0, clock, hub)
    elector = LeaderElector(lock, store, clock, identity=name, renew_interval=0.2, renew_deadline=0.7,
                            retry_interval=0.05)
    return Daemon(store, elector, Scheduler(watchers, clock), retry_interval=0.05,
                  shutdown_timeout=shutdown_timeout)


def test_a_stop_request_cancels_run_once_after_the_shutdown_timeout():
    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    slow, after = Waiting(10), Waiting(10, name="after")
    d = once_daemon(store, hub, "a", [slow, after], clock, shutdown_timeout=0.5)
    result = []
    thread = threading.Thread(target=lambda: result.append(d.run_once(wait=2)), daemon=True)
    thread.start()
    assert slow.started.wait(2)
    t0 = time.monotonic()
    d.request_stop()  # what the first SIGTERM does
    thread.join(3)
    took = time.monotonic() - t0
    assert not thread.is_alive() and 0.4 <= took < 1.0, took  # the run had its 0.5 s, then was cancelled
    assert slow.ended == ["cancelled"] and not after.started.is_set()  # the rest did not start
    assert result == [1]  # the cycle did not complete
    assert hub.leases == {}  # released


def test_run_once_renews_the_lease_while_a_long_cycle_runs():
    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    slow = Waiting(1.6)  # longer than the 1 s lease
    a = once_daemon(store, hub, "a", [slow], clock)
    b = build(store, hub, "b", clock, retry=0.05)
    result = []
    ta = threading.Thread(target=lambda: result.append(a.run_once(wait=2)), daemon=True)
    ta.start()
    assert slow.started.wait(2)
    tb = start(b)
    try:
        while ta.is_alive():
            assert not b.elector.is_leader, "the standby took over during the run --once cycle"
            time.sleep(0.01)
        assert result == [0] and slow.ended == ["finished"]
        assert wait_for(lambda: b.elector.is_leader, 1.0)  # released at the end: taken over at once
    finally:
        b.request_stop()
        tb.join(5)


def test_shutdown_does_not_wait_for_a_hung_launch_past_the_shutdown_timeout(caplog):
    """A per-task call that ignores cancellation (an API request hung until its timeout) must
    not hold shutdown beyond server.shutdown_timeout."""
    import logging

    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    in_call, hung_for = threading.Event(), 3.0

    class HungGateway(FakeJobGateway):
        def launch(self, task, spec):
            in_call.set()
            time.sleep(hung_for)
            return super().launch(task, spec)

    watcher = TaskWatcher(store, HungGateway(clock), clock, allowed_namespaces=["default"],
                          spec="@every 100ms", concurrency=2)
    lock = InMemoryLeaderLock("nightwatch", "a", 1.0, clock, hub)
    elector = LeaderElector(lock, store, clock, identity="a", renew_interval=0.2, renew_deadline=0.7,
                            retry_interval=0.05)
    d = Daemon(store, elector, Scheduler([watcher], clock), retry_interval=0.05, shutdown_timeout=0.3)
    store.add(NewTask("t1", "default", '{"image": "a", "command": ["true"]}'))
    with caplog.at_level(logging.WARNING):
        thread = start(d)
        assert in_call.wait(3)
        t0 = time.monotonic()
        d.request_stop()
        thread.join(hung_for)
        took = time.monotonic() - t0
        assert not thread.is_alive() and took < 1.0, took
        assert hub.leases == {}  # released for a standby
        time.sleep(hung_for)  # the abandoned call ends: nothing is logged as a bug for it
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


def test_a_config_error_on_renew_during_run_once_cancels_the_cycle_and_is_kept_for_the_cli():
    from nightwatch.domain.errors import ConfigError

    clock, hub = SystemClock(), MemoryLockHub()
    store = InMemoryTaskStore(clock)
    slow = Waiting(10)

    class Refusing(InMemoryLeaderLock):
        error = None

        def renew(self):
            if self.error is not None:
                raise self.error
            return super().renew()

    lock = Refusing("nightwatch", "a", 1.0, clock, hub)
    elector = LeaderElector(lock, store, clock, identity="a", renew_interval=0.2, renew_deadline=0.7,
                            retry_interval=0.05)
    d = Daemon(store, elector, Scheduler([slow], clock), retry_interval=0.05, shutdown_timeout=3.0)
    result = []
    thread = threading.Thread(target=lambda: result.append(d.run_once(wait=2)), daemon=True)
    thread.start()
    assert slow.started.wait(2)
    lock.error = ConfigError("lock.redis.urls: refused our credentials")
    thread.join(2)
    assert not thread.is_alive() and result == [1]
    assert slow.ended == ["cancelled"] and hub.leases == {}
    assert isinstance(d.fatal, ConfigError)  # the CLI reports it in one line, status 2
