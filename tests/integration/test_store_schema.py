"""What ``migrate`` leaves in each SQL database, seen with the database's own catalogue."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest
from sql_databases import MySQLServer, mysql_database, postgres_database, unique_database

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.store._sql import INDEX_NAME, SCHEMA_VERSION
from nightwatch.adapters.store.mysql import MySQLTaskStore
from nightwatch.adapters.store.postgres import PostgresTaskStore
from nightwatch.adapters.store.sqlite import SQLiteTaskStore

pytestmark = pytest.mark.timeout(60)


def test_sqlite_schema(tmp_path: Path) -> None:
    path = tmp_path / "nightwatch.db"
    store = SQLiteTaskStore(str(path), SystemClock())
    store.migrate()
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = {row[1]: row for row in db.execute("PRAGMA table_info(task)")}
        assert columns["message"][3] == 0  # nullable
        assert [row[2] for row in db.execute(f"PRAGMA index_info({INDEX_NAME})")] == ["status"]
        assert db.execute("SELECT version FROM nightwatch_schema").fetchall() == [(SCHEMA_VERSION,)]
        assert db.execute("SELECT COUNT(*) FROM nightwatch_leader").fetchone() == (0,)
    db.close()


@pytest.mark.mysql
def test_mysql_schema(mysql_url: str) -> None:
    with mysql_database(mysql_url) as (server, database):
        store = MySQLTaskStore(server.host, server.port, server.user, server.password, database)
        store.migrate()
        store.close()
        with server.connect(database) as db, db.cursor() as cur:
            cur.execute("SHOW COLUMNS FROM task WHERE Field = 'message'")
            assert cur.fetchone()[2] == "YES"  # nullable
            cur.execute("SHOW INDEX FROM task WHERE Column_name = 'status'")
            assert [row[2] for row in cur.fetchall()] == [INDEX_NAME]
            cur.execute("SELECT version FROM nightwatch_schema")
            assert cur.fetchall() == ((SCHEMA_VERSION,),)
            cur.execute("SELECT COUNT(*) FROM nightwatch_leader")
            assert cur.fetchone() == (0,)


@pytest.mark.mysql
def test_mysql_migrate_creates_the_database_even_from_several_replicas_at_once(mysql_url: str) -> None:
    server, database = MySQLServer.from_url(mysql_url), unique_database()
    replicas = [
        MySQLTaskStore(server.host, server.port, server.user, server.password, database) for _ in range(4)
    ]
    barrier, errors = threading.Barrier(4), []

    def migrate(store: MySQLTaskStore) -> None:
        barrier.wait(timeout=10)
        try:
            store.migrate()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=migrate, args=(r,)) for r in replicas]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == []
        assert replicas[0].count_by_status() == {}
    finally:
        for r in replicas:
            r.close()
        server.execute("mysql", f"DROP DATABASE IF EXISTS `{database}`")


@pytest.mark.postgres
def test_postgres_schema(postgres_dsn: str) -> None:
    with postgres_database(postgres_dsn) as dsn:
        store = PostgresTaskStore(dsn)
        store.migrate()
        store.close()
        with psycopg.connect(dsn) as db:
            nullable = db.execute(
                "SELECT is_nullable FROM information_schema.columns"
                " WHERE table_name = 'task' AND column_name = 'message'"
            ).fetchone()
            assert nullable == ("YES",)
            index = db.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (INDEX_NAME,)).fetchone()
            assert index is not None and index[0].endswith("(status)")
            assert db.execute("SELECT version FROM nightwatch_schema").fetchall() == [(SCHEMA_VERSION,)]
            assert db.execute("SELECT COUNT(*) FROM nightwatch_leader").fetchone() == (0,)
