"""nightwatch's schema changes as Alembic revisions, run from code (no alembic.ini).

``upgrade`` brings a database to ``head()``: from empty (it creates the ``task`` table),
from the user's own table (the seed's DDL), or from a database nightwatch 0.1 set up (its
``nightwatch_schema`` table): that one is stamped at the revision equal to 0.1's schema,
but only after checking the schema really is 0.1's, so its DDL is not run again.

Replicas may call ``upgrade`` at the same moment: one takes a database-level lock
(``GET_LOCK`` on MariaDB/MySQL, ``pg_advisory_lock`` on PostgreSQL, a file lock beside the
SQLite file), the others wait, polling so that ``stop`` interrupts the wait. A database
already at head is left alone without taking any lock, so a user with DML rights only can
run nightwatch once an admin has migrated.

The version table is ``nightwatch_alembic_version``, not Alembic's default, so the user's own
application may use Alembic on the same database.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from nightwatch.domain.errors import BackendUnavailableError, ConfigError, LockTimeoutError

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
VERSION_TABLE = "nightwatch_alembic_version"
RELEASE_0_1 = "0003"  # the revision whose schema equals what nightwatch 0.1's migrate made
LOCK_NAME = "nightwatch_migrate"
LOCK_POLL = 0.5  # seconds between attempts at the migration lock (and checks of ``stop``)
LOCK_TIMEOUT = 2  # seconds: give up on a table lock rather than queue the user's writes behind it
DDL_READ_TIMEOUT = 3600  # MySQL: seconds the client waits for one DDL statement (an index on a big table)


def _config(**attributes: Any) -> Config:
    cfg = Config(output_buffer=attributes.pop("output_buffer", None))
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes.update(attributes)
    return cfg


def head() -> str:
    """The revision this nightwatch needs."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def _revisions(cfg: Config) -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(cfg).walk_revisions()}


def _current(conn: Connection) -> str | None:
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def current(engine: Engine) -> str | None:
    """The database's revision; None when nightwatch has not migrated it yet. Only reads."""
    with engine.connect() as conn:
        return _current(conn)


def is_empty(engine: Engine) -> bool:
    """No tables at all (a database file that was just created)."""
    with engine.connect() as conn:
        return not sa.inspect(conn).get_table_names()


def upgrade(engine: Engine, *, stop: threading.Event | None = None) -> None:
    """Bring the schema to head. Safe when several replicas run it at once."""
    target = head()
    if current(engine) == target:
        return
    with _migration_connection(engine) as conn, _locked(conn, engine, stop):
        found = _current(conn)
        conn.commit()
        if found == target:  # another replica did it while we waited
            return
        cfg = _config(connection=conn)
        if found is not None and found not in _revisions(cfg):
            raise ConfigError(f"the schema is at revision {found}, which this nightwatch (needing {target}) does "
                              "not know: a newer nightwatch migrated it; run that one")
        adopt = found is None and _is_release_0_1(conn)
        conn.commit()  # Alembic must find no transaction open: it runs one per revision
        if adopt:
            logger.info("adopting the schema nightwatch 0.1 made: stamping revision %s", RELEASE_0_1)
            command.stamp(cfg, RELEASE_0_1)
            conn.commit()
            found = RELEASE_0_1
        logger.info("migrating the schema from %s to %s", found or "nothing", target)
        try:
            command.upgrade(cfg, "head")
        except sa.exc.DBAPIError as e:
            _refused_for_good(e, conn, cfg)
            _lock_timed_out(e, engine)
            raise
        conn.commit()
    logger.info("schema at %s", target)


# DDL the server refuses whatever the retry: LOCK=NONE not supported (MariaDB 1845, MySQL 1846),
# a column or index name taken (1060, 1061; PostgreSQL 42701, 42P07).
_DDL_REFUSED = {1845, 1846, 1060, 1061, "42701", "42P07"}


def _refused_for_good(e: sa.exc.DBAPIError, conn: Connection, cfg: Config) -> None:
    """ConfigError naming the revision that failed, when retrying cannot help."""
    orig = e.orig
    args = getattr(orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else getattr(orig, "sqlstate", None)  # PyMySQL: errno
    if code not in _DDL_REFUSED:
        return
    done: str | None = "?"
    with contextlib.suppress(Exception):
        conn.rollback()
        done = _current(conn)
        conn.commit()
    failed = next((r.revision for r in ScriptDirectory.from_config(cfg).walk_revisions()
                   if r.down_revision == done), "after " + str(done))
    reason = str(orig).strip().splitlines()[0]
    raise ConfigError(f"schema migration {failed} failed: {reason} (not retried: fix the task table, "
                      "or apply `nightwatch db migrate --sql` by hand)") from e


# Lock wait timeouts: PostgreSQL's lock_not_available, MariaDB/MySQL's lock wait (metadata locks too).
_LOCK_TIMED_OUT = {"55P03", 1205}
_PG_BLOCKERS = sa.text(
    "SELECT pid, usename, state, now() - xact_start AS open_for, left(query, 80) AS query FROM pg_stat_activity"
    " WHERE pid IN (SELECT pid FROM pg_locks WHERE relation = 'task'::regclass AND granted)"
    " AND pid <> pg_backend_pid()")
_MYSQL_BLOCKERS = sa.text(
    "SELECT p.id, p.user, p.host, t.trx_started, left(t.trx_query, 80) FROM information_schema.innodb_trx t"
    " JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id WHERE p.id <> CONNECTION_ID()")


def _lock_timed_out(e: sa.exc.DBAPIError, engine: Engine) -> None:
    """LockTimeoutError, after logging the sessions that hold task (once per attempt)."""
    args = getattr(e.orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else getattr(e.orig, "sqlstate", None)
    if code not in _LOCK_TIMED_OUT:
        return
    blockers: list[str] = []
    with contextlib.suppress(Exception), engine.connect() as conn:
        query = _PG_BLOCKERS if engine.dialect.name == "postgresql" else _MYSQL_BLOCKERS
        blockers = [" ".join(str(v) for v in row) for row in conn.execute(query)]
    logger.warning("schema migration gave up after %ss waiting for a lock on task; held by: %s", LOCK_TIMEOUT,
                   "; ".join(blockers) or "nobody any more")
    raise LockTimeoutError(f"schema migration waited {LOCK_TIMEOUT}s for a lock on task held by another "
                           "session (an open transaction?)") from e


def offline_sql(dialect_name: str, start: str | None = None) -> str:
    """The DDL ``upgrade`` would run, as SQL text for a DBA (Alembic's offline mode), from
    ``start`` (a revision; None = from nothing) to head. From nothing, the statements are
    written to be harmless on parts that exist already (IF NOT EXISTS), so the script
    applies to an empty database, to the user's own table and to a 0.1 database alike."""
    buffer = io.StringIO()
    cfg = _config(output_buffer=buffer, dialect_name=dialect_name)
    command.upgrade(cfg, f"{start}:head" if start else "head", sql=True)
    return buffer.getvalue()


# -- the 0.1 schema ------------------------------------------------------------------------

_TASK_0_1 = {"id", "name", "namespace", "info", "status", "user_id", "created_at", "updated_at", "message"}


def _is_release_0_1(conn: Connection) -> bool:
    """Does this database hold exactly what nightwatch 0.1's ``migrate`` left? Only then may
    the revisions up to ``RELEASE_0_1`` be skipped; otherwise they run (each one adds only
    what is missing)."""
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    if not {"nightwatch_schema", "task", "nightwatch_leader"} <= tables:
        return False
    versions = {row[0] for row in conn.execute(sa.text("SELECT version FROM nightwatch_schema"))}
    task: dict[str, Any] = {c["name"]: c for c in inspector.get_columns("task")}
    leader = {c["name"] for c in inspector.get_columns("nightwatch_leader")}
    status_first = any(
        (index.get("column_names") or [None])[0] == "status" for index in inspector.get_indexes("task")
    )
    reasons = [
        why for why, ok in (
            ("nightwatch_schema has no version 1", 1 in versions),
            (f"task lacks {sorted(_TASK_0_1 - set(task))}", set(task) >= _TASK_0_1),
            ("task.message is not nullable", bool("message" in task and task["message"]["nullable"])),
            ("nightwatch_leader is not (name, epoch)", leader == {"name", "epoch"}),
            ("no index on task.status", status_first),
        ) if not ok
    ]
    if reasons:
        logger.warning("nightwatch_schema found but the schema is not 0.1's (%s): running every revision",
                       "; ".join(reasons))
    return not reasons


# -- the connection and the lock ------------------------------------------------------------

@contextlib.contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection of its own, with timeouts fit for DDL; thrown away afterwards so the
    pool never lends out its changed session settings."""
    name = engine.dialect.name
    # The store's engine may be autocommit; Alembic runs each revision in a transaction of its own.
    conn = engine.connect().execution_options(
        isolation_level="SERIALIZABLE" if name == "sqlite" else "READ COMMITTED")
    try:
        if name == "postgresql":
            conn.execute(sa.text("SELECT set_config('statement_timeout', '0', false),"
                                 " set_config('lock_timeout', :t, false)"), {"t": f"{LOCK_TIMEOUT}s"})
        elif name in ("mysql", "mariadb"):
            raw = conn.connection.dbapi_connection
            # PyMySQL keeps the socket timeout in this attribute and re-applies it per read; the
            # store's read_timeout (seconds) would cut a long ALTER short.
            raw._read_timeout = DDL_READ_TIMEOUT  # type: ignore[union-attr]
            conn.execute(sa.text(f"SET SESSION lock_wait_timeout = {LOCK_TIMEOUT}"))
        conn.commit()
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.invalidate()
        conn.close()


@contextlib.contextmanager
def _locked(conn: Connection, engine: Engine, stop: threading.Event | None) -> Iterator[None]:
    name = engine.dialect.name
    if name == "postgresql":
        key = zlib.crc32(LOCK_NAME.encode())  # advisory locks are per database already
        _wait_for(lambda: _scalar(conn, "SELECT pg_try_advisory_lock(:k)", k=key) is True, stop)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                conn.rollback()
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    elif name in ("mysql", "mariadb"):
        lock = f"{LOCK_NAME}:{conn.execute(sa.text('SELECT DATABASE()')).scalar()}"[:64]
        # GET_LOCK waits up to its timeout itself: one second per attempt keeps ``stop`` heard.
        _wait_for(lambda: _scalar(conn, "SELECT GET_LOCK(:n, 1)", n=lock) == 1, stop)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": lock})
    else:
        with _file_lock(engine.url.database, stop):
            yield


def _scalar(conn: Connection, statement: str, **params: Any) -> Any:
    """One value, in a transaction of its own (a waiting replica holds no snapshot open)."""
    value = conn.execute(sa.text(statement), params).scalar()
    conn.commit()
    return value


@contextlib.contextmanager
def _file_lock(database: str | None, stop: threading.Event | None) -> Iterator[None]:
    """SQLite has no named locks: flock a file beside the database (the OS drops it when the
    process dies). An in-memory database belongs to one process and needs none."""
    if not database or database == ":memory:":
        yield
        return
    path = os.path.abspath(database) + ".migrate.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        def attempt() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        _wait_for(attempt, stop)
        yield
    finally:
        os.close(fd)  # also releases the flock


def _wait_for(attempt: Callable[[], bool], stop: threading.Event | None) -> None:
    said = False
    while not attempt():
        if not said:
            logger.info("another nightwatch is migrating the schema: waiting for it")
            said = True
        if stop is None:
            time.sleep(LOCK_POLL)
        elif stop.wait(LOCK_POLL):
            raise BackendUnavailableError("shutdown while waiting for another replica's schema migration")
