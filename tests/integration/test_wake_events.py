"""New rows wake the launch, on the real servers: PostgreSQL LISTEN/NOTIFY (revision 0007's
trigger), the MariaDB/SQLite probe; a lost LISTEN connection falls back to the schedule with one
warning and comes back. The scheduler's clock is a FakeClock that never moves, so its periodic
slot (``@every 30s``) never comes again after the term's first run: a task that gets launched
was launched by a wake, whatever the time it took."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from nightwatch.adapters.clock import FakeClock, SystemClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.adapters.store.notify import PostgresListener, Probe
from nightwatch.adapters.store.sql import SQLTaskStore, mysql_store, postgres_store, sqlite_store
from nightwatch.app.metrics import Metrics
from nightwatch.app.scheduler import Scheduler
from nightwatch.app.task_watcher import TaskWatcher
from tests.sql_databases import MySQLServer, mysql_database, postgres_database

INFO = '{"image": "alpine", "command": ["true"]}'


class Leader:
    """The daemon's part that matters here: tick whenever the scheduler says a wake came."""

    def __init__(self, store: SQLTaskStore) -> None:
        self.store = store
        self.metrics = Metrics()
        self.gateway = FakeJobGateway(FakeClock(), default_duration=3600)
        self.watcher = TaskWatcher(store, self.gateway, FakeClock(), allowed_namespaces={"default"},
                                   spec="@every 30s", metrics=self.metrics)
        self.scheduler = Scheduler([self.watcher], FakeClock(), metrics=self.metrics)
        self._woken = threading.Event()
        self.scheduler.on_wake = self._woken.set
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def wake(self) -> None:
        self.scheduler.wake("task")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._woken.clear()
            self.scheduler.tick()
            self._woken.wait(0.5)

    def __enter__(self) -> Leader:
        self.scheduler.start(None)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.scheduler.close()

    @property
    def wakes(self) -> float:
        return self.metrics.watcher_wakes.labels("task")._value.get()

    def insert(self, name: str) -> int:
        with self.store.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO task (name, namespace, info, status)"
                                 " VALUES (:n, 'default', :i, 'Normal')"), {"n": name, "i": INFO})
            return int(conn.execute(sa.text("SELECT id FROM task WHERE name = :n"), {"n": name}).scalar_one())

    def status(self, task_id: int) -> str:
        with self.store.engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT status FROM task WHERE id = :i"), {"i": task_id}).scalar_one())


def eventually(check: Callable[[], bool], limit: float = 15.0) -> bool:
    """Wait for ``check`` (a bound on a wait, not a timing asserted)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


def first_run_done(leader: Leader) -> None:
    """The term's first run (the one the schedule gives) is over: from now on, only wakes."""
    assert eventually(lambda: leader.metrics.watcher_runs.labels("task", "ok")._value.get() >= 1)


@pytest.fixture
def pg_store(postgres_dsn: str) -> Iterator[tuple[SQLTaskStore, str]]:
    with ExitStack() as stack:
        dsn = stack.enter_context(postgres_database(postgres_dsn))
        store = stack.enter_context(closing(postgres_store(dsn, SystemClock())))
        store.migrate()
        yield store, dsn


def launched_by_a_wake(leader: Leader, name: str) -> None:
    wakes = leader.wakes
    task_id = leader.insert(name)
    assert eventually(lambda: leader.status(task_id) in ("Pending", "Running")), "not launched without the tick"
    assert leader.wakes > wakes
    assert [c[2] for c in leader.gateway.created].count(task_id) == 1


def test_postgres_an_insert_is_launched_at_once_through_listen_notify(pg_store):
    store, _ = pg_store
    with Leader(store) as leader:
        assert store.listen_connect is not None
        listener = PostgresListener(store.listen_connect, leader.wake)
        try:
            listener.resume()
            assert listener.listening.wait(10)
            first_run_done(leader)
            launched_by_a_wake(leader, "via-notify")
        finally:
            listener.close()


def test_postgres_the_trigger_notifies_inserts_resets_and_cancels_only(pg_store):
    store, dsn = pg_store
    with psycopg.connect(dsn, autocommit=True) as listen, psycopg.connect(dsn, autocommit=True) as user:
        listen.execute("LISTEN nightwatch_task")
        user.execute("INSERT INTO task (name, namespace, info, status) VALUES ('a', 'default', '{}', 'Normal')")
        user.execute("INSERT INTO task (name, namespace, info, status) VALUES ('b', 'default', '{}', 'Failed')")
        user.execute("UPDATE task SET status = 'Pending' WHERE name = 'a'")  # the watcher's own launch write
        user.execute("UPDATE task SET status = 'Normal' WHERE name = 'b'")  # the user's reset
        user.execute("UPDATE task SET cancel_requested_at = now() WHERE name = 'a'")  # a cancel request
        user.execute("UPDATE task SET message = 'x' WHERE name = 'a'")
        got = [n.payload for n in listen.notifies(timeout=2.0)]
        assert got == ["", "", ""]  # the insert of a, the reset of b, the cancel of a: nothing else
        user.execute("INSERT INTO task (name, namespace, info, status)"
                     " SELECT 'bulk-' || i, 'default', '{}', 'Normal' FROM generate_series(1, 500) i")
        bulk = [n.payload for n in listen.notifies(timeout=2.0)]
    assert bulk == [""]  # one statement of 500 rows: one notification, not 500


def test_postgres_a_killed_listen_connection_falls_back_with_one_warning_and_recovers(pg_store, caplog):
    store, dsn = pg_store
    caplog.set_level(logging.INFO, logger="nightwatch.adapters.store.notify")
    lost = []
    with Leader(store) as leader:
        assert store.listen_connect is not None
        listener = PostgresListener(store.listen_connect, leader.wake, on_lost=lambda: lost.append(1))
        try:
            listener.resume()
            assert listener.listening.wait(10)
            first_run_done(leader)
            pid = listener.connection.info.backend_pid
            with psycopg.connect(dsn, autocommit=True) as admin:
                assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
            assert eventually(lambda: listener.lost or (listener.listening.is_set()
                                                          and listener.connection is not None
                                                          and listener.connection.info.backend_pid != pid))
            assert eventually(lambda: listener.listening.is_set() and not listener.lost)
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "picked up on the task watcher's schedule" in warnings[0].getMessage()
            assert lost == [1]
            assert any("back; new tasks are picked up at once" in r.getMessage() for r in caplog.records)
            launched_by_a_wake(leader, "after-reconnect")
        finally:
            listener.close()


def test_postgres_a_server_away_means_polling_never_a_stall(pg_store, caplog):
    """LISTEN cannot connect (a wrong port): one warning, retries with backoff; the launch
    still happens on the schedule (here: a wake by hand stands for the tick)."""
    store, _ = pg_store

    def refuse() -> Any:
        raise psycopg.OperationalError("connection refused")

    with Leader(store) as leader:
        listener = PostgresListener(refuse, leader.wake)
        try:
            listener.resume()
            assert eventually(lambda: listener.lost)
            first_run_done(leader)
            task_id = leader.insert("by-the-tick")
            leader.wake()
            assert eventually(lambda: leader.status(task_id) in ("Pending", "Running"))
        finally:
            listener.close()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


@pytest.fixture(params=["sqlite", "mysql"])
def probed_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLTaskStore]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            store = sqlite_store(str(tmp_path / "nw.db"), SystemClock())
        else:
            server: MySQLServer
            server, database = stack.enter_context(mysql_database(request.getfixturevalue("mysql_url")))
            store = mysql_store(server.host, server.port, server.user, server.password, database, SystemClock())
        stack.enter_context(closing(store))
        store.migrate()
        yield store


def test_the_probe_wakes_the_launch_on_a_new_row(probed_store):
    with Leader(probed_store) as leader:
        probe = Probe(probed_store.engine, leader.wake, 0.05)
        try:
            probe.resume()
            assert eventually(lambda: probe.probes >= 2)
            first_run_done(leader)
            launched_by_a_wake(leader, "via-probe")
            probes = probe.probes
            assert eventually(lambda: probe.probes > probes + 3)
            wakes = leader.wakes
            assert eventually(lambda: probe.probes > probes + 6)
            assert leader.wakes == wakes  # nothing new: no wake
        finally:
            probe.close()
