"""The daemon's schema phase before its first election, with stores that migrate slowly,
fail for a while, or are behind (test-side subclasses of the memory store)."""

from __future__ import annotations

import threading
import time

import pytest
from test_daemon import build, wait_for

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.lock.memory import MemoryLockHub
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.server import health, readiness
from nightwatch.domain.errors import BackendUnavailableError, ConfigError


class SlowMigration(InMemoryTaskStore):
    """Another replica holds the migration lock until ``release`` is set; a stop ends the wait."""

    def __init__(self) -> None:
        super().__init__(SystemClock())
        self.release = threading.Event()
        self.calls = 0

    def migrate(self, stop: threading.Event | None = None) -> None:
        self.calls += 1
        while not self.release.wait(0.02):
            if stop is not None and stop.is_set():
                raise BackendUnavailableError("shutdown while waiting for another replica's schema migration")


class FlakyMigration(InMemoryTaskStore):
    def __init__(self, failures: int) -> None:
        super().__init__(SystemClock())
        self.failures = failures

    def migrate(self, stop: threading.Event | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise BackendUnavailableError("store.mysql (db:3306): connection refused")


class Behind(InMemoryTaskStore):
    def __init__(self) -> None:
        super().__init__(SystemClock())
        self.migrated_by_us = False

    def migrate(self, stop: threading.Event | None = None) -> None:
        self.migrated_by_us = True

    def schema_status(self) -> tuple[str | None, str]:
        return "0003", "0004"


def test_while_it_migrates_the_daemon_is_alive_not_ready_and_leads_after() -> None:
    store = SlowMigration()
    d = build(store, MemoryLockHub(), "a", SystemClock())
    thread = threading.Thread(target=d.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: d.migrating)
        time.sleep(0.5)
        assert health(d, 1.0)[0] == 200
        assert time.monotonic() - d.heartbeat < 0.5  # the loop's heartbeat goes on
        assert readiness(d) == (503, "migrating: the schema is being upgraded (or another replica's upgrade awaited)")
        assert not d.elector.is_leader
        store.release.set()
        assert wait_for(lambda: d.elector.is_leader)
        assert readiness(d)[0] == 200 and not d.migrating
    finally:
        d.request_stop()
        thread.join(5)


def test_a_stop_ends_the_wait_for_another_replicas_migration_at_once() -> None:
    store = SlowMigration()
    d = build(store, MemoryLockHub(), "a", SystemClock())
    thread = threading.Thread(target=d.run, daemon=True)
    thread.start()
    assert wait_for(lambda: d.migrating)
    stopped = time.monotonic()
    d.request_stop()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - stopped < 1.0
    assert not d.elector.is_leader and not d.migrated


def test_a_store_away_at_start_is_retried_then_the_daemon_leads(caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyMigration(failures=3)
    d = build(store, MemoryLockHub(), "a", SystemClock(), retry=0.05)
    thread = threading.Thread(target=d.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: d.elector.is_leader)
        warnings = [r for r in caplog.records if "store unavailable" in r.getMessage()]
        assert len(warnings) == 3  # one per retry
    finally:
        d.request_stop()
        thread.join(5)


def test_migrate_off_refuses_to_start_while_behind_and_migrates_nothing() -> None:
    store = Behind()
    d = build(store, MemoryLockHub(), "a", SystemClock(), migrate="off")
    with pytest.raises(ConfigError, match="store.migrate is off and the schema is at 0003, nightwatch needs 0004: "
                                          "run nightwatch db migrate"):
        d.run()
    assert not store.migrated_by_us and not d.elector.is_leader


def test_migrate_auto_upgrades_a_schema_that_is_behind() -> None:
    store = Behind()
    d = build(store, MemoryLockHub(), "a", SystemClock())
    thread = threading.Thread(target=d.run, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: d.elector.is_leader)
        assert store.migrated_by_us
    finally:
        d.request_stop()
        thread.join(5)


def test_run_once_gives_up_when_the_store_stays_away() -> None:
    d = build(FlakyMigration(failures=10**6), MemoryLockHub(), "a", SystemClock(), retry=0.05)
    started = time.monotonic()
    assert d.run_once(0.5) == 1
    assert time.monotonic() - started < 2.0
