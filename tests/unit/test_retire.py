"""A task written terminal retires its Job, once (issue 11: Kubernetes labels it
``nightwatch.io/done``, so the watch/list selector leaves it out); nothing else retires, and a
gateway whose retire fails (best effort) never undoes or blocks the written status."""

import json

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.task_watcher import TaskWatcher
from nightwatch.domain.model import Fence, NewTask
from nightwatch.domain.ports import RunContext


class RetiringGateway(FakeJobGateway):
    def __init__(self, clock, fail=False):
        super().__init__(clock, default_duration=1.0)
        self.retired = []
        self.fail = fail

    def retire(self, task):
        self.retired.append((task.id, task.attempt))
        if self.fail:
            raise RuntimeError("the API server is away")


def run(fail=False):
    clock = FakeClock()
    store = InMemoryTaskStore(clock)
    gateway = RetiringGateway(clock, fail)
    watcher = TaskWatcher(store, gateway, clock, allowed_namespaces=["default"])
    ctx = RunContext(fence=Fence("nightwatch", store.begin_term("nightwatch")))
    ok = store.add(NewTask("ok", "default", json.dumps({"image": "alpine"})))
    bad = store.add(NewTask("bad", "default", json.dumps({"image": "alpine", "command": ["false"]})))
    rejected = store.add(NewTask("rejected", "elsewhere", json.dumps({"image": "alpine"})))
    cancelled = store.add(NewTask("cancelled", "default", json.dumps({"image": "alpine", "command": ["sleep"],
                                                                      "args": ["60"]})))
    seen = []
    for step in range(8):
        if step == 1:
            store.request_cancel(cancelled.id, "no longer needed")
        watcher.run(ctx)
        seen.append(list(gateway.retired))
        clock.advance(1)
    statuses = {t.name: store.get(t.id).status for t in (ok, bad, rejected, cancelled)}
    return gateway, statuses, seen, (ok, bad, rejected, cancelled)


def test_each_terminal_task_retires_its_job_once():
    gateway, statuses, seen, tasks = run()
    assert statuses == {"ok": "Succeeded", "bad": "Failed", "rejected": "Failed", "cancelled": "Cancelled"}
    assert sorted(gateway.retired) == sorted((t.id, 1) for t in tasks)  # once each, the current attempt
    assert seen[0] == [(tasks[2].id, 1)]  # the first run: only the rejected one is terminal yet


def test_a_failing_retire_does_not_undo_or_block_the_status():
    gateway, statuses, _, tasks = run(fail=True)
    assert statuses == {"ok": "Succeeded", "bad": "Failed", "rejected": "Failed", "cancelled": "Cancelled"}
    assert sorted(gateway.retired) == sorted((t.id, 1) for t in tasks)
