"""DESIGN §5: the fenced status write is one statement that waits for a concurrent epoch
bump and then matches no row -- it never slips through with the old epoch.

Another session bumps the epoch in an open transaction; the old leader's write must
block on it, and once the bump commits, be refused. With a store that drops the epoch
check (the positive control, built on the test side) the same write goes through.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sql_databases import mysql_database, postgres_database
from unfenced import UnfencedStore

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.store import engines
from nightwatch.adapters.store.sql import SQLTaskStore, mysql_store, postgres_store
from nightwatch.domain.errors import BackendUnavailableError, FencedError
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


def write_during_a_bump(setup: Setup, fencing: bool) -> tuple[Future[bool], TaskStore, int]:
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
    return write, store, task.id


def test_a_write_racing_an_epoch_bump_waits_and_is_refused(setup: Setup) -> None:
    write, store, task_id = write_during_a_bump(setup, fencing=True)
    assert isinstance(write.exception(), FencedError), write.exception() or write.result()
    assert store.get(task_id).status == "Normal" and store.events(task_id) == []  # no event for it either


def test_without_the_epoch_check_the_racing_write_goes_through(setup: Setup) -> None:
    write, store, task_id = write_during_a_bump(setup, fencing=False)
    assert write.result() is True
    assert [e.to_status for e in store.events(task_id)] == ["Pending"]


# -- the epoch row's shared lock is held until the event is written and both commit -------------

class SeparateStatements(SQLTaskStore):
    """The protection switched off on the test side: no transaction around the CAS and its event."""

    def _apply(self, update: sa.Update, task_id: int, event: dict[str, Any], params: dict[str, Any]) -> bool:
        with self._db() as conn:
            written = conn.execute(update, params).rowcount == 1
            if written:
                conn.execute(self._event(task_id, event))
        return written


def bump_between_the_write_and_its_event(setup: Setup, protected: bool) -> tuple[bool, TaskStore, int, int]:
    """Pause the leader's write after its compare-and-set, before its event; meanwhile another
    replica begins a term. Returns (did the term begin while the write was paused, ...)."""
    make, _ = setup
    store, successor = make(True), make(True)
    store.migrate()
    assert isinstance(store, SQLTaskStore)
    if not protected:
        store = SeparateStatements(store.engine, SystemClock(), store.where)
    task = store.add(NewTask("t", "default", '{"image":"alpine"}'))
    fence = Fence(LEADER, store.begin_term(LEADER), "old-leader")
    paused, resume = threading.Event(), threading.Event()

    def pause(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "INSERT INTO TASK_EVENT" in statement.upper():  # PostgreSQL's one statement too
            paused.set()
            resume.wait(10)

    sa.event.listen(store.engine, "before_cursor_execute", pause)
    try:
        with ThreadPoolExecutor(2) as pool:
            write = pool.submit(store.transition, task.id, TaskStatus.NORMAL, TaskStatus.PENDING, None, fence)
            assert paused.wait(10)
            term = pool.submit(successor.begin_term, LEADER)
            time.sleep(0.5)
            began_meanwhile = term.done()
            resume.set()
            assert write.result(timeout=10) is True
            new_epoch = term.result(timeout=10)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", pause)
    assert new_epoch == fence.epoch + 1
    return began_meanwhile, store, task.id, fence.epoch


def test_a_new_term_waits_until_the_old_leaders_write_and_its_event_commit(
        setup: Setup, request: pytest.FixtureRequest) -> None:
    if "postgres" in request.node.callspec.id:
        pytest.skip("PostgreSQL writes both in one statement: there is no moment between them")
    began_meanwhile, store, task_id, epoch = bump_between_the_write_and_its_event(setup, protected=True)
    assert not began_meanwhile, "begin_term went through while the fenced write was not committed"
    assert [(e.to_status, e.epoch, e.replica) for e in store.events(task_id)] == [("Pending", epoch, "old-leader")]


def test_without_the_transaction_a_new_term_begins_between_the_write_and_its_event(setup: Setup) -> None:
    """Positive control: the test above fails when the CAS commits on its own (on PostgreSQL too:
    what its single statement prevents)."""
    began_meanwhile, *_ = bump_between_the_write_and_its_event(setup, protected=False)
    assert began_meanwhile


def paused_inside_its_write(setup: Setup) -> None:
    make, _ = setup
    store, successor = make(True), make(True)
    store.migrate()
    assert isinstance(store, SQLTaskStore)
    task = store.add(NewTask("t", "default", '{"image":"alpine"}'))
    fence = Fence(LEADER, store.begin_term(LEADER), "old-leader")
    paused, resume = threading.Event(), threading.Event()

    def pause(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "INSERT INTO TASK_EVENT" in statement.upper():
            paused.set()
            resume.wait(30)  # as a SIGSTOPped process: until the successor has its term

    sa.event.listen(store.engine, "before_cursor_execute", pause)
    try:
        with ThreadPoolExecutor(1) as pool:
            write = pool.submit(store.transition, task.id, TaskStatus.NORMAL, TaskStatus.PENDING, None, fence)
            assert paused.wait(10)
            try:
                assert successor.begin_term(LEADER) == fence.epoch + 1  # within its lock wait, while paused
            finally:
                resume.set()
            assert write.exception(timeout=30) is not None  # its session was ended under it
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", pause)
    assert successor.get(task.id).status == "Normal" and successor.events(task.id) == []


def test_a_leader_paused_inside_its_write_does_not_keep_a_successor_from_its_term(
        setup: Setup, request: pytest.FixtureRequest) -> None:
    """MariaDB: the server rolls back a transaction left idle (``idle_transaction_timeout``), so
    the successor's ``begin_term`` gets the leader row; the paused write then leaves nothing."""
    if "postgres" in request.node.callspec.id:
        pytest.skip("PostgreSQL writes both in one statement: no client holds a transaction open")
    paused_inside_its_write(setup)


@pytest.mark.mysql
def test_without_the_idle_transaction_timeout_the_successor_cannot_begin(
        setup: Setup, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Positive control: with the session setting switched off, begin_term times out on the lock."""
    if "postgres" in request.node.callspec.id:
        pytest.skip("MariaDB only")
    monkeypatch.setattr(engines, "_idle_transaction_timeout", lambda conn, seconds: None)
    with pytest.raises(BackendUnavailableError, match="Lock wait timeout"):
        paused_inside_its_write(setup)
