"""DESIGN §5: the fenced status write is one statement that waits for a concurrent epoch
bump and then matches no row -- it never slips through with the old epoch.

Another session bumps the epoch in an open transaction; the old leader's write must
block on it, and once the bump commits, be refused. With a store that drops the epoch
check (the positive control, built on the test side) the same write goes through.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager

import psycopg
import pytest
from sql_databases import mysql_database, postgres_database
from unfenced import UnfencedStore

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.store.sql import mysql_store, postgres_store
from nightwatch.domain.errors import FencedError
from nightwatch.domain.model import Fence, NewTask, TaskStatus
from nightwatch.domain.ports import TaskStore

pytestmark = pytest.mark.timeout(60)
LEADER = "nightwatch"
BUMP = "UPDATE nightwatch_leader SET epoch = epoch + 1 WHERE name = %s"

# (make a store with fencing on/off, open a transaction that bumps the epoch: commit on exit)
Setup = tuple[Callable[[bool], TaskStore], Callable[[], AbstractContextManager[None]]]


@pytest.fixture(params=[pytest.param("mysql", marks=pytest.mark.mysql),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def setup(request: pytest.FixtureRequest) -> Iterator[Setup]:
    stores: list[TaskStore] = []
    if request.param == "mysql":
        with mysql_database(request.getfixturevalue("mysql_url")) as (server, database):

            def make(fencing: bool) -> TaskStore:
                stores.append(mysql_store(server.host, server.port, server.user, server.password, database,
                                          SystemClock()))
                return stores[-1] if fencing else UnfencedStore(stores[-1])

            @contextmanager
            def bump() -> Iterator[None]:
                with server.connect(database) as conn, conn.cursor() as cur:
                    conn.begin()
                    cur.execute(BUMP, (LEADER,))
                    yield
                    conn.commit()

            yield make, bump
            for s in stores:
                s.close()
    else:
        with postgres_database(request.getfixturevalue("postgres_dsn")) as dsn:

            def make(fencing: bool) -> TaskStore:
                stores.append(postgres_store(dsn, SystemClock()))
                return stores[-1] if fencing else UnfencedStore(stores[-1])

            @contextmanager
            def bump() -> Iterator[None]:
                with psycopg.connect(dsn) as conn:  # commits when the block ends
                    conn.execute(BUMP, (LEADER,))
                    yield

            yield make, bump
            for s in stores:
                s.close()


def write_during_a_bump(setup: Setup, fencing: bool) -> Future[bool]:
    make, bump = setup
    store = make(fencing)
    store.migrate()
    task = store.add(NewTask("t", "default", '{"image":"alpine"}'))
    fence = Fence(LEADER, store.begin_term(LEADER))
    with ThreadPoolExecutor(1) as pool:
        with bump():
            write = pool.submit(store.transition, task.id, TaskStatus.NORMAL, TaskStatus.PENDING, None, fence)
            time.sleep(0.5)
            if fencing:
                assert not write.done(), "the fenced write should wait for the epoch bump"
        write.exception(timeout=10)
    return write


def test_a_write_racing_an_epoch_bump_waits_and_is_refused(setup: Setup) -> None:
    write = write_during_a_bump(setup, fencing=True)
    assert isinstance(write.exception(), FencedError), write.exception() or write.result()


def test_without_the_epoch_check_the_racing_write_goes_through(setup: Setup) -> None:
    assert write_during_a_bump(setup, fencing=False).result() is True
