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
from nightwatch.adapters.store.mysql import MySQLTaskStore
from nightwatch.adapters.store.postgres import PostgresTaskStore
from nightwatch.adapters.store.sqlite import SQLiteTaskStore
from nightwatch.domain.model import NewTask
from nightwatch.domain.ports import TaskStore

SEED_ROWS = (
    NewTask("demo-task-1", "default", '{"image":"alpine","command":["sleep"],"args":["60"]}', user_id=1),
    NewTask("demo-task-2", "demo", '{"image":"busybox","command":["sleep"],"args":["3600"]}', user_id=2),
)


@dataclass
class StoreBackend:
    id: str
    make: Callable[..., TaskStore]  # make(fencing=True): a new store ("replica") on this test's database
    load_seed: Callable[[], None]


def _seed(name: str) -> list[str]:
    return sql_statements((SEED_DIR / f"task-table.{name}.sql").read_text())


def _memory() -> StoreBackend:
    shared = InMemoryTaskStore(SystemClock())  # one process: every "replica" is the same store

    def make(fencing: bool = True) -> TaskStore:
        if not fencing:  # the switch is per store, and here every replica is this one
            shared.fencing = False
        return shared

    def load_seed() -> None:
        for row in SEED_ROWS:
            shared.add(row)

    return StoreBackend("memory", make, load_seed)


def _sqlite(stack: ExitStack, tmp_path: Path) -> StoreBackend:
    path = tmp_path / "not-yet" / "nightwatch.db"  # the store creates the directory

    def make(fencing: bool = True) -> TaskStore:
        return stack.enter_context(closing(SQLiteTaskStore(str(path), SystemClock(), fencing=fencing)))

    def load_seed() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as conn:
            for statement in _seed("sqlite"):
                conn.execute(statement)
        conn.close()

    return StoreBackend("sqlite", make, load_seed)


def _mysql(stack: ExitStack, url: str) -> StoreBackend:
    server, database = stack.enter_context(mysql_database(url))

    def make(fencing: bool = True) -> TaskStore:
        store = MySQLTaskStore(
            server.host, server.port, server.user, server.password, database,
            connect_timeout=5, read_timeout=10, write_timeout=10, fencing=fencing,
        )
        return stack.enter_context(closing(store))

    return StoreBackend("mysql", make, lambda: server.execute(database, *_seed("mysql")))


def _postgres(stack: ExitStack, admin_dsn: str) -> StoreBackend:
    dsn = stack.enter_context(postgres_database(admin_dsn))

    def make(fencing: bool = True) -> TaskStore:
        return stack.enter_context(closing(PostgresTaskStore(dsn, fencing=fencing)))

    return StoreBackend("postgres", make, lambda: postgres_execute(dsn, *_seed("postgres")))


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
