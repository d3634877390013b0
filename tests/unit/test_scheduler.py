import logging
import threading
import time

import pytest

from nightwatch.adapters.clock import FakeClock
from nightwatch.app.metrics import Metrics
from nightwatch.app.scheduler import Cron, Every, Scheduler, parse_schedule
from nightwatch.domain.errors import ConfigError
from nightwatch.domain.model import Fence


class Counting:
    def __init__(self, name="w", spec="@every 2s", fail=False, block: threading.Event | None = None):
        self.name, self.spec, self.fail, self.block = name, spec, fail, block
        self.runs = []

    def run(self, ctx):
        self.runs.append(ctx.epoch)
        if self.block is not None:
            self.block.wait(10)
        if self.fail:
            raise RuntimeError(f"boom in run {len(self.runs)}")


@pytest.mark.parametrize(("spec", "expected"), [
    ("@every 2s", Every(2.0)), ("@every 500ms", Every(0.5)), ("@every 1m30s", Every(90.0)),
    ("*/5 * * * * *", Cron("*/5 * * * * *")), ("0 0 * * * *", Cron("0 0 * * * *")),
])
def test_parse_schedule(spec, expected):
    assert parse_schedule(spec) == expected


@pytest.mark.parametrize("spec", ["@every", "@every 0s", "@every soon", "* * * * *", "61 * * * * *", ""])
def test_bad_schedules_name_the_key(spec):
    with pytest.raises(ConfigError, match="^watchers.task.spec: "):
        parse_schedule(spec, "watchers.task.spec")


def run_for(scheduler, clock, seconds, step=0.1):
    for _ in range(round(seconds / step)):
        scheduler.tick()
        clock.advance(step)


def test_every_runs_on_time_with_the_term():
    clock = FakeClock()
    w = Counting(spec="@every 500ms")
    s = Scheduler([w], clock, inline=True)
    s.start(Fence("nw", 7))
    run_for(s, clock, 2.0)
    assert len(w.runs) == 4 and set(w.runs) == {7}


def test_cron_with_seconds_fires_on_the_second():
    clock = FakeClock()  # starts at 00:00:00
    w = Counting(spec="*/5 * * * * *")
    s = Scheduler([w], clock, inline=True)
    s.start(None)
    run_for(s, clock, 21.0, step=0.05)
    assert len(w.runs) == 4  # at :05, :10, :15, :20


def test_an_exception_is_logged_with_traceback_and_scheduling_goes_on(caplog):
    clock = FakeClock()
    w = Counting(spec="@every 1s", fail=True)
    metrics = Metrics()
    s = Scheduler([w], clock, inline=True, metrics=metrics)
    s.start(None)
    with caplog.at_level(logging.ERROR):
        run_for(s, clock, 3.0)
    assert len(w.runs) == 3
    errors = [r for r in caplog.records if "run failed" in r.getMessage()]
    assert len(errors) == 3 and all(r.exc_info for r in errors)
    assert metrics.watcher_runs.labels("w", "error")._value.get() == 3


def test_a_run_still_going_is_skipped_not_stacked():
    clock = FakeClock()
    release = threading.Event()
    w = Counting(spec="@every 1s", block=release)
    metrics = Metrics()
    s = Scheduler([w], clock, metrics=metrics)
    s.start(None)
    s.tick()  # starts run 1 on the pool; it blocks
    for _ in range(3):
        clock.advance(1.0)
        s.tick()
    assert len(w.runs) == 1
    assert metrics.watcher_runs.labels("w", "skipped")._value.get() == 3
    release.set()
    time.sleep(0.1)
    clock.advance(1.0)
    s.tick()
    deadline = time.monotonic() + 2
    while len(w.runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(w.runs) == 2
    s.close()


def test_stop_cancels_the_run_in_flight():
    clock = FakeClock()
    seen = []

    class Slow:
        name, spec = "slow", "@every 1s"

        def run(self, ctx):
            seen.append(ctx)
            ctx.cancelled.wait(10)

    s = Scheduler([Slow()], clock)
    s.start(None)
    s.tick()
    time.sleep(0.05)
    assert s.stop(timeout=2.0)  # cancel at once: the run sees it and ends
    assert seen and seen[0].cancelled.is_set()
    clock.advance(5)
    s.tick()
    assert len(seen) == 1  # stopped: nothing new starts


def test_run_all_once_runs_every_watcher_and_reports_every_failure(caplog):
    clock = FakeClock()
    first, ok, last = Counting("first", fail=True), Counting("ok"), Counting("last", fail=True)
    s = Scheduler([first, ok, last], clock, inline=True)
    with caplog.at_level(logging.ERROR):
        assert s.run_all_once(Fence("nw", 3)) is False
    assert (first.runs, ok.runs, last.runs) == ([3], [3], [3])  # a failure does not stop the rest
    failed = {r.getMessage().split()[1] for r in caplog.records if "run failed;" in r.getMessage()}
    assert failed == {"first:", "last:"}
    assert "2 of 3 watcher run(s) failed: first, last" in caplog.text
    assert Scheduler([Counting("a"), Counting("b")], clock, inline=True).run_all_once(None) is True


class WallStamping:
    """Records the wall-clock second at which each of its runs started."""

    def __init__(self, clock, spec):
        self.name, self.spec, self.clock = "cron", spec, clock
        self.walls = []

    def run(self, ctx):
        self.walls.append(round(self.clock.now().timestamp() - FakeClock().now().timestamp(), 2))


@pytest.mark.parametrize("step_back", [4.0, 6.0, 30.0])
def test_a_cron_slot_runs_once_when_the_wall_clock_steps_back(step_back):
    clock = FakeClock()  # wall 00:00:00
    w = WallStamping(clock, "*/5 * * * * *")
    s = Scheduler([w], clock, inline=True)
    s.start(None)
    run_for(s, clock, 11.0, step=0.25)
    assert w.walls == [5.0, 10.0]
    clock.step_wall(-step_back)  # wall 00:00:11 -> 00:00:07 / :05 / 23:59:41
    run_for(s, clock, 40.0, step=0.25)
    # every later run is at a slot after the last one that ran: :10 does not run again
    assert w.walls == sorted(set(w.walls)), w.walls
    assert all(t % 5 == 0 for t in w.walls), w.walls
    assert w.walls[2] == 15.0, w.walls


def test_a_cron_slot_due_while_the_wall_clock_stepped_back_waits_for_its_time():
    clock = FakeClock()
    w = WallStamping(clock, "0 * * * * *")  # every minute, on the minute
    s = Scheduler([w], clock, inline=True)
    s.start(None)
    run_for(s, clock, 30.0, step=0.5)
    clock.step_wall(-20.0)  # 00:00:30 -> 00:00:10: the 00:01:00 slot is now 50 s away
    run_for(s, clock, 120.0, step=0.5)
    assert w.walls == [60.0, 120.0], w.walls
