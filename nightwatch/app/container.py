"""The composition root: the one place that knows every adapter by name.

Each port has one ``Selector`` on its ``*.backend`` key over ``Factory`` providers; the
chosen adapter is wrapped in one ``Resource`` that closes it (never a Resource inside a
Selector: dependency-injector #424). Adapter modules are imported only when chosen, so a
missing driver is reported by name and nothing connects at import time.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Iterator
from typing import Any

from dependency_injector import containers, providers

from nightwatch.adapters.clock import SystemClock
from nightwatch.app.daemon import Daemon
from nightwatch.app.elector import LeaderElector
from nightwatch.app.metrics import Metrics
from nightwatch.app.registry import WatcherDeps, WatcherRegistry
from nightwatch.app.scheduler import Scheduler
from nightwatch.domain.errors import ConfigError
from nightwatch.domain.jobspec import JobDefaults
from nightwatch.domain.ports import Clock
from nightwatch.domain.retry import RetryPolicy

# An environment switch older test builds honoured to turn fencing off. Nothing honours it
# now; a deployment that still sets it is refused, so nobody believes it is in effect.
RETIRED_FENCING_SWITCH = "NIGHTWATCH_TEST_DISABLE_FENCING"


def _adapter(module: str, cls: str, driver: str) -> Any:
    try:
        return getattr(importlib.import_module(f"nightwatch.adapters.{module}"), cls)
    except ImportError as e:
        raise ConfigError(f"{module.replace('.', ' ')} backend needs {driver}: pip install {driver} ({e})") from e


def memory_store(clock: Clock) -> Any:
    return _adapter("store.memory", "InMemoryTaskStore", "nightwatch")(clock)


def sqlite_store(cfg: dict[str, Any], clock: Clock) -> Any:
    return _adapter("store.sql", "sqlite_store", "SQLAlchemy")(cfg["path"], clock)


def mysql_store(cfg: dict[str, Any], clock: Clock) -> Any:
    extra = {k: cfg[k] for k in ("connect_timeout", "read_timeout", "write_timeout", "pool_size") if k in cfg}
    _driver("pymysql", "PyMySQL")
    return _adapter("store.sql", "mysql_store", "SQLAlchemy")(
        cfg["host"], cfg["port"], cfg["user"], cfg["password"], cfg["database"], clock, **extra
    )


def postgres_store(cfg: dict[str, Any], clock: Clock) -> Any:
    extra = {k: cfg[k] for k in ("connect_timeout", "statement_timeout", "pool_size") if k in cfg}
    _driver("psycopg", "psycopg[binary]")
    return _adapter("store.sql", "postgres_store", "SQLAlchemy")(cfg["dsn"], clock, **extra)


def _driver(module: str, package: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"store backend needs {package}: pip install {package} ({e})") from e


def memory_lock(cfg: dict[str, Any], identity: str, clock: Clock) -> Any:
    return _adapter("lock.memory", "InMemoryLeaderLock", "nightwatch")(cfg["name"], identity, cfg["ttl"], clock)


def file_lock(cfg: dict[str, Any], identity: str) -> Any:
    return _adapter("lock.file", "FileLeaderLock", "nightwatch")(cfg["name"], cfg["file"]["path"], identity)


def redis_lock(cfg: dict[str, Any], identity: str, clock: Clock) -> Any:
    extra = {k: cfg["redis"][k] for k in ("socket_timeout", "key_prefix") if k in cfg["redis"]}
    return _adapter("lock.redis", "RedisLeaderLock", "redis")(
        cfg["name"], cfg["redis"]["urls"], identity, cfg["ttl"], clock=clock, **extra
    )


JOB_DEFAULT_KEYS = ("backoff_limit", "ttl_seconds_after_finished", "active_deadline_seconds")


def job_defaults(cfg: dict[str, Any]) -> JobDefaults:
    """What the gateways build every Job with (the retry keys are the task watcher's)."""
    return JobDefaults(**{k: cfg[k] for k in JOB_DEFAULT_KEYS if k in cfg})


def retry_policy(cfg: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(base=cfg.get("retry_delay", 10.0), cap=cfg.get("retry_delay_max", 600.0))


def fake_gateway(cfg: dict[str, Any], defaults: JobDefaults, clock: Clock) -> Any:
    return _adapter("jobs.fake", "FakeJobGateway", "nightwatch")(clock, defaults=defaults, **(cfg or {}))


def local_gateway(cfg: dict[str, Any], defaults: JobDefaults, clock: Clock) -> Any:
    return _adapter("jobs.local", "LocalJobGateway", "nightwatch")(
        cfg["state_dir"], defaults=defaults, clock=clock, record_path=cfg.get("record_path"),
        cancel_grace=cfg.get("cancel_grace", 10.0),
    )


def kubernetes_gateway(cfg: dict[str, Any], defaults: JobDefaults, clock: Clock) -> Any:
    return _adapter("jobs.kubernetes", "KubernetesJobGateway", "kubernetes")(
        kubeconfig=cfg.get("kubeconfig"), context=cfg.get("context"), qps=cfg["qps"], burst=cfg["burst"],
        request_timeout=cfg["request_timeout"], forbidden_grace=cfg["forbidden_grace"], defaults=defaults,
        clock=clock, pending_fatal_grace=cfg.get("pending_fatal_grace", 120.0), resync=cfg.get("resync", 300.0),
    )


TASK_WATCHER = "task"  # the watcher that events wake


def wired_scheduler(watchers: list[Any], clock: Clock, metrics: Metrics, gateway: Any) -> Scheduler:
    """The scheduler, woken by the gateway when a Job may have changed."""
    scheduler = Scheduler(watchers, clock, metrics=metrics)
    gateway.set_wake(lambda: scheduler.wake(TASK_WATCHER))
    return scheduler


def store_notifier(store: Any, store_cfg: dict[str, Any], watchers_cfg: dict[str, Any], scheduler: Scheduler,
                   metrics: Metrics) -> Iterator[Any]:
    """PostgreSQL: LISTEN (``store.postgres.listen``); MariaDB/MySQL and SQLite: the probe every
    ``watchers.task.probe_interval`` (0 = none); else none (the tick alone)."""
    task = (watchers_cfg or {}).get(TASK_WATCHER) or {}
    backend = store_cfg["backend"]
    notifier: Any = None
    if task.get("enabled", True):
        def wake() -> None:
            scheduler.wake(TASK_WATCHER)

        notify = importlib.import_module("nightwatch.adapters.store.notify")
        on_lost = metrics.notify_fallbacks.inc
        if backend == "postgres" and (store_cfg.get("postgres") or {}).get("listen", True):
            notifier = notify.PostgresListener(store.listen_connect, wake, on_lost=on_lost)
        elif backend in ("mysql", "sqlite") and task.get("probe_interval", 0.25) > 0:
            notifier = notify.Probe(store.engine, wake, task.get("probe_interval", 0.25), on_lost=on_lost)
    try:
        yield notifier
    finally:
        if notifier is not None:
            notifier.close()


def closing(adapter: Any) -> Iterator[Any]:
    try:
        yield adapter
    finally:
        adapter.close()


def replica_identity(configured: str | None) -> str:
    return configured or os.environ.get("NIGHTWATCH_REPLICA") or f"{socket.gethostname()}:{os.getpid()}"


def build_watchers(deps: WatcherDeps, config: dict[str, Any]) -> list[Any]:
    return WatcherRegistry.discover().build(deps, config)


class Container(containers.DeclarativeContainer):
    config = providers.Configuration(strict=True)

    clock = providers.Singleton(SystemClock)
    identity = providers.Singleton(replica_identity, config.lock.identity)

    store = providers.Resource(closing, providers.Selector(
        config.store.backend,
        memory=providers.Factory(memory_store, clock),
        sqlite=providers.Factory(sqlite_store, config.store.sqlite, clock),
        mysql=providers.Factory(mysql_store, config.store.mysql, clock),
        postgres=providers.Factory(postgres_store, config.store.postgres, clock),
    ))
    lock = providers.Resource(closing, providers.Selector(
        config.lock.backend,
        memory=providers.Factory(memory_lock, config.lock, identity, clock),
        file=providers.Factory(file_lock, config.lock, identity),
        redis=providers.Factory(redis_lock, config.lock, identity, clock),
    ))
    job_defaults = providers.Singleton(job_defaults, config.jobs.defaults)
    gateway = providers.Resource(closing, providers.Selector(
        config.jobs.backend,
        fake=providers.Factory(fake_gateway, config.jobs.fake, job_defaults, clock),
        local=providers.Factory(local_gateway, config.jobs.local, job_defaults, clock),
        kubernetes=providers.Factory(kubernetes_gateway, config.jobs.kubernetes, job_defaults, clock),
    ))
    # The HTTP server's own gateway (for logs): its own connections and Kubernetes rate limiter,
    # so console pages following logs never take the leader's launches', observes' and cancels'
    # requests. Not a Resource: the server closes it when it shuts down. The fake simulates the
    # cluster in this process's memory, so the server reads the same one.
    web_gateway = providers.Selector(
        config.jobs.backend,
        fake=gateway,
        local=providers.Factory(local_gateway, config.jobs.local, job_defaults, clock),
        kubernetes=providers.Factory(kubernetes_gateway, config.jobs.kubernetes, job_defaults, clock),
    )
    metrics = providers.Singleton(Metrics, gateway=gateway)  # job_requests reads the gateway's tally

    watcher_deps = providers.Singleton(
        WatcherDeps, store=store, gateway=gateway, clock=clock, metrics=metrics,
        allowed_namespaces=config.jobs.allowed_namespaces, allowed_images=config.jobs.allowed_images,
        retries=config.jobs.defaults.retries,
        retry_policy=providers.Singleton(retry_policy, config.jobs.defaults),
        history_retention=config.history.retention,
    )
    watchers = providers.Singleton(build_watchers, watcher_deps, config.watchers)
    scheduler = providers.Singleton(wired_scheduler, watchers, clock, metrics, gateway)
    notifier = providers.Resource(store_notifier, store, config.store, config.watchers, scheduler, metrics)
    daemon = providers.Singleton(
        Daemon,
        store=store,
        elector=providers.Singleton(
            LeaderElector, lock, store, clock, identity=identity,
            renew_interval=config.lock.renew_interval, renew_deadline=config.lock.renew_deadline,
            retry_interval=config.lock.retry_interval, metrics=metrics,
        ),
        scheduler=scheduler,
        shutdown_timeout=config.server.shutdown_timeout,
        retry_interval=config.lock.retry_interval,
        migrate=config.store.migrate,
        notifier=notifier,
    )


def build_container(config: dict[str, Any]) -> Container:
    if RETIRED_FENCING_SWITCH in os.environ:
        raise ConfigError(f"{RETIRED_FENCING_SWITCH} is set: fencing cannot be turned off (it never should "
                          "have been); unset it")
    container = Container()
    container.config.from_dict(config)
    return container
