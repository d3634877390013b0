"""The watcher registry: built-ins plus plug-ins from the ``nightwatch.watchers`` entry points.

A plug-in's entry point names a factory ``f(deps: WatcherDeps, config: dict) -> Watcher``;
``config`` is its ``watchers.<name>`` section (``spec``, ``enabled`` and its own keys).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from nightwatch.app.history_watcher import DEFAULT_RETENTION, HistoryWatcher
from nightwatch.app.metrics import Metrics
from nightwatch.app.scheduler import parse_schedule
from nightwatch.app.task_watcher import TaskWatcher
from nightwatch.domain.errors import ConfigError
from nightwatch.domain.ports import Clock, JobGateway, TaskStore, Watcher
from nightwatch.domain.retry import RetryPolicy

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "nightwatch.watchers"


@dataclass(frozen=True)
class WatcherDeps:
    """What the container hands every watcher factory."""

    store: TaskStore
    gateway: JobGateway
    clock: Clock
    metrics: Metrics
    allowed_namespaces: Collection[str]
    allowed_images: Collection[str]
    retries: int = 0  # jobs.defaults.retries
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)  # jobs.defaults.retry_delay{,_max}
    history_retention: float = DEFAULT_RETENTION  # history.retention, seconds


WatcherFactory = Callable[[WatcherDeps, Mapping[str, Any]], Watcher]


def task_watcher(deps: WatcherDeps, config: Mapping[str, Any]) -> Watcher:
    return TaskWatcher(
        deps.store, deps.gateway, deps.clock,
        allowed_namespaces=deps.allowed_namespaces,
        allowed_images=deps.allowed_images,
        batch_size=config.get("batch_size", 500),
        concurrency=config.get("concurrency", 16),
        missing_grace=config.get("missing_grace", 60.0),
        spec=config.get("spec", "@every 2s"),
        metrics=deps.metrics,
        count_interval=config.get("count_interval", 30.0),
        retries=deps.retries,
        retry_policy=deps.retry_policy,
        launch_per_run=config.get("launch_per_run", 500),
    )


def history_watcher(deps: WatcherDeps, config: Mapping[str, Any]) -> Watcher:
    return HistoryWatcher(deps.store, deps.clock, retention=deps.history_retention,
                          spec=config.get("spec", "@every 10m"))


BUILTINS: dict[str, WatcherFactory] = {"task": task_watcher, "history": history_watcher}


class WatcherRegistry:
    def __init__(self) -> None:
        self._factories: dict[str, WatcherFactory] = {}

    def register(self, name: str, factory: WatcherFactory, origin: str = "built-in") -> None:
        if name in self._factories:
            raise ConfigError(f"watcher name {name!r} is registered twice (again by {origin})")
        self._factories[name] = factory

    @property
    def names(self) -> list[str]:
        return sorted(self._factories)

    @classmethod
    def discover(cls) -> WatcherRegistry:
        registry = cls()
        for name, factory in BUILTINS.items():
            registry.register(name, factory)
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            origin = f"entry point {ep.value}" + (f" of {ep.dist.name}" if ep.dist else "")
            try:
                factory = ep.load()
            except Exception as e:
                raise ConfigError(f"watcher plug-in {ep.name!r} ({origin}) failed to load: {e}") from e
            registry.register(ep.name, factory, origin)
        return registry

    def build(self, deps: WatcherDeps, config: Mapping[str, Mapping[str, Any]]) -> list[Watcher]:
        """One instance of every enabled watcher, each initialised once."""
        unknown = set(config) - set(self._factories)
        if unknown:
            raise ConfigError(
                f"watchers.{sorted(unknown)[0]}: no such watcher (registered: {', '.join(self.names)})"
            )
        watchers = []
        for name in self.names:
            section = config.get(name, {})
            if not section.get("enabled", True):
                logger.info("watcher %s is disabled by configuration", name)
                continue
            watcher = self._factories[name](deps, section)
            watcher.name = name
            parse_schedule(watcher.spec, f"watchers.{name}.spec")
            watchers.append(watcher)
        return watchers
