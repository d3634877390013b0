"""TaskStore adapters for the contract suite: each test gets its own database.

``backend.make()`` opens one more store on the test's database -- another replica, as
far as the database can tell. ``backend.load_seed()`` creates the table exactly as the
user's own system does (the seed's DDL and its two sample rows), before nightwatch
has migrated anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sql_databases import (
    SEED_DIR,
    mysql_database,
    postgres_database,
    postgres_execute,
    sql_statements,
)

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.adapters.store.sql import mysql_store, postgres_store, sqlite_store
from nightwatch.domain.model import NewTask, Task
from nightwatch.domain.ports import TaskStore

SEED_ROWS = (
    NewTask("demo-task-1", "default", '{"image":"alpine","command":["sleep"],"args":["60"]}', user_id=1),
    NewTask("demo-task-2", "demo", '{"image":"busybox","command":["sleep"],"args":["3600"]}', user_id=2),
)


@dataclass
class StoreBackend:
    id: str
    make: Callable[[], TaskStore]  # a new store ("replica") on this test's database
    load_seed: Callable[[], None]
    # Write a row by hand with the id the database would hand out next, leaving its id counter
    # behind (as rows inserted with explicit ids do on PostgreSQL). Its id, or None where the
    # database moves its counter past explicit ids anyway (MySQL's AUTO_INCREMENT).
    insert_behind_the_sequence: Callable[[str], int | None]


def _seed(name: str) -> list[str]:
    return sql_statements((SEED_DIR / f"task-table.{name}.sql").read_text())


def _memory() -> StoreBackend:
    shared = InMemoryTaskStore(SystemClock())  # one process: every "replica" is the same store

    def make() -> TaskStore:
        return shared

    def load_seed() -> None:
        for row in SEED_ROWS:
            shared.add(row)

    def insert_behind(name: str) -> int:
        next_id = max(shared.tasks, default=0) + 1
        shared.tasks[next_id] = Task(next_id, name, "default", "{}", "Normal")
        return next_id

    return StoreBackend("memory", make, load_seed, insert_behind)


def _sqlite(stack: ExitStack, tmp_path: Path) -> StoreBackend:
    path = tmp_path / "not-yet" / "nightwatch.db"  # the store creates the directory

    def make() -> TaskStore:
        return stack.enter_context(closing(sqlite_store(str(path), SystemClock())))

    def load_seed() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as conn:
            for statement in _seed("sqlite"):
                conn.execute(statement)
        conn.close()

    # AUTOINCREMENT never hands out an id below the largest ever used: an id cannot clash
    return StoreBackend("sqlite", make, load_seed, lambda name: None)


def _mysql(stack: ExitStack, url: str) -> StoreBackend:
    server, database = stack.enter_context(mysql_database(url))

    def make() -> TaskStore:
        store = mysql_store(
            server.host, server.port, server.user, server.password, database, SystemClock(),
            connect_timeout=5, read_timeout=10, write_timeout=10,
        )
        return stack.enter_context(closing(store))

    return StoreBackend("mysql", make, lambda: server.execute(database, *_seed("mysql")), lambda name: None)


def _postgres(stack: ExitStack, admin_dsn: str) -> StoreBackend:
    dsn = stack.enter_context(postgres_database(admin_dsn))

    def make() -> TaskStore:
        return stack.enter_context(closing(postgres_store(dsn, SystemClock())))

    def insert_behind(name: str) -> int:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            seq = "pg_get_serial_sequence('task', 'id')"
            (next_id,) = conn.execute(f"SELECT nextval({seq})").fetchone() or (0,)
            conn.execute(f"SELECT setval({seq}, %s, false)", (next_id,))  # handed out again next
            conn.execute("INSERT INTO task (id, name, namespace, info, status)"
                         " VALUES (%s, %s, 'default', '{}', 'Normal')", (next_id, name))
        return int(next_id)

    return StoreBackend("postgres", make, lambda: postgres_execute(dsn, *_seed("postgres")), insert_behind)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    with ExitStack() as stack:
        if request.param == "memory":
            yield _memory()
        elif request.param == "sqlite":
            yield _sqlite(stack, tmp_path)
        elif request.param == "mysql":
            yield _mysql(stack, request.getfixturevalue("mysql_url"))
        else:
            yield _postgres(stack, request.getfixturevalue("postgres_dsn"))


@pytest.fixture
def store(backend: StoreBackend) -> TaskStore:
    """A migrated store on a database of its own."""
    s = backend.make()
    s.migrate()
    return s

