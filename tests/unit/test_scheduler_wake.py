"""Scheduler.wake: a run at once, one more after a run in flight, collapsed, only while leading."""

import threading

from nightwatch.adapters.clock import FakeClock
from nightwatch.app.metrics import Metrics
from nightwatch.app.scheduler import Scheduler


class Gated:
    """A watcher whose runs each wait for one permit (so a test decides when a run ends)."""

    def __init__(self, name="task", spec="@every 30s"):
        self.name, self.spec = name, spec
        self.started = threading.Semaphore(0)
        self.permits = threading.Semaphore(0)
        self.runs = 0
        self.backlog = False

    def run(self, ctx):
        self.runs += 1
        self.started.release()
        assert self.permits.acquire(timeout=10)


class Counting:
    def __init__(self, name="task", spec="@every 30s"):
        self.name, self.spec, self.runs, self.backlog = name, spec, 0, False

    def run(self, ctx):
        self.runs += 1


def started(s, w, n):
    """Tick (as the daemon does when on_wake fires) until the n-th run began."""
    for _ in range(1000):
        s.tick()
        if w.started.acquire(timeout=0.01):
            n -= 1
            if n == 0:
                return True
    return False


def test_a_wake_runs_the_watcher_before_its_next_slot():
    clock, w = FakeClock(), Counting()
    woken = []
    s = Scheduler([w], clock, inline=True)
    s.on_wake = lambda: woken.append(1)
    s.start(None)
    s.tick()  # the first run of the term
    assert w.runs == 1
    clock.advance(1.0)
    assert s.tick() > 20  # the next slot is ~29 s away
    s.wake("task")
    assert woken == [1]  # the daemon is told to tick now
    assert s.tick() > 20
    assert w.runs == 2  # without any time passing
    clock.advance(29.0)
    s.tick()
    assert w.runs == 3  # and the periodic schedule stays


def test_many_wakes_collapse_into_one_run():
    clock, w = FakeClock(), Counting()
    metrics = Metrics()
    s = Scheduler([w], clock, inline=True, metrics=metrics)
    s.start(None)
    s.tick()
    for _ in range(50):
        s.wake("task")
    s.tick()
    s.tick()
    assert w.runs == 2
    assert metrics.watcher_wakes.labels("task")._value.get() == 1


def test_a_wake_during_a_run_makes_exactly_one_more_run_right_after():
    clock, w = FakeClock(), Gated()
    woken = threading.Event()
    s = Scheduler([w], clock)
    s.on_wake = woken.set
    s.start(None)
    try:
        assert started(s, w, 1)
        woken.clear()
        for _ in range(10):
            s.wake("task")  # during run 1
        s.tick()  # run 1 is going: nothing starts
        assert w.runs == 1
        w.permits.release()  # run 1 ends
        assert woken.wait(5)  # ... and the daemon is told the next is due now
        assert started(s, w, 1)
        assert w.runs == 2
        w.permits.release()  # run 2 ends; nothing woke it since: no third run
        s.stop(timeout=5, cancel_at_once=False)
        assert w.runs == 2
    finally:
        for _ in range(3):
            w.permits.release()
        s.close()


def test_wakes_from_many_threads_at_once_are_safe():
    clock, w = FakeClock(), Counting()
    s = Scheduler([w], clock, inline=True)
    s.start(None)
    s.tick()
    threads = [threading.Thread(target=lambda: [s.wake("task") for _ in range(200)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.tick()
    s.tick()
    assert w.runs == 2


def test_a_wake_while_not_leading_does_nothing_and_a_new_term_forgets_old_wakes():
    clock, w = FakeClock(), Counting()
    s = Scheduler([w], clock, inline=True)
    s.wake("task")  # not started: not leading
    s.start(None)
    s.tick()
    s.wake("task")
    s.stop(0)  # leadership lost before the woken run started
    s.tick()
    assert w.runs == 1
    s.start(None)
    s.tick()  # the new term's first run, and not one more for the old wake
    s.tick()
    assert w.runs == 2


def test_an_unknown_watcher_name_is_ignored():
    clock, w = FakeClock(), Counting()
    s = Scheduler([w], clock, inline=True)
    s.start(None)
    s.wake("nope")
    s.tick()
    s.tick()
    assert w.runs == 1


def test_a_watcher_with_a_backlog_runs_again_at_once():
    clock = FakeClock()

    class Backlogged(Counting):
        def run(self, ctx):
            super().run(ctx)
            self.backlog = self.runs < 3

    w = Backlogged()
    s = Scheduler([w], clock, inline=True)
    s.start(None)
    for _ in range(5):
        s.tick()
    assert w.runs == 3  # two more at once, then the schedule (30 s) again
