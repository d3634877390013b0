"""The SQL stores when the database is wrong, away, or drops their connections.

Real servers, never stopped: connections are killed from another session instead.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sql_databases import MySQLServer, mysql_database, postgres_database

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.store.sql import mysql_store, postgres_store, sqlite_store
from nightwatch.domain.errors import BackendUnavailableError, ConfigError, TaskValueError
from nightwatch.domain.model import NewTask, TaskStatus
from nightwatch.domain.ports import TaskStore

pytestmark = pytest.mark.timeout(60)
INFO = '{"image":"alpine"}'


def closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill_pool(store: TaskStore, task_id: int, threads: int = 4) -> None:
    """Make the store open several connections and keep them idle in its pool."""
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait(timeout=10)
        for _ in range(20):
            store.get(task_id)

    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(work) for _ in range(threads)]:
            f.result()


def recovers(call: Callable[[], object]) -> None:
    """The first call after the kill may fail as unavailable; the one after it must work."""
    with contextlib.suppress(BackendUnavailableError):
        call()
    call()
    call()


# -- wrong configuration: one clear error naming the key -------------------------------


@pytest.mark.mysql
def test_mysql_wrong_credentials_name_the_keys(mysql_url: str, unique_name: str) -> None:
    server = MySQLServer.from_url(mysql_url)
    store = mysql_store(server.host, server.port, "nwt_nobody", "wrong", unique_name, SystemClock())
    expected = r"^store\.mysql: .*nwt_nobody.*\(check store\.mysql\.user and store\.mysql\.password\)$"
    with pytest.raises(ConfigError, match=expected):
        store.migrate()
    with pytest.raises(ConfigError, match=expected):
        store.count_by_status()
    store.close()


@pytest.mark.postgres
def test_postgres_unknown_role_or_database_names_the_dsn(postgres_dsn: str, unique_name: str) -> None:
    for dsn in (make_conninfo(postgres_dsn, user=unique_name), make_conninfo(postgres_dsn, dbname=unique_name)):
        store = postgres_store(dsn, SystemClock())
        with pytest.raises(ConfigError, match=rf"^store\.postgres: .*{unique_name}.*check store\.postgres\.dsn"):
            store.migrate()
        store.close()


@pytest.mark.postgres
def test_postgres_connection_limit_is_transient_and_missing_connect_names_the_grant(
    postgres_dsn: str, unique_name: str
) -> None:
    """libpq's own FATAL lines: a full role is retried, a missing CONNECT stops with the GRANT."""
    with postgres_database(postgres_dsn) as dsn:
        dbname = conninfo_to_dict(dsn)["dbname"]
        full, denied = f"{unique_name}_full", f"{unique_name}_noconnect"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {full} LOGIN CONNECTION LIMIT 0")
            conn.execute(f"CREATE ROLE {denied} LOGIN")
            conn.execute(f"REVOKE CONNECT ON DATABASE {dbname} FROM PUBLIC")
            conn.execute(f"GRANT CONNECT ON DATABASE {dbname} TO {full}")
        try:
            store = postgres_store(make_conninfo(dsn, user=full), SystemClock())
            with pytest.raises(BackendUnavailableError, match="too many connections for role"):
                store.count_by_status()
            store.close()
            store = postgres_store(make_conninfo(dsn, user=denied), SystemClock())
            grant = rf"permission denied for database.*\(GRANT CONNECT ON DATABASE {dbname} TO {denied}\)$"
            with pytest.raises(ConfigError, match=grant):
                store.count_by_status()
            store.close()
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for role in (full, denied):
                    conn.execute(f"REVOKE ALL ON DATABASE {dbname} FROM {role}")
                    conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("reason", [
    'FATAL:  too many connections for role "nwt"',
    "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
    "invalid response to SSL negotiation: H",
    "server closed the connection unexpectedly",
])
def test_postgres_connection_errors_without_sqlstate_are_transient_unless_known(reason: str) -> None:
    from nightwatch.adapters.store._dialects import _postgres
    assert isinstance(_postgres(psycopg.OperationalError(reason), "store.postgres (h:1)", ""),
                      BackendUnavailableError)


@pytest.mark.parametrize("dsn", ["not a dsn", "postgresql://127.0.0.1:notaport/db", "host=127.0.0.1 sslmode=bogus"])
def test_postgres_malformed_dsn_names_the_key(dsn: str) -> None:
    with pytest.raises(ConfigError, match=r"^store\.postgres: .*check store\.postgres\.dsn"):
        postgres_store(dsn, SystemClock()).count_by_status()


def test_sqlite_path_that_cannot_be_a_database_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    for path in (tmp_path, tmp_path / "a-file" / "nightwatch.db"):
        with pytest.raises(ConfigError, match=r"^store\.sqlite: .*check store\.sqlite\.path"):
            sqlite_store(str(path), SystemClock()).migrate()


# -- unreachable: unavailable, quickly, and nothing connects before the first call -----


def test_mysql_unreachable_is_unavailable_within_the_connect_timeout() -> None:
    port = closed_port()
    store = mysql_store("127.0.0.1", port, "root", "", "nwt_none", SystemClock(), connect_timeout=2)  # no I/O yet
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=rf"^store\.mysql \(127\.0\.0\.1:{port}\): "):
        store.count_by_status()
    assert time.monotonic() - started < 2 + 1
    store.close()


def test_postgres_unreachable_is_unavailable_within_the_connect_timeout() -> None:
    port = closed_port()
    store = postgres_store(f"postgresql://nobody@127.0.0.1:{port}/x", SystemClock(), connect_timeout=2)  # no I/O yet
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=rf"^store\.postgres \(127\.0\.0\.1:{port}\): "):
        store.count_by_status()
    assert time.monotonic() - started < 2 + 1
    store.close()


def test_sqlite_locked_by_another_writer_is_unavailable_after_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "nightwatch.db"
    store = sqlite_store(str(path), SystemClock(), timeout=0.5)
    store.migrate()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(BackendUnavailableError, match=r"^store\.sqlite: .*locked"):
            store.add(NewTask("t", "default", INFO))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.add(NewTask("t", "default", INFO)).name == "t"
    store.close()


# -- connections killed under the store: it reconnects by itself -----------------------


@pytest.mark.mysql
def test_mysql_store_reconnects_after_its_connections_are_killed(mysql_url: str) -> None:
    with mysql_database(mysql_url) as (server, database):
        store = mysql_store(server.host, server.port, server.user, server.password, database, SystemClock())
        store.migrate()
        task = store.add(NewTask("t", "default", INFO))
        fill_pool(store, task.id)

        with server.connect() as admin, admin.cursor() as cur:
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
                (database,),
            )
            ids = [row[0] for row in cur.fetchall()]
            for connection_id in ids:
                cur.execute(f"KILL CONNECTION {int(connection_id)}")
        assert len(ids) >= 2, "the pool should have held several connections"

        recovers(lambda: store.get(task.id))
        assert store.get(task.id) == task
        store.close()


@pytest.mark.postgres
def test_postgres_store_reconnects_after_its_connections_are_terminated(postgres_dsn: str) -> None:
    with postgres_database(postgres_dsn) as dsn:
        store = postgres_store(dsn, SystemClock())
        store.migrate()
        task = store.add(NewTask("t", "default", INFO))
        fill_pool(store, task.id)

        with psycopg.connect(postgres_dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (conninfo_to_dict(dsn)["dbname"],),
            ).fetchall()
        assert len(killed) >= 2, "the pool should have held several connections"

        recovers(lambda: store.get(task.id))
        assert store.get(task.id) == task
        store.close()


# -- a call that cannot finish ends at its deadline --------------------------------------


@pytest.mark.mysql
def test_mysql_call_blocked_by_a_row_lock_ends_within_its_timeout(mysql_url: str) -> None:
    with mysql_database(mysql_url) as (server, database):
        store = mysql_store(server.host, server.port, server.user, server.password, database, SystemClock(),
                            read_timeout=2)
        store.migrate()
        task = store.add(NewTask("t", "default", INFO))
        with server.connect(database) as other, other.cursor() as cur:
            other.begin()
            cur.execute("SELECT id FROM task WHERE id = %s FOR UPDATE", (task.id,))  # held, never released
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError, match=r"^store\.mysql \("):
                store.transition(task.id, TaskStatus.NORMAL, TaskStatus.PENDING)
            assert time.monotonic() - started < 2 + 1
            other.rollback()
        assert store.transition(task.id, TaskStatus.NORMAL, TaskStatus.PENDING) is True
        store.close()


@pytest.mark.postgres
def test_postgres_call_blocked_by_a_row_lock_ends_within_its_statement_timeout(postgres_dsn: str) -> None:
    with postgres_database(postgres_dsn) as dsn:
        store = postgres_store(dsn, SystemClock(), statement_timeout=0.5)
        store.migrate()
        task = store.add(NewTask("t", "default", INFO))
        with psycopg.connect(dsn) as other:
            other.execute("SELECT id FROM task WHERE id = %s FOR UPDATE", (task.id,))  # held, never released
            started = time.monotonic()
            with pytest.raises(BackendUnavailableError, match=r"^store\.postgres \(.*statement timeout"):
                store.transition(task.id, TaskStatus.NORMAL, TaskStatus.PENDING)
            assert time.monotonic() - started < 0.5 + 1
            other.rollback()
        assert store.transition(task.id, TaskStatus.NORMAL, TaskStatus.PENDING) is True
        store.close()


# -- every driver error is a port error ---------------------------------------------------


@pytest.mark.mysql
def test_mysql_missing_privilege_names_the_grant(mysql_url: str, unique_name: str) -> None:
    user = unique_name[:20]
    with mysql_database(mysql_url) as (server, database):
        admin = mysql_store(server.host, server.port, server.user, server.password, database, SystemClock())
        admin.migrate()
        admin.close()
        server.execute(database, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'",
                       f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'")
        try:
            store = mysql_store(server.host, server.port, user, "pw", database, SystemClock())
            assert store.page(None, 0, 10) == []
            with pytest.raises(ConfigError, match=rf"INSERT command denied .*\(GRANT INSERT ON {database}\.task TO"):
                store.add(NewTask("t", "default", INFO))
            store.close()
        finally:
            server.execute(database, f"DROP USER '{user}'@'%'")


@pytest.mark.mysql
def test_mysql_a_character_the_column_cannot_hold_names_the_column(mysql_url: str) -> None:
    """MariaDB names the column `db`.`task`.`name`: the message names ``name``, not the database."""
    with mysql_database(mysql_url) as (server, database):
        store = mysql_store(server.host, server.port, server.user, server.password, database, SystemClock())
        store.migrate()
        server.execute(database, "ALTER TABLE task MODIFY name VARCHAR(45) CHARACTER SET latin1 NOT NULL")
        with pytest.raises(TaskValueError, match=r"^task\.name: "):
            store.add(NewTask("emoji-\U0001F600", "default", INFO))
        store.close()


@pytest.mark.postgres
def test_postgres_missing_privilege_names_the_grant(postgres_dsn: str, unique_name: str) -> None:
    with postgres_database(postgres_dsn) as dsn:
        admin = postgres_store(dsn, SystemClock())
        admin.migrate()
        admin.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {unique_name} LOGIN")
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {unique_name}")
        try:
            store = postgres_store(make_conninfo(dsn, user=unique_name), SystemClock())
            assert store.page(None, 0, 10) == []
            with pytest.raises(ConfigError, match=r"permission denied for table task \(GRANT INSERT ON TABLE task TO"):
                store.add(NewTask("t", "default", INFO))
            store.close()
        finally:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"DROP OWNED BY {unique_name}")
                conn.execute(f"DROP ROLE {unique_name}")


@pytest.mark.postgres
def test_a_read_only_postgres_is_unavailable_not_a_crash(postgres_dsn: str) -> None:
    """A standby after a failover, or default_transaction_read_only: transient, retried."""
    with postgres_database(postgres_dsn) as dsn:
        store = postgres_store(dsn, SystemClock())
        store.migrate()
        task = store.add(NewTask("t", "default", INFO))
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {conninfo_to_dict(dsn)['dbname']} SET default_transaction_read_only = on")
        store = postgres_store(dsn, SystemClock())
        with pytest.raises(BackendUnavailableError, match=r"^store\.postgres \(.*read-only transaction"):
            store.transition(task.id, TaskStatus.NORMAL, TaskStatus.PENDING)
        with pytest.raises(BackendUnavailableError, match="read-only"):
            store.begin_term("nightwatch")
        assert store.get(task.id).status == "Normal"  # reading goes on
        store.close()


def test_an_unforeseen_error_is_transient_and_logged_once_with_its_class(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    class OddDriverError(Exception):
        pass

    store = sqlite_store(str(tmp_path / "nightwatch.db"), SystemClock())
    with caplog.at_level("WARNING", logger="nightwatch.adapters.store.sql"):
        errors = [store.translate(OddDriverError("the driver had a bad day")) for _ in range(3)]
    assert all(isinstance(e, BackendUnavailableError) for e in errors)
    assert "OddDriverError: the driver had a bad day" in str(errors[0])
    logged = [r for r in caplog.records if "OddDriverError" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    store.close()
