"""The container wires the events: the gateway wakes the task watcher, the store's notifier
is the one for its backend, the new keys reach the watcher."""

import pytest

from nightwatch.adapters.store.notify import Probe
from nightwatch.app.config import load_config
from nightwatch.app.container import build_container
from nightwatch.domain.errors import ConfigError


def container_for(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return build_container(load_config(str(p)))


def test_the_gateway_and_the_probe_wake_the_task_watcher(tmp_path):
    c = container_for(tmp_path, f"store: {{backend: sqlite, sqlite: {{path: {tmp_path / 'nw.db'}}}}}\n"
                                "lock: {backend: memory}\njobs: {backend: fake}\n"
                                "watchers: {task: {launch_per_run: 7, probe_interval: 100ms}}\n")
    try:
        daemon = c.daemon()
        assert isinstance(daemon._notifier, Probe) and daemon._notifier._interval == 0.1
        task = next(w for w in c.watchers() if w.name == "task")
        assert task._launch_per_run == 7
        scheduler = daemon.scheduler
        scheduler.start(None)
        c.gateway().wake()  # what the gateway calls when a Job changed
        assert next(e for e in scheduler._entries if e.watcher.name == "task").woken
        assert daemon._wake.is_set()  # the daemon's loop turns at once
    finally:
        c.shutdown_resources()


def test_no_notifier_on_the_memory_store_nor_with_a_probe_interval_of_zero(tmp_path):
    for store in ("{backend: memory}", f"{{backend: sqlite, sqlite: {{path: {tmp_path / 'nw.db'}}}}}"):
        c = container_for(tmp_path, f"store: {store}\nlock: {{backend: memory}}\njobs: {{backend: fake}}\n"
                                    "watchers: {task: {probe_interval: 0s}}\n")
        try:
            assert c.daemon()._notifier is None
        finally:
            c.shutdown_resources()


def test_launch_per_run_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="watchers.task.launch_per_run"):
        container_for(tmp_path, "store: {backend: memory}\nlock: {backend: memory}\njobs: {backend: fake}\n"
                                "watchers: {task: {launch_per_run: 0}}\n")
