"""How the task watcher retries launches: transient errors for ever with a capped backoff,
unexpected errors a bounded number of times, then the task fails with the error's message."""

import logging

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.task_watcher import RETRY_MAX, UNEXPECTED_ATTEMPTS, TaskWatcher
from nightwatch.domain.model import NewTask
from nightwatch.domain.ports import RunContext

INFO = '{"image": "alpine", "command": ["sleep"], "args": ["1"]}'


def watcher(clock, gateway, store):
    return TaskWatcher(store, gateway, clock, allowed_namespaces=["default"], concurrency=2)


def test_the_backoff_stays_capped_after_thousands_of_transient_failures(caplog):
    """About 34 h of a full ResourceQuota: the delay must stay at the cap, not overflow."""
    clock = FakeClock()
    store = InMemoryTaskStore(clock)
    gateway = FakeJobGateway(clock)
    w = watcher(clock, gateway, store)
    task = store.add(NewTask("quota", "default", INFO))
    gateway.fail_next_creates = 1100
    with caplog.at_level(logging.WARNING):
        for _ in range(1100):
            w.launch(RunContext(None))
            clock.advance(RETRY_MAX + 1)
    assert gateway.fail_next_creates == 0, "every run due made its attempt"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], \
        [r.getMessage() for r in caplog.records if r.exc_info][:1]
    last = [r.getMessage() for r in caplog.records if "launch failed" in r.getMessage()][-1]
    assert f"retrying in {RETRY_MAX:.0f}s" in last, last
    # still backed off after that many failures: not retried on the very next run
    gateway.fail_next_creates = 1
    w.launch(RunContext(None))
    assert gateway.fail_next_creates == 0
    clock.advance(1)
    w.launch(RunContext(None))
    assert store.get(task.id).status == "Normal" and not gateway.created
    clock.advance(RETRY_MAX)
    w.launch(RunContext(None))
    assert store.get(task.id).status == "Pending" and len(gateway.created) == 1


class BuggyGateway(FakeJobGateway):
    """Raises an exception nightwatch does not expect (a bug, an untranslated driver error)
    for the tasks named in ``buggy``; launches the others."""

    def __init__(self, clock, buggy):
        super().__init__(clock)
        self.buggy = set(buggy)
        self.attempts = {}

    def launch(self, task, spec):
        self.attempts[task.name] = self.attempts.get(task.name, 0) + 1
        if task.name in self.buggy:
            raise ValueError("embedded null byte")
        return super().launch(task, spec)


def test_an_unexpected_launch_error_is_retried_a_bounded_number_of_times_then_fails_the_task(caplog):
    clock = FakeClock()
    store = InMemoryTaskStore(clock)
    gateway = BuggyGateway(clock, buggy={"bad"})
    w = watcher(clock, gateway, store)
    bad = store.add(NewTask("bad", "default", INFO))
    good = store.add(NewTask("good", "default", INFO))
    with caplog.at_level(logging.WARNING):
        for _ in range(50):  # 50 runs, each after the longest backoff: far more than the bound
            w.launch(RunContext(None))
            clock.advance(RETRY_MAX + 1)
    got = store.get(bad.id)
    assert got.status == "Failed", got
    assert "ValueError: embedded null byte" in got.message, got.message
    assert gateway.attempts["bad"] == UNEXPECTED_ATTEMPTS
    assert store.get(good.id).status == "Pending" and gateway.attempts["good"] == 1
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, "one traceback for the bug, then one line per retry"


def test_an_unexpected_error_that_goes_away_does_not_fail_the_task():
    clock = FakeClock()
    store = InMemoryTaskStore(clock)
    gateway = BuggyGateway(clock, buggy={"flaky"})
    w = watcher(clock, gateway, store)
    task = store.add(NewTask("flaky", "default", INFO))
    for _ in range(UNEXPECTED_ATTEMPTS - 1):
        w.launch(RunContext(None))
        clock.advance(RETRY_MAX + 1)
    gateway.buggy.clear()
    w.launch(RunContext(None))
    assert store.get(task.id).status == "Pending"
