"""What differs per database, in one table: the fence check of a status write, ``begin_term``, exact status
matching, and how each driver's errors map to port errors.

Everything else the SQL store does is plain SQLAlchemy Core and the same on every backend.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from nightwatch.adapters.store.schema import nightwatch_leader, task_event
from nightwatch.domain.errors import (
    BackendUnavailableError,
    ConfigError,
    DuplicateTaskError,
    NightwatchError,
    TaskIdConflictError,
    TaskValueError,
)
from nightwatch.domain.model import BIGINT_MAX, BIGINT_MIN, ID_CLASH, TEXT_BYTES, VARCHAR_COLUMNS

# (driver exception, "store.x (host:port)", the statement that failed or "") -> the port
# error, or None when the classifier does not recognise it.
Classifier = Callable[[BaseException, str, str], NightwatchError | None]


def _too_long(column: str) -> TaskValueError:
    if column in VARCHAR_COLUMNS:
        return TaskValueError(f"task.{column}: too long, at most {VARCHAR_COLUMNS[column]} fit")
    if column in ("id", "user_id"):
        return TaskValueError(f"task.{column}: out of range ({BIGINT_MIN} to {BIGINT_MAX})")
    if column in ("info", "message"):
        return TaskValueError(f"task.{column}: too long, at most {TEXT_BYTES} bytes fit")
    return TaskValueError(f"task.{column}: the value does not fit the column")


# -- MariaDB / MySQL (PyMySQL) -----------------------------------------------------------------

# Transient: too many connections, lock wait, deadlock, read-only server, shutdown, killed,
# statement time limits; and every client-side error (2000 and up: connection lost, timeouts).
_MYSQL_TRANSIENT = {1040, 1203, 1205, 1213, 1290, 1792, 1836, 1053, 1927, 3024, 1969, 4031, 1317}
_MYSQL_GRANT = re.compile(r"(\w+) command denied to user '([^']*)'@'([^']*)' for table [`']?([\w.`]+?)[`']?$")


def _mysql(e: BaseException, where: str, statement: str) -> NightwatchError | None:
    code = e.args[0] if e.args and isinstance(e.args[0], int) else None
    text = str(e.args[1]) if len(e.args) > 1 else str(e)
    if code is None:
        return None
    if code in _MYSQL_TRANSIENT or code >= 2000:
        return BackendUnavailableError(f"{where}: {text}")
    if code in (1045, 1698):
        return ConfigError(f"store.mysql: {text} (check store.mysql.user and store.mysql.password)")
    if code == 1049:
        return ConfigError(f"store.mysql: {text} (check store.mysql.database, or run `nightwatch db migrate`)")
    if code in (1044, 1142, 1143, 1227, 1370):
        grant = _MYSQL_GRANT.search(text)
        hint = (f"GRANT {grant[1]} ON {grant[4].replace('`', '')} TO '{grant[2]}'@'{grant[3]}'" if grant
                else "grant the privilege named above to store.mysql.user")
        return ConfigError(f"store.mysql: {text} ({hint})")
    if code in (1146, 1054):
        return ConfigError(f"store.mysql: {text} (run `nightwatch db migrate`)")
    if code == 1062:
        if re.search(r"for key '(\w+\.)?PRIMARY'", text):
            return TaskIdConflictError(ID_CLASH.format(id=_quoted(text), hint=""))
        return DuplicateTaskError(text)
    if code in (1406, 1264, 1366):
        column = re.search(r"column ((?:`[^`]*`\.)*)?[`']?(\w+)", text)  # `db`.`task`.`name`: the last part
        if code == 1366 and column:
            return TaskValueError(f"task.{column[2]}: a character the column's character set cannot hold")
        return _too_long(column[2] if column else "?")
    return None


def _quoted(text: str) -> str:
    found = re.search(r"'([^']*)'", text)
    return found[1] if found else "?"


# -- PostgreSQL (psycopg 3) --------------------------------------------------------------------

# 08 connection, 40 rollback (serialization, deadlock), 53 resources (too many connections),
# 55P03 lock not available, 57 operator intervention (shutdown, statement timeout), 25006
# read-only transaction (a standby, or default_transaction_read_only), 58 system I/O.
_PG_TRANSIENT = ("08", "40", "53", "55P03", "57", "25006", "58", "XX")
# libpq's own messages (no sqlstate) that a retry cannot fix; anything else is transient.
_PG_CONNECT_CONFIG = re.compile(
    r"^(connection is bad: )?(password authentication failed for user |no password supplied|role \S+ does not exist"
    r"|database \S+ does not exist|no pg_hba\.conf entry |invalid connection option "
    r"|invalid \S+ value|invalid integer value |missing \S+ after |invalid URI |invalid sslmode value)"
)
_PG_ALWAYS_TRANSIENT = ("too many connections", "remaining connection slots")


def _postgres(e: BaseException, where: str, statement: str) -> NightwatchError | None:
    state: str | None = getattr(e, "sqlstate", None)
    text = str(e).strip()
    reason = text.rsplit("FATAL:", 1)[-1].strip().splitlines()[0] if text else type(e).__name__
    diag = getattr(e, "diag", None)
    if state is None:  # failed before a session existed: libpq's own message
        if any(hint in reason for hint in _PG_ALWAYS_TRANSIENT):
            return BackendUnavailableError(f"{where}: {reason}")
        denied = re.match(r'permission denied for database "?([^"]+)"?', reason)
        if denied:
            user = getattr(getattr(e, "pgconn", None), "user", None)
            role = user.decode() if isinstance(user, bytes) else "the user of store.postgres.dsn"
            return ConfigError(f"store.postgres: {reason} (GRANT CONNECT ON DATABASE {denied[1]} TO {role})")
        if _PG_CONNECT_CONFIG.match(reason):
            return ConfigError(f"store.postgres: {reason} (check store.postgres.dsn)")
        if type(e).__name__ in ("OperationalError", "InterfaceError"):
            return BackendUnavailableError(f"{where}: {reason}")
        return None
    if state in ("28P01", "28000", "3D000"):
        return ConfigError(f"store.postgres: {reason} (check store.postgres.dsn)")
    if state == "42501":
        return ConfigError(f"store.postgres: {reason} ({_pg_grant(reason, statement)})")
    if state in ("42P01", "42703"):
        return ConfigError(f"store.postgres: {reason} (run `nightwatch db migrate`)")
    if state == "23505" and getattr(diag, "table_name", None) == "task":
        if (getattr(diag, "constraint_name", None) or "").endswith("_pkey"):
            ids = re.search(r"\(id\)=\((\d+)\)", getattr(diag, "message_detail", None) or "")
            return TaskIdConflictError(ID_CLASH.format(
                id=ids[1] if ids else "?",
                hint="; fix: SELECT setval(pg_get_serial_sequence('task', 'id'), max(id)) FROM task",
            ))
        return DuplicateTaskError(reason)
    if state in ("22001", "22003"):
        return _too_long(getattr(diag, "column_name", None) or _pg_column(reason))
    if state.startswith(_PG_TRANSIENT):
        return BackendUnavailableError(f"{where}: {reason}")
    return None


def _pg_grant(reason: str, statement: str) -> str:
    """What to grant, from "permission denied for table task" and the statement refused."""
    words = statement.split()
    doing = " ".join(words[:3]) if words[:1] in (["CREATE"], ["ALTER"], ["DROP"]) else (words or ["?"])[0]
    admin = "or have an admin run `nightwatch db migrate`"
    target = re.search(r"permission denied for (table|sequence|schema|database) (\w+)", reason)
    if target is None:  # "must be owner of table task": only the owner may change its schema
        return f"{doing} needs the table's owner: have an admin run `nightwatch db migrate`"
    kind, name = target[1], target[2]
    privilege = {"schema": "CREATE", "sequence": "USAGE", "database": "CONNECT"}.get(kind, doing.upper())
    grant = f"GRANT {privilege} ON {kind.upper()} {name} TO the user in store.postgres.dsn"
    return f"{doing} needs {grant}; {admin}" if kind == "schema" else grant


def _pg_column(reason: str) -> str:
    """PostgreSQL does not say which column was too long; the widths do: 45 is the only one."""
    width = re.search(r"character varying\((\d+)\)", reason)
    names = [c for c, w in VARCHAR_COLUMNS.items() if width and w == int(width[1])]
    return "/".join(names) if names else "?"


# -- SQLite (the standard library) --------------------------------------------------------------

def _sqlite(e: BaseException, where: str, statement: str) -> NightwatchError | None:
    name = getattr(e, "sqlite_errorname", "") or ""
    text = str(e)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_PROTOCOL")):
        return BackendUnavailableError(f"{where}: {text}")
    if "no such table" in text or "no such column" in text:
        return ConfigError(f"{where}: {text} (run `nightwatch db migrate`)")
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_NOTADB", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        return ConfigError(f"{where}: {text} (check store.sqlite.path)")
    if name == "SQLITE_CONSTRAINT_PRIMARYKEY" or text.endswith("task.id"):
        return TaskIdConflictError(ID_CLASH.format(id="?", hint=" (sqlite_sequence is behind)"))
    if name == "SQLITE_CONSTRAINT_UNIQUE":
        return DuplicateTaskError(text)
    if isinstance(e, OverflowError):
        return _too_long("id")
    return None


def sqlite_wal(dbapi_conn: Any, timeout: float) -> None:
    """Switch a SQLite file to WAL (a no-op once it is). The switch ignores the busy timeout
    when several processes open a new file at once, so retry it for up to that long."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")
            return
        except Exception as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# -- the table ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dialect:
    name: str
    # ``column = value`` byte for byte, in a form that still seeks an index on the column.
    exact: Callable[[sa.ColumnElement[Any], str], sa.ColumnElement[bool]]
    # The expression to group statuses by so that case and trailing spaces stay apart.
    group_key: Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]]
    fence: FenceCheck
    # The isolation level of a transaction of the store (the engine itself autocommits).
    isolation: str
    # DELETE of at most ``limit`` events older than ``before`` (naive UTC).
    prune: Callable[[Any, int], sa.Executable]
    begin_term: Callable[[Connection, str], int]
    classify: Classifier


def _on_conflict_term(insert: Any) -> Callable[[Connection, str], int]:
    def begin(conn: Connection, name: str) -> int:
        statement = (
            insert(nightwatch_leader).values(name=name, epoch=1)
            .on_conflict_do_update(index_elements=["name"], set_={"epoch": nightwatch_leader.c.epoch + 1})
            .returning(nightwatch_leader.c.epoch)
        )
        return int(conn.execute(statement).scalar_one())
    return begin


def _mysql_term(conn: Connection, name: str) -> int:
    # LAST_INSERT_ID(expr) makes the new epoch this session's LAST_INSERT_ID: increment and
    # read back on one connection without a second round of locking.
    conn.execute(sa.text(
        "INSERT INTO nightwatch_leader (name, epoch) VALUES (:name, LAST_INSERT_ID(1))"
        " ON DUPLICATE KEY UPDATE epoch = LAST_INSERT_ID(epoch + 1)"
    ), {"name": name})
    return int(conn.execute(sa.text("SELECT LAST_INSERT_ID()")).scalar_one())


def _binary(column: sa.ColumnElement[Any], value: str) -> sa.ColumnElement[bool]:
    # The plain ``=`` seeks the index (its collation ignores case and trailing spaces); the
    # byte comparison then filters the few rows that only look alike.
    return sa.and_(column == value, sa.cast(column, sa.LargeBinary) == value.encode("utf-8"))


def _same(column: sa.ColumnElement[Any], value: str) -> sa.ColumnElement[bool]:
    return column == value  # PostgreSQL's deterministic collations and SQLite's BINARY are exact


# The epoch check of a fenced write, as WHERE conditions of an UPDATE of task (binds ``lock``
# and ``epoch``). The leader row is read with a shared lock held until the write commits, so
# a concurrent ``begin_term`` waits for it, and a write that waited sees the new epoch.
FenceCheck = Callable[[], list[sa.ColumnElement[bool]]]


def _mysql_fence() -> list[sa.ColumnElement[bool]]:
    # A multi-table UPDATE: InnoDB reads the leader row with a shared lock (as the JOIN form).
    return [nightwatch_leader.c.name == sa.bindparam("lock"), nightwatch_leader.c.epoch == sa.bindparam("epoch")]


def _postgres_fence() -> list[sa.ColumnElement[bool]]:
    leader = (sa.select(nightwatch_leader.c.epoch).where(nightwatch_leader.c.name == sa.bindparam("lock"))
              .with_for_update(read=True).subquery("l"))
    return [leader.c.epoch == sa.bindparam("epoch")]


def _sqlite_fence() -> list[sa.ColumnElement[bool]]:
    # SQLite writes under its single writer lock: the epoch cannot change between the check and
    # the commit.
    epoch = sa.select(nightwatch_leader.c.epoch).where(nightwatch_leader.c.name == sa.bindparam("lock"))
    return [epoch.scalar_subquery() == sa.bindparam("epoch")]


def _prune_by_id(before: Any, limit: int) -> sa.Executable:
    oldest = sa.select(task_event.c.id).where(task_event.c.at < before).order_by(task_event.c.at).limit(limit)
    return sa.delete(task_event).where(task_event.c.id.in_(oldest))


def _mysql_prune(before: Any, limit: int) -> sa.Executable:
    # MariaDB/MySQL refuse LIMIT in an IN subquery; their DELETE takes a LIMIT itself.
    return sa.delete(task_event).where(task_event.c.at < before).with_dialect_options(mysql_limit=limit)


DIALECTS = {
    "mysql": Dialect("mysql", _binary, lambda c: sa.cast(c, sa.LargeBinary), _mysql_fence, "READ COMMITTED",
                     _mysql_prune, _mysql_term, _mysql),
    "postgresql": Dialect("postgresql", _same, lambda c: c, _postgres_fence, "READ COMMITTED", _prune_by_id,
                          _on_conflict_term(postgresql.insert), _postgres),
    "sqlite": Dialect("sqlite", _same, lambda c: c, _sqlite_fence, "SERIALIZABLE", _prune_by_id,
                      _on_conflict_term(sqlite.insert), _sqlite),
}
