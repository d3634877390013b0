"""Watchers as plug-ins: built-ins, the entry-point group, duplicates, disabling."""

import sys

import pytest

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.metrics import Metrics
from nightwatch.app.registry import WatcherDeps, WatcherRegistry
from nightwatch.domain.errors import ConfigError

PLUGIN = '''
class Hello:
    def __init__(self, deps, config):
        self.name = "hello"
        self.spec = config.get("spec", "@every 5s")
        self.greeting = config.get("greeting", "hi")
        self.store = deps.store

    def run(self, ctx):
        pass
'''


@pytest.fixture
def deps():
    clock = FakeClock()
    return WatcherDeps(InMemoryTaskStore(clock), FakeJobGateway(clock), clock, Metrics(), ["default"], [])


def install_plugin(tmp_path, monkeypatch, entry_name="hello", dist="nw_hello"):
    """A real installed distribution (a .dist-info on sys.path) with an entry point."""
    (tmp_path / f"{dist}_mod.py").write_text(PLUGIN)
    info = tmp_path / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[nightwatch.watchers]\n{entry_name} = {dist}_mod:Hello\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(f"{dist}_mod", None)


def test_builtin_task_and_history_watchers(deps):
    watchers = WatcherRegistry.discover().build(deps, {"task": {"spec": "@every 1s"}})
    assert [(w.name, w.spec) for w in watchers] == [("history", "@every 10m"), ("task", "@every 1s")]


def test_entry_point_plugin_is_found_and_initialised_once_with_its_config(tmp_path, monkeypatch, deps):
    install_plugin(tmp_path, monkeypatch)
    registry = WatcherRegistry.discover()
    assert registry.names == ["hello", "history", "task"]
    watchers = registry.build(deps, {"hello": {"spec": "*/10 * * * * *", "greeting": "yo"}})
    hello = next(w for w in watchers if w.name == "hello")
    assert hello.greeting == "yo" and hello.spec == "*/10 * * * * *" and hello.store is deps.store


def test_duplicate_names_are_an_error_at_startup(tmp_path, monkeypatch):
    install_plugin(tmp_path, monkeypatch, entry_name="task")
    with pytest.raises(ConfigError, match="watcher name 'task' is registered twice"):
        WatcherRegistry.discover()


def test_disabled_watchers_are_not_built(deps):
    off = {"enabled": False}
    assert WatcherRegistry.discover().build(deps, {"task": off, "history": off}) == []
    assert [w.name for w in WatcherRegistry.discover().build(deps, {"history": off})] == ["task"]


def test_unknown_watcher_in_config_is_named(deps):
    with pytest.raises(ConfigError, match="watchers.nope: no such watcher"):
        WatcherRegistry.discover().build(deps, {"nope": {}})


def test_bad_spec_names_the_key(deps):
    with pytest.raises(ConfigError, match="watchers.task.spec"):
        WatcherRegistry.discover().build(deps, {"task": {"spec": "every day"}})
