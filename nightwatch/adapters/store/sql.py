"""SQLTaskStore: the ``task`` table on SQLite, MariaDB/MySQL or PostgreSQL, on SQLAlchemy Core.

One store for every SQL backend; what differs per database lives in ``_dialects``. The
engine's pool checks a connection before lending it (pre-ping), so after a server restart
the next call reconnects instead of failing on a dead socket. Every error the driver or
SQLAlchemy raises is turned into a port error at one boundary (``_db``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from nightwatch.adapters.store._dialects import DIALECTS, Dialect
from nightwatch.adapters.store._rows import EVENT_COLUMNS, TASK_COLUMNS, naive, text, to_event, to_task

# The engines, one per backend's config keys, build this store; importable from here as before.
from nightwatch.adapters.store.engines import mysql_store, postgres_store, sqlite_store
from nightwatch.adapters.store.schema import nightwatch_leader, task, task_event
from nightwatch.domain.errors import (
    BackendUnavailableError,
    DuplicateTaskError,
    FencedError,
    NightwatchError,
    TaskNotFoundError,
)
from nightwatch.domain.model import (
    CancelRequest,
    Fence,
    NewTask,
    Task,
    TaskEvent,
    TaskQuery,
    TaskStatus,
    check_bigint,
    check_new_task,
    check_requeue,
    check_transition,
    fit_message,
)
from nightwatch.domain.ports import Clock, TaskStore

logger = logging.getLogger(__name__)

_COLUMNS = TASK_COLUMNS
_TERMINAL = tuple(str(s) for s in TaskStatus if s.terminal)
_logged_classes: set[str] = set()  # unforeseen error classes already logged with a traceback
_logged_mutex = threading.Lock()


class SQLTaskStore(TaskStore):
    """``where`` names the backend in messages, e.g. ``store.mysql (db:3306)``."""

    def __init__(self, engine: Engine, clock: Clock, where: str,
                 create_database: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self._create_database = create_database  # run before migrating (MariaDB/MySQL)
        self.where = where
        self._clock = clock
        self._dialect: Dialect = DIALECTS[engine.dialect.name]
        self.listen_connect: Callable[[], Any] | None = None  # PostgreSQL: a connection for LISTEN

    # -- the boundary ----------------------------------------------------------------------

    @contextmanager
    def _boundary(self) -> Iterator[None]:
        try:
            yield
        except NightwatchError:
            raise
        except Exception as e:
            raise self.translate(e) from e

    @contextmanager
    def _db(self) -> Iterator[Connection]:
        with self._boundary(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _atomic(self) -> Iterator[Connection]:
        """One transaction (the engine autocommits): a status write and its event commit together,
        and the fence's shared lock on the leader row is held until then."""
        with self._db() as conn:
            conn.execution_options(isolation_level=self._dialect.isolation)  # reset when back in the pool
            with conn.begin():
                yield conn

    def translate(self, e: BaseException) -> NightwatchError:
        """The port error for any exception of the driver, SQLAlchemy or the OS."""
        if isinstance(e, NightwatchError):
            return e
        if isinstance(e, sa.exc.TimeoutError):  # the pool had no connection to lend in time
            return BackendUnavailableError(f"{self.where}: {e}".splitlines()[0])
        cause: BaseException = getattr(e, "orig", None) or e
        known = self._dialect.classify(cause, self.where, str(getattr(e, "statement", None) or ""))
        if known is not None:
            return known
        if isinstance(e, sa.exc.DBAPIError) and e.connection_invalidated or isinstance(cause, OSError):
            return BackendUnavailableError(f"{self.where}: {cause}")
        name = f"{type(cause).__module__}.{type(cause).__qualname__}"
        with _logged_mutex:
            first = name not in _logged_classes
            _logged_classes.add(name)
        if first:
            logger.warning("%s: unforeseen %s, treated as transient", self.where, name, exc_info=cause)
        return BackendUnavailableError(f"{self.where}: {name}: {cause}".splitlines()[0])

    def _now(self) -> datetime:
        """Naive UTC from the injected clock: the columns are timezone-less, sessions in UTC."""
        now = naive(self._clock.now())
        assert now is not None
        return now

    # -- schema ----------------------------------------------------------------------------

    def migrate(self, stop: threading.Event | None = None) -> None:
        from nightwatch.adapters.store import migrations  # Alembic is needed by this command only

        with self._boundary():
            if self._create_database is not None:
                self._create_database()
            migrations.upgrade(self.engine, stop=stop)

    def schema_status(self) -> tuple[str | None, str]:
        """(the database's revision, the revision this nightwatch needs)."""
        from nightwatch.adapters.store import migrations

        with self._boundary():
            return migrations.current(self.engine), migrations.head()

    # -- TaskStore -------------------------------------------------------------------------

    def add(self, new: NewTask) -> Task:
        check_new_task(new)
        now = self._now()
        values = {"name": new.name, "namespace": new.namespace, "info": new.info, "status": str(new.status),
                  "user_id": new.user_id, "created_at": now, "updated_at": now}
        try:
            with self._db() as conn:
                inserted = conn.execute(sa.insert(task).values(values))
                new_id = inserted.inserted_primary_key[0]  # type: ignore[index]
                row = conn.execute(sa.select(*_COLUMNS).where(task.c.id == new_id)).one()
                conn.commit()
        except DuplicateTaskError as e:
            raise DuplicateTaskError(f"a task named {new.name!r} already exists in {new.namespace!r}") from e
        return to_task(row)

    def get(self, task_id: int) -> Task:
        check_bigint("id", task_id)
        with self._db() as conn:
            row = conn.execute(sa.select(*_COLUMNS).where(task.c.id == task_id)).one_or_none()
        if row is None:
            raise TaskNotFoundError(task_id)
        return to_task(row)

    def page(self, statuses: Sequence[str] | None, after_id: int, limit: int) -> list[Task]:
        """One index seek per status (``status = ? AND id > ? ORDER BY id``), merged by id: an
        ``IN`` list over several statuses would sort every matching row for each page."""
        check_bigint("id", after_id)
        query = sa.select(*_COLUMNS).where(task.c.id > after_id).order_by(task.c.id).limit(limit)
        with self._db() as conn:
            if statuses is None:
                rows = list(conn.execute(query))
            else:
                rows = [r for s in dict.fromkeys(map(str, statuses))
                        for r in conn.execute(query.where(self._dialect.exact(task.c.status, s)))]
        return sorted((to_task(r) for r in rows), key=lambda t: t.id)[:limit]

    def count_by_status(self) -> dict[str, int]:
        key = self._dialect.group_key(task.c.status).label("status")
        with self._db() as conn:
            rows = conn.execute(sa.select(key, sa.func.count()).group_by(key)).all()
        return {text(status): int(n) for status, n in rows}

    def begin_term(self, name: str) -> int:
        with self._db() as conn:
            epoch = self._dialect.begin_term(conn, name)
            conn.commit()
        return epoch

    def current_epoch(self, name: str) -> int:
        with self._db() as conn:
            return self._epoch(conn, name)

    @staticmethod
    def _epoch(conn: Connection, name: str) -> int:
        epoch = conn.execute(
            sa.select(nightwatch_leader.c.epoch).where(nightwatch_leader.c.name == name)
        ).scalar_one_or_none()
        return int(epoch or 0)

    def transition(
        self,
        task_id: int,
        old: TaskStatus,
        new: TaskStatus,
        message: str | None = None,
        fence: Fence | None = None,
        *,
        attempt: int | None = None,
        replica: str = "",
    ) -> bool:
        check_transition(old, new)
        now = self._now()
        values: dict[str, Any] = {"status": str(new), "message": fit_message(message), "updated_at": now}
        if new.terminal:
            values["finished_at"] = now
        return self._cas(task_id, old, new, values, fence, attempt, replica, now)

    def requeue(
        self,
        task_id: int,
        old: TaskStatus,
        attempt: int,
        message: str | None = None,
        *,
        retry_at: datetime | None = None,
        force: bool = False,
        fence: Fence | None = None,
        replica: str = "",
        unless_cancelled: bool = False,
    ) -> bool:
        check_requeue(old, force=force)
        now = self._now()
        values = {"status": str(TaskStatus.NORMAL), "attempt": task.c.attempt + 1, "message": fit_message(message),
                  "retry_at": naive(retry_at), "finished_at": None, "cancel_requested_at": None,
                  "cancel_reason": None, "updated_at": now}
        extra = [task.c.cancel_requested_at.is_(None)] if unless_cancelled else []
        return self._cas(task_id, old, TaskStatus.NORMAL, values, fence, attempt, replica, now, extra)

    def _cas(self, task_id: int, old: TaskStatus, new: TaskStatus, values: dict[str, Any], fence: Fence | None,
             attempt: int | None, replica: str, now: datetime,
             extra: Sequence[sa.ColumnElement[bool]] = ()) -> bool:
        """The compare-and-set (and ``extra`` conditions) and its event, atomically; FencedError
        or False write neither."""
        check_bigint("id", task_id)
        where = [task.c.id == task_id, self._dialect.exact(task.c.status, str(old)), *extra]
        params: dict[str, Any] = {}
        if attempt is not None:
            where.append(task.c.attempt == attempt)
        if fence is not None:
            where += self._dialect.fence()
            params = {"lock": fence.name, "epoch": fence.epoch}
        event = {"at": now, "from_status": str(old), "to_status": str(new), "message": values["message"],
                 "epoch": fence.epoch if fence else None, "replica": fence.replica if fence else replica}
        written = self._apply(sa.update(task).where(*where).values(values), task_id, event, params)
        if not written and fence is not None and self.current_epoch(fence.name) != fence.epoch:
            raise FencedError(fence.name, fence.epoch)
        return written

    def _apply(self, update: sa.Update, task_id: int, event: dict[str, Any], params: dict[str, Any]) -> bool:
        """Run ``update`` and, if it changed the row, insert its event, atomically.

        PostgreSQL: ONE statement (``WITH moved AS (UPDATE … RETURNING) INSERT … SELECT FROM moved``),
        so no client, however paused, holds the leader row's lock between two statements. The
        others: one transaction (a paused MariaDB client's is rolled back by the server after
        ``idle_transaction_timeout``; SQLite's writer lock is the host's)."""
        if self._dialect.name == "postgresql":
            moved = update.returning(task.c.id, task.c.attempt).cte("moved")
            literals = [sa.cast(sa.literal(v), task_event.c[k].type).label(k) for k, v in event.items()]
            insert = sa.insert(task_event).from_select(
                ["task_id", "attempt", *event], sa.select(moved.c.id, moved.c.attempt, *literals),
            ).returning(task_event.c.id)  # SQLAlchemy keeps no rowcount for an INSERT
            with self._db() as conn:
                return len(conn.execute(insert, params).all()) == 1
        with self._atomic() as conn:
            written = conn.execute(update, params).rowcount == 1
            if written:
                conn.execute(self._event(task_id, event))
        return written

    @staticmethod
    def _event(task_id: int, event: dict[str, Any]) -> sa.Insert:
        attempt = sa.select(task.c.attempt).where(task.c.id == task_id).scalar_subquery()  # after the move
        return sa.insert(task_event).values(task_id=task_id, attempt=attempt, **event)

    def request_cancel(self, task_id: int, reason: str | None = None, *, replica: str = "") -> CancelRequest:
        check_bigint("id", task_id)
        finished = sa.or_(*(self._dialect.exact(task.c.status, s) for s in _TERMINAL))
        ask = (sa.update(task).where(task.c.id == task_id, task.c.cancel_requested_at.is_(None), sa.not_(finished))
               # updated_at set to itself: MySQL's ON UPDATE CURRENT_TIMESTAMP would move it
               .values(cancel_requested_at=self._now(), cancel_reason=fit_message(reason),
                       updated_at=task.c.updated_at))
        with self._db() as conn:
            requested = conn.execute(ask).rowcount == 1
            row = conn.execute(sa.select(*_COLUMNS).where(task.c.id == task_id)).one_or_none()
        if row is None:
            raise TaskNotFoundError(task_id)
        return CancelRequest(to_task(row), requested=requested)

    def find(self, name: str, namespace: str) -> Task:
        exact = self._dialect.exact
        query = sa.select(*_COLUMNS).where(exact(task.c.name, name), exact(task.c.namespace, namespace))
        with self._db() as conn:
            row = conn.execute(query).one_or_none()
        if row is None:
            raise TaskNotFoundError(f"{name!r} in namespace {namespace!r}")
        return to_task(row)

    def _filters(self, q: TaskQuery) -> list[sa.ColumnElement[bool]]:
        exact, where = self._dialect.exact, []
        if q.namespace is not None:
            where.append(exact(task.c.namespace, q.namespace))
        if q.name is not None:
            where.append(exact(task.c.name, q.name))
        if q.user_id is not None:
            check_bigint("user_id", q.user_id)
            where.append(task.c.user_id == q.user_id)
        if q.since is not None:
            where.append(task.c.created_at >= naive(q.since))
        if q.before_id is not None:
            check_bigint("id", q.before_id)
            where.append(task.c.id < q.before_id)
        return where

    def query(self, q: TaskQuery) -> list[Task]:
        """Newest first. One index seek per status (as ``page``), merged by id: an ``IN`` list
        would sort every matching row for each page."""
        base = sa.select(*_COLUMNS).where(*self._filters(q)).order_by(task.c.id.desc()).limit(max(0, q.limit))
        with self._db() as conn:
            if not q.statuses:
                rows = list(conn.execute(base))
            else:
                rows = [r for s in dict.fromkeys(q.statuses)
                        for r in conn.execute(base.where(self._dialect.exact(task.c.status, s)))]
        return sorted((to_task(r) for r in rows), key=lambda t: -t.id)[: max(0, q.limit)]

    def count(self, q: TaskQuery) -> int:
        where = self._filters(q)
        if q.statuses:
            where.append(sa.or_(*(self._dialect.exact(task.c.status, s) for s in dict.fromkeys(q.statuses))))
        with self._db() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(task).where(*where)).scalar_one())

    def events(self, task_id: int, limit: int = 1000) -> list[TaskEvent]:
        check_bigint("id", task_id)
        query = (sa.select(*EVENT_COLUMNS).where(task_event.c.task_id == task_id)
                 .order_by(task_event.c.id.desc()).limit(max(0, limit)))  # commit order: the (task_id, id) index
        with self._db() as conn:
            rows = conn.execute(query).all()
        return [to_event(r) for r in reversed(rows)]

    def prune_events(self, before: datetime, limit: int = 10_000) -> int:
        """One batch: at most ``limit`` rows, so no statement holds many row locks for long."""
        with self._db() as conn:
            return int(conn.execute(self._dialect.prune(naive(before), max(0, limit))).rowcount)

    def close(self) -> None:
        self.engine.dispose()

__all__ = ["SQLTaskStore", "mysql_store", "postgres_store", "sqlite_store"]
