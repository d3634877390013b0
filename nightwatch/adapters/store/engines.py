"""The SQL store's engines, one per backend's config keys: SQLite, MariaDB/MySQL, PostgreSQL.

Every engine autocommits (the store opens a transaction where it needs one) and checks a
connection before lending it (pre-ping).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from nightwatch.adapters.store._dialects import sqlite_wal
from nightwatch.domain.errors import ConfigError
from nightwatch.domain.ports import Clock

if TYPE_CHECKING:
    from nightwatch.adapters.store.sql import SQLTaskStore

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
    from nightwatch.adapters.store.sql import SQLTaskStore  # which imports this module

    return SQLTaskStore(engine, clock, f"store.sqlite: {path}")


def mysql_store(host: str, port: int, user: str, password: str, database: str, clock: Clock, *,
                connect_timeout: float = 5, read_timeout: float = 10, write_timeout: float = 10,
                pool_size: int = 4) -> SQLTaskStore:
    """Sessions in UTC; InnoDB gives up on a row lock before the client gives up on the socket."""
    lock_wait = max(1, int(read_timeout) - 1)
    connect_args = {"connect_timeout": connect_timeout, "read_timeout": read_timeout, "write_timeout": write_timeout,
                    "init_command": f"SET time_zone = '+00:00', innodb_lock_wait_timeout = {lock_wait},"
                                    " sql_mode = CONCAT_WS(',', @@sql_mode, 'STRICT_TRANS_TABLES')"}
    server_url = sa.URL.create("mysql+pymysql", username=user, password=password or None, host=host,
                               port=int(port), query={"charset": "utf8mb4"})  # no database selected
    url = server_url.set(database=database)
    engine = sa.create_engine(
        url, isolation_level="AUTOCOMMIT", pool_pre_ping=True, pool_recycle=3600, pool_size=pool_size, **_ENGINE,
        max_overflow=0, pool_timeout=connect_timeout + read_timeout, connect_args=connect_args,
    )
    # A status write and its event are one transaction: a client paused inside it (SIGSTOP, GC)
    # would hold the leader row's lock and keep a successor from starting its term. MariaDB
    # rolls such a transaction back after this long idle, well within the successor's lock wait.
    idle = max(1, lock_wait // 2)
    sa.event.listen(engine, "connect", lambda conn, _record: _idle_transaction_timeout(conn, idle))

    def create_database() -> None:  # on a fresh server the database itself may be missing
        # (not url.set(database=None): set() leaves a None argument as it was)
        server = sa.create_engine(server_url, poolclass=sa.pool.NullPool, connect_args=connect_args)
        try:
            with server.connect() as conn:  # only when missing: a DML-only user may not create one
                schemata = sa.text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :name")
                if conn.execute(schemata, {"name": database}).first() is None:
                    conn.exec_driver_sql(f"CREATE DATABASE `{database.replace('`', '``')}` CHARACTER SET utf8mb4")
        finally:
            server.dispose()

    from nightwatch.adapters.store.sql import SQLTaskStore  # which imports this module

    return SQLTaskStore(engine, clock, f"store.mysql ({host}:{port})", create_database)


def _idle_transaction_timeout(dbapi_conn: Any, seconds: int) -> None:
    import pymysql

    try:
        with dbapi_conn.cursor() as cursor:
            cursor.execute(f"SET SESSION idle_transaction_timeout = {int(seconds)}")
    except pymysql.err.MySQLError as e:
        if not e.args or e.args[0] != 1193:  # MySQL has no such variable (only MariaDB ≥ 10.3)
            raise


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
    from nightwatch.adapters.store.sql import SQLTaskStore  # which imports this module

    store = SQLTaskStore(engine, clock, f"store.postgres ({params.get('host') or 'local socket'}:{port})")
    store.listen_connect = lambda: psycopg.connect(dsn, **session)  # outside the pool: held while leading
    return store
