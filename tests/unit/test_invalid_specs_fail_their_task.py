"""A spec the domain refuses fails its own task with ``invalid task: …`` on every backend, before
any Job exists; the quantities Kubernetes takes pass and reach the Job as written."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.jobs.local import LocalJobGateway
from nightwatch.adapters.jobs.manifest import build_job_manifest
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.task_watcher import TaskWatcher
from nightwatch.domain.jobspec import parse_info
from nightwatch.domain.model import Fence, NewTask, Task
from nightwatch.domain.ports import JobGateway, RunContext

INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "nul-in-command": ({"command": ["echo", "a\u0000b"]}, "invalid task: info.command[1] contains a NUL byte"),
    "nul-in-args": ({"command": ["echo"], "args": ["\u0000"]}, "invalid task: info.args[0] contains a NUL byte"),
    "nul-in-env": ({"command": ["true"], "env": {"A": "\u0000"}},
                   "invalid task: info.env value of 'A' contains a NUL byte"),
    "nul-in-image": ({"image": "busy\u0000box", "command": ["true"]}, "invalid task: info.image contains a NUL byte"),
    "lots-of-cpu": ({"command": ["true"], "resources": {"limits": {"cpu": "lots"}}},
                    "invalid task: info.resources.limits.cpu: 'lots' is not a Kubernetes quantity"),
    "minus-one": ({"command": ["true"], "resources": {"limits": {"memory": -1}}},
                  "invalid task: info.resources.limits.memory: -1 must not be negative"),
    "negative": ({"command": ["true"], "resources": {"requests": {"memory": "-1Gi"}}},
                 "invalid task: info.resources.requests.memory: '-1Gi' must not be negative"),
    "boolean": ({"command": ["true"], "resources": {"limits": {"cpu": True}}},
                "invalid task: info.resources.limits.cpu: true is not a Kubernetes quantity"),
    "unknown-name": ({"command": ["true"], "resources": {"limits": {"gpu": "1"}}},
                     "invalid task: info.resources.limits: 'gpu' is not a resource name"),
    "above-limit": ({"command": ["true"], "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
                    "invalid task: info.resources.requests.cpu: '2' must be less than or equal to the cpu limit"),
}
VALID: dict[str, dict[str, dict[str, Any]]] = {
    "sized": {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}},
    "whole": {"limits": {"cpu": 2}, "requests": {"cpu": "1.5"}},
}


def fake(tmp_path: Path, clock: FakeClock) -> FakeJobGateway:
    return FakeJobGateway(clock)


def local(tmp_path: Path, clock: FakeClock) -> LocalJobGateway:
    return LocalJobGateway(str(tmp_path / "state"))


@pytest.fixture(params=[fake, local], ids=["fake", "local"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobGateway]:
    g = request.param(tmp_path, FakeClock())
    yield g
    g.close()


def run_once(gateway: JobGateway, infos: dict[str, dict[str, Any]]) -> tuple[InMemoryTaskStore, dict[str, Task]]:
    clock = FakeClock()
    store = InMemoryTaskStore(clock)
    tasks = {name: store.add(NewTask(name, "default", json.dumps({"image": "busybox", **doc})))
             for name, doc in infos.items()}
    watcher = TaskWatcher(store, gateway, clock, allowed_namespaces=["default"])
    try:
        watcher.run(RunContext(fence=Fence("nightwatch", store.begin_term("nightwatch"))))
    finally:
        watcher.close()
    return store, tasks


def test_an_invalid_spec_fails_its_task_before_any_job_exists(gateway: JobGateway, tmp_path: Path) -> None:
    store, tasks = run_once(gateway, {name: doc for name, (doc, _) in INVALID.items()})

    for name, (_, message) in INVALID.items():
        got = store.get(tasks[name].id)
        assert (got.status, (got.message or "")[:len(message)]) == ("Failed", message), name
    if isinstance(gateway, FakeJobGateway):
        assert gateway.created == []
    else:
        assert not (tmp_path / "state" / "jobs" / "default").exists() or \
            os.listdir(tmp_path / "state" / "jobs" / "default") == []


def test_valid_quantities_are_launched_and_reach_the_job_unchanged(gateway: JobGateway, tmp_path: Path) -> None:
    store, tasks = run_once(gateway, {name: {"command": ["true"], "resources": r} for name, r in VALID.items()})

    for name, resources in VALID.items():
        task = store.get(tasks[name].id)
        assert task.status in ("Pending", "Running", "Succeeded"), task  # launched (a quick `true` may be done)
        if isinstance(gateway, FakeJobGateway):
            sent = gateway.jobs[("default", name)].spec.resources
        else:
            doc = json.loads((tmp_path / "state" / "jobs" / "default" / name / "job.json").read_text())
            sent = doc["resources"]
        assert sent == resources
        manifest = build_job_manifest(task, parse_info(task.info))
        assert manifest["spec"]["template"]["spec"]["containers"][0]["resources"] == resources
    assert type(sent["limits"]["cpu"]) is int  # 2 stays the number 2
