"""Launch and sync do not wait for each other: a run launches at most ``launch_per_run``
Normal tasks, then syncs, so Jobs that finished are written back while a backlog is launched."""

import json
from collections import Counter

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.scheduler import Scheduler
from nightwatch.app.task_watcher import TaskWatcher
from nightwatch.domain.model import NewTask
from nightwatch.domain.ports import RunContext

INFO = json.dumps({"image": "alpine", "command": ["true"]})


def setup(n, **kw):
    clock = FakeClock()
    store = InMemoryTaskStore(clock)
    gateway = FakeJobGateway(clock, default_duration=0.0)  # every Job finishes at once
    for i in range(n):
        store.add(NewTask(f"t-{i}", "default", INFO, 1, "Normal"))
    watcher = TaskWatcher(store, gateway, clock, allowed_namespaces=["default"], batch_size=30, **kw)
    return clock, store, gateway, watcher


def test_one_run_launches_at_most_the_bound_and_syncs_what_finished():
    clock, store, gateway, watcher = setup(100, launch_per_run=25)
    watcher.run(RunContext(fence=None))
    assert len(gateway.created) == 25 and watcher.backlog
    clock.advance(0.1)
    watcher.run(RunContext(fence=None))  # the second run writes the first 25 back before the backlog is done
    counts = store.count_by_status()
    assert counts.get("Succeeded", 0) + counts.get("Running", 0) >= 25
    assert counts["Normal"] == 50 and len(gateway.created) == 50


def test_without_a_backlog_the_run_says_so():
    _, _, gateway, watcher = setup(10, launch_per_run=25)
    watcher.run(RunContext(fence=None))
    assert len(gateway.created) == 10 and not watcher.backlog


def test_the_scheduler_runs_a_backlogged_watcher_again_at_once_until_done_each_launched_once():
    clock, store, gateway, watcher = setup(100, launch_per_run=7, spec="@every 30s")
    s = Scheduler([watcher], clock, inline=True)
    s.start(None)
    first_terminal = None
    for tick in range(200):  # no time passes: every run but the first is the backlog's own
        s.tick()
        if first_terminal is None and store.count_by_status().get("Succeeded"):
            first_terminal = tick
        if not watcher.backlog and not store.count_by_status().get("Normal"):
            break
    assert not store.count_by_status().get("Normal")
    assert first_terminal is not None and first_terminal <= 2  # not after the whole backlog (15 runs)
    assert Counter(c[2] for c in gateway.created) == Counter({t: 1 for t in range(1, 101)})


def test_tasks_waiting_for_their_retry_delay_take_no_part_of_the_bound():
    """600 old tasks wait out a retry delay: a fresh one behind them is still launched, and the
    run does not call for another at once (nothing it could do: no busy loop)."""
    from dataclasses import replace
    from datetime import timedelta

    clock, store, gateway, watcher = setup(601, launch_per_run=500)
    later = clock.now() + timedelta(hours=1)
    for task_id in range(1, 601):
        store.tasks[task_id] = replace(store.tasks[task_id], retry_at=later)
    watcher.run(RunContext(fence=None))
    assert [c[2] for c in gateway.created] == [601]
    assert not watcher.backlog


def test_a_failing_backend_ends_the_backlog_until_the_next_tick():
    clock, store, gateway, watcher = setup(100, launch_per_run=25, concurrency=4)
    gateway.unavailable = True
    watcher.run(RunContext(fence=None))
    assert not watcher.backlog and not gateway.created
