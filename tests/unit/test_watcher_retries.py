"""How the task watcher retries launches: transient errors for ever with a capped backoff,
unexpected errors a bounded number of times, then the task fails with the error's message."""

import logging

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.task_watcher import RETRY_MAX, TaskWatcher
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
