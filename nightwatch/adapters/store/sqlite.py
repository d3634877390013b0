"""SQLiteTaskStore: the embedded default, one file shared by the processes of one host.

One connection per store, guarded by a lock (the daemon calls from several threads);
WAL mode so readers in other processes are not blocked; a busy timeout so writers
queue instead of failing; ``BEGIN IMMEDIATE`` around every multi-statement write.
Timestamps are written from the injected clock as naive UTC text, the same format
``CURRENT_TIMESTAMP`` produces for rows other programs insert.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

from nightwatch.adapters.store._sql import (
    COLUMNS,
    INDEX_NAME,
    SCHEMA_DESCRIPTION,
    SCHEMA_VERSION,
    duplicate,
    row_to_task,
    status_filter,
)
from nightwatch.domain.errors import (
    BackendUnavailableError,
    ConfigError,
    FencedError,
    NightwatchError,
    TaskNotFoundError,
)
from nightwatch.domain.model import Fence, NewTask, Task, TaskStatus, check_transition
from nightwatch.domain.ports import Clock, TaskStore

logger = logging.getLogger(__name__)

_CREATE_TASK = """
CREATE TABLE IF NOT EXISTS task (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name VARCHAR(45) NOT NULL DEFAULT '',
  namespace VARCHAR(45) NOT NULL DEFAULT '',
  info TEXT NOT NULL,
  status VARCHAR(45) NOT NULL DEFAULT 'Normal',
  user_id BIGINT NOT NULL DEFAULT 0,
  created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  message TEXT,
  UNIQUE (name, namespace)
)"""
_CREATE_LEADER = (
    "CREATE TABLE IF NOT EXISTS nightwatch_leader (name TEXT PRIMARY KEY, epoch INTEGER NOT NULL)"
)
_CREATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS nightwatch_schema (
  version INTEGER PRIMARY KEY, description TEXT NOT NULL,
  applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
)"""


class SQLiteTaskStore(TaskStore):
    def __init__(self, path: str, clock: Clock, *, fencing: bool = True, timeout: float = 10.0) -> None:
        self.path = path
        self._clock = clock
        self._fencing = fencing  # False only in tests, to prove the fencing tests can fail
        self._timeout = timeout
        self._mutex = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    # -- plumbing -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            try:
                self._wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL (a no-op once the file is in WAL mode). The switch ignores the busy
        timeout when several processes open a new file at once, so retry it up to that."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._mutex:
            try:
                yield self._connect()
            except NightwatchError:
                raise
            except sqlite3.Error as e:
                raise self._translate(e) from e
            except OSError as e:  # the parent directory cannot be created
                raise ConfigError(
                    f"store.sqlite: cannot create {self.path}: {e} (check store.sqlite.path)"
                ) from e

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _translate(self, e: sqlite3.Error) -> NightwatchError:
        text = str(e)
        if "locked" in text or "busy" in text:
            return BackendUnavailableError(f"store.sqlite: {self.path}: {text}")
        if "no such table" in text or "no such column" in text:
            return ConfigError(f"store.sqlite: {self.path}: {text} (run `nightwatch db migrate`)")
        if "unable to open" in text or "not a database" in text or "readonly" in text:
            return ConfigError(f"store.sqlite: {self.path}: {text} (check store.sqlite.path)")
        return BackendUnavailableError(f"store.sqlite: {self.path}: {text}")

    def _now(self) -> str:
        return self._clock.now().astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")

    # -- TaskStore ----------------------------------------------------------------

    def migrate(self) -> None:
        with self._transaction() as conn:
            conn.execute(_CREATE_TASK)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(task)")}
            if "message" not in columns:  # the user's own table
                conn.execute("ALTER TABLE task ADD COLUMN message TEXT")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {INDEX_NAME} ON task (status)")
            conn.execute(_CREATE_LEADER)
            conn.execute(_CREATE_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO nightwatch_schema (version, description, applied_at) VALUES (?, ?, ?)",
                (SCHEMA_VERSION, SCHEMA_DESCRIPTION, self._now()),
            )
        logger.debug("sqlite schema at version %d in %s", SCHEMA_VERSION, self.path)

    def add(self, task: NewTask) -> Task:
        now = self._now()
        with self._db() as conn:
            try:
                cur = conn.execute(
                    "INSERT INTO task (name, namespace, info, status, user_id, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (task.name, task.namespace, task.info, str(task.status), task.user_id, now, now),
                )
            except sqlite3.IntegrityError as e:
                raise duplicate(task) from e
            row = conn.execute(f"SELECT {COLUMNS} FROM task WHERE id = ?", (cur.lastrowid,)).fetchone()
        return row_to_task(row)

    def get(self, task_id: int) -> Task:
        with self._db() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM task WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFoundError(task_id)
        return row_to_task(row)

    def page(self, statuses: Sequence[str] | None, after_id: int, limit: int) -> list[Task]:
        if statuses is not None and not statuses:
            return []
        where, params = status_filter(statuses, "?")
        with self._db() as conn:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM task WHERE {where}id > ? ORDER BY id LIMIT ?",
                (*params, after_id, limit),
            ).fetchall()
        return [row_to_task(r) for r in rows]

    def count_by_status(self) -> dict[str, int]:
        with self._db() as conn:
            rows = conn.execute("SELECT status, COUNT(*) FROM task GROUP BY status").fetchall()
        return {str(status): int(n) for status, n in rows}

    def begin_term(self, name: str) -> int:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO nightwatch_leader (name, epoch) VALUES (?, 1)"
                " ON CONFLICT (name) DO UPDATE SET epoch = epoch + 1",
                (name,),
            )
            (epoch,) = conn.execute("SELECT epoch FROM nightwatch_leader WHERE name = ?", (name,)).fetchone()
        return int(epoch)

    def current_epoch(self, name: str) -> int:
        with self._db() as conn:
            return self._epoch(conn, name)

    @staticmethod
    def _epoch(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT epoch FROM nightwatch_leader WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def transition(
        self,
        task_id: int,
        old: TaskStatus,
        new: TaskStatus,
        message: str | None = None,
        fence: Fence | None = None,
    ) -> bool:
        check_transition(old, new)
        sql = "UPDATE task SET status = ?, message = ?, updated_at = ? WHERE id = ? AND status = ?"
        params: tuple[object, ...] = (str(new), message, self._now(), task_id, str(old))
        checked = fence if self._fencing else None
        if checked is not None:
            # One statement: SQLite runs it under its single writer lock, so the epoch
            # cannot change between the check and the write.
            sql += " AND (SELECT epoch FROM nightwatch_leader WHERE name = ?) = ?"
            params += (checked.name, checked.epoch)
        with self._db() as conn:
            if conn.execute(sql, params).rowcount == 1:
                return True
            if checked is not None and self._epoch(conn, checked.name) != checked.epoch:
                raise FencedError(checked.name, checked.epoch)
        return False

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
