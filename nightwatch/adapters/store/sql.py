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
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from nightwatch.adapters.store._dialects import DIALECTS, Dialect, sqlite_wal
from nightwatch.adapters.store._rows import EVENT_COLUMNS, TASK_COLUMNS, naive, text, to_event, to_task
from nightwatch.adapters.store.schema import nightwatch_leader, task, task_event
from nightwatch.domain.errors import (
    BackendUnavailableError,
    ConfigError,
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
    ) -> bool:
        check_requeue(old, force=force)
        now = self._now()
        values = {"status": str(TaskStatus.NORMAL), "attempt": task.c.attempt + 1, "message": fit_message(message),
                  "retry_at": naive(retry_at), "finished_at": None, "cancel_requested_at": None,
                  "cancel_reason": None, "updated_at": now}
        return self._cas(task_id, old, TaskStatus.NORMAL, values, fence, attempt, replica, now)

    def _cas(self, task_id: int, old: TaskStatus, new: TaskStatus, values: dict[str, Any], fence: Fence | None,
             attempt: int | None, replica: str, now: datetime) -> bool:
        """The compare-and-set and its event, in one transaction; FencedError or False write neither."""
        check_bigint("id", task_id)
        where = [task.c.id == task_id, self._dialect.exact(task.c.status, str(old))]
        params: dict[str, Any] = {}
        if attempt is not None:
            where.append(task.c.attempt == attempt)
        if fence is not None:
            where += self._dialect.fence()
            params = {"lock": fence.name, "epoch": fence.epoch}
        event = sa.insert(task_event).values(
            task_id=task_id, attempt=sa.select(task.c.attempt).where(task.c.id == task_id).scalar_subquery(),
            at=now, from_status=str(old), to_status=str(new), message=values["message"],
            epoch=fence.epoch if fence else None, replica=fence.replica if fence else replica,
        )
        with self._atomic() as conn:
            written = conn.execute(sa.update(task).where(*where).values(values), params).rowcount == 1
            if written:
                conn.execute(event)
        if not written and fence is not None and self.current_epoch(fence.name) != fence.epoch:
            raise FencedError(fence.name, fence.epoch)
        return written

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
                 .order_by(task_event.c.at.desc(), task_event.c.id.desc()).limit(max(0, limit)))
        with self._db() as conn:
            rows = conn.execute(query).all()
        return [to_event(r) for r in reversed(rows)]

    def prune_events(self, before: datetime, limit: int = 10_000) -> int:
        """One batch: at most ``limit`` rows, so no statement holds many row locks for long."""
        with self._db() as conn:
            return int(conn.execute(self._dialect.prune(naive(before), max(0, limit))).rowcount)

    def close(self) -> None:
        self.engine.dispose()


# -- engines, one per backend's config keys ---------------------------------------------------

# The fenced UPDATE reads the one leader row beside the task row on purpose (no join condition):
# SQLAlchemy's FROM linter would warn about that cross join on every write.
_ENGINE: dict[str, Any] = {"enable_from_linting": False}

def sqlite_store(path: str, clock: Clock, *, timeout: float = 10.0) -> SQLTaskStore:
    """One file shared by the processes of a host: WAL so readers are not blocked, a busy
    timeout so writers queue instead of failing."""
    def make_parent(*_: Any) -> None:  # at the first connect, so building the store creates nothing
        if path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ConfigError(f"store.sqlite: cannot create {path}: {e} (check store.sqlite.path)") from e

    engine = sa.create_engine(
        sa.URL.create("sqlite", database=path), isolation_level="AUTOCOMMIT", pool_pre_ping=True, **_ENGINE,
        connect_args={"timeout": timeout, "check_same_thread": False},
        poolclass=sa.pool.StaticPool if path == ":memory:" else None,
    )
    sa.event.listen(engine, "do_connect", make_parent)
    sa.event.listen(engine, "connect", lambda conn, _record: sqlite_wal(conn, timeout))
    return SQLTaskStore(engine, clock, f"store.sqlite: {path}")


def mysql_store(host: str, port: int, user: str, password: str, database: str, clock: Clock, *,
                connect_timeout: float = 5, read_timeout: float = 10, write_timeout: float = 10,
                pool_size: int = 4) -> SQLTaskStore:
    """Sessions in UTC; InnoDB gives up on a row lock before the client gives up on the socket."""
    lock_wait = max(1, int(read_timeout) - 1)
    connect_args = {"connect_timeout": connect_timeout, "read_timeout": read_timeout, "write_timeout": write_timeout,
                    "init_command": f"SET time_zone = '+00:00', innodb_lock_wait_timeout = {lock_wait},"
                                    " sql_mode = CONCAT_WS(',', @@sql_mode, 'STRICT_TRANS_TABLES')"}
    url = sa.URL.create("mysql+pymysql", username=user, password=password or None, host=host, port=int(port),
                        database=database, query={"charset": "utf8mb4"})
    engine = sa.create_engine(
        url, isolation_level="AUTOCOMMIT", pool_pre_ping=True, pool_recycle=3600, pool_size=pool_size, **_ENGINE,
        max_overflow=0, pool_timeout=connect_timeout + read_timeout, connect_args=connect_args,
    )

    def create_database() -> None:  # on a fresh server the database itself may be missing
        server = sa.create_engine(url.set(database=None), poolclass=sa.pool.NullPool, connect_args=connect_args)
        try:
            with server.connect() as conn:  # only when missing: a DML-only user may not create one
                schemata = sa.text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name")
                if conn.execute(schemata, {"name": database}).first() is None:
                    conn.exec_driver_sql(f"CREATE DATABASE `{database.replace('`', '``')}` CHARACTER SET utf8mb4")
        finally:
            server.dispose()

    return SQLTaskStore(engine, clock, f"store.mysql ({host}:{port})", create_database)


def postgres_store(dsn: str, clock: Clock, *, connect_timeout: float = 5, statement_timeout: float = 10,
                   pool_size: int = 4) -> SQLTaskStore:
    """``dsn`` is a libpq URL or key=value string, handed to psycopg as it is."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:  # parsing is not connecting: a malformed DSN fails at start-up
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as e:
        raise ConfigError(f"store.postgres: malformed dsn: {str(e).strip()} (check store.postgres.dsn)") from e
    port = str(params.get("port") or "5432")
    if not all(p.strip().isdigit() for p in port.split(",")):
        raise ConfigError(f"store.postgres: invalid port {port!r} in the dsn (check store.postgres.dsn)")
    session: dict[str, Any] = {
        "autocommit": True, "connect_timeout": max(2, round(connect_timeout)),  # libpq's minimum is 2 s
        "options": f"{params.get('options') or ''} -c statement_timeout={int(statement_timeout * 1000)}"
                   " -c TimeZone=UTC".strip(),  # after the DSN's own options, which it would replace
        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    }
    engine = sa.create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn, **session),  # the DSN as the user wrote it
        isolation_level="AUTOCOMMIT", pool_pre_ping=True, pool_size=pool_size, max_overflow=0,
        pool_timeout=connect_timeout + statement_timeout, **_ENGINE,
    )
    store = SQLTaskStore(engine, clock, f"store.postgres ({params.get('host') or 'local socket'}:{port})")
    store.listen_connect = lambda: psycopg.connect(dsn, **session)  # outside the pool: held while leading
    return store
