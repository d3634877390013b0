"""MySQLTaskStore: the ``task`` table on MariaDB >= 10.6 / MySQL 8, through PyMySQL.

Works on the seed's table as the user's system creates it; ``migrate`` adds
nightwatch's parts under a ``GET_LOCK`` so replicas may run it at the same moment.
Sessions run in UTC, so ``DATETIME`` values are read as UTC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pymysql
from pymysql.cursors import Cursor

from nightwatch.adapters.store._mysql_pool import MySQLPool, broken
from nightwatch.adapters.store._sql import (
    COLUMNS,
    INDEX_NAME,
    MIGRATE_LOCK,
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
from nightwatch.domain.ports import TaskStore

logger = logging.getLogger(__name__)
T = TypeVar("T")

_CREATE_TASK = f"""
CREATE TABLE IF NOT EXISTS `task` (
  `id` bigint(20) NOT NULL AUTO_INCREMENT,
  `name` varchar(45) NOT NULL DEFAULT '' COMMENT 'task name',
  `namespace` varchar(45) NOT NULL DEFAULT '' COMMENT 'k8s namespace',
  `info` TEXT NOT NULL COMMENT 'k8s job info',
  `status` varchar(45) NOT NULL DEFAULT 'Normal' COMMENT 'task status',
  `user_id` bigint(20) NOT NULL DEFAULT '0' COMMENT 'user id',
  `created_at` datetime NOT NULL DEFAULT CURRENT_TIMESTAMP,
  `updated_at` datetime NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  `message` TEXT NULL COMMENT 'why the task failed (nightwatch)',
  PRIMARY KEY (`id`),
  UNIQUE KEY `uk_name_namespace` (`name`, `namespace`),
  KEY `{INDEX_NAME}` (`status`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='task table'"""
_CREATE_LEADER = (
    "CREATE TABLE IF NOT EXISTS `nightwatch_leader` (`name` varchar(191) NOT NULL PRIMARY KEY,"
    " `epoch` bigint NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
)
_CREATE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS `nightwatch_schema` (`version` int NOT NULL PRIMARY KEY,"
    " `description` varchar(255) NOT NULL, `applied_at` datetime NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
)
_FENCED_UPDATE = (
    "UPDATE task t JOIN nightwatch_leader l ON l.name = %s"
    " SET t.status = %s, t.message = %s, t.updated_at = CURRENT_TIMESTAMP"
    " WHERE t.id = %s AND t.status = %s AND l.epoch = %s"
)
_PLAIN_UPDATE = (
    "UPDATE task SET status = %s, message = %s, updated_at = CURRENT_TIMESTAMP WHERE id = %s AND status = %s"
)
_CREDENTIALS = {1045: "user and store.mysql.password", 1698: "user and store.mysql.password"}
_PRIVILEGES = {1044, 1142, 1227}  # no access to the database / table / operation
_NO_SCHEMA = {1146, 1054}  # no such table / column
_MIGRATE_TIMEOUT = 120  # seconds a migration may take (ALTER on a big table) or wait for another


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


class MySQLTaskStore(TaskStore):
    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str,
        *,
        connect_timeout: float = 5,
        read_timeout: float = 10,
        write_timeout: float = 10,
        pool_size: int = 4,
        fencing: bool = True,
    ) -> None:
        self.host, self.port, self.user, self.database = host, int(port), user, database
        self._password = password
        self._timeouts = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "write_timeout": write_timeout,
        }
        self._fencing = fencing  # False only in tests, to prove the fencing tests can fail
        self._where = f"store.mysql ({self.host}:{self.port})"
        self._pool = MySQLPool(
            lambda: self._connect(database=self.database),
            pool_size,
            connect_timeout + read_timeout,
            self._where,
        )

    # -- plumbing -----------------------------------------------------------------

    def _connect(self, *, database: str | None, read_timeout: float | None = None) -> pymysql.Connection:
        timeouts = dict(self._timeouts)
        if read_timeout is not None:
            timeouts["read_timeout"] = read_timeout
        # InnoDB gives up on a row lock before the client gives up on the socket.
        lock_wait = max(1, int(timeouts["read_timeout"]) - 1)
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self._password,
            database=database,
            charset="utf8mb4",
            autocommit=True,
            init_command=f"SET time_zone = '+00:00', innodb_lock_wait_timeout = {lock_wait}",
            **timeouts,
        )

    def _translate(self, e: pymysql.err.MySQLError) -> NightwatchError:
        code = e.args[0] if e.args and isinstance(e.args[0], int) else 0
        text = str(e.args[1]) if len(e.args) > 1 else str(e)
        if code in _CREDENTIALS:
            return ConfigError(f"store.mysql: {text} (check store.mysql.{_CREDENTIALS[code]})")
        if code in _PRIVILEGES:
            return ConfigError(f"store.mysql: {text} (check store.mysql.user and store.mysql.database)")
        if code == 1049:
            return ConfigError(f"store.mysql: {text} (check store.mysql.database, or run `nightwatch db migrate`)")
        if code in _NO_SCHEMA:
            return ConfigError(f"store.mysql: {text} in {self.database!r} (run `nightwatch db migrate`)")
        return BackendUnavailableError(f"{self._where}: {text}")

    def _run(self, work: Callable[[Cursor], T]) -> T:
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                return work(cur)
        except pymysql.err.MySQLError as e:
            if broken(e) or isinstance(e, pymysql.err.OperationalError | pymysql.err.InternalError):
                raise self._translate(e) from e
            if e.args and e.args[0] in _NO_SCHEMA | _PRIVILEGES:
                raise self._translate(e) from e
            raise  # a bug in our SQL: let it show

    # -- TaskStore ----------------------------------------------------------------

    def migrate(self) -> None:
        lock = f"{MIGRATE_LOCK}:{self.database}"[:64]
        try:
            conn = self._connect(database=None, read_timeout=_MIGRATE_TIMEOUT + 10)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"CREATE DATABASE IF NOT EXISTS {_quote(self.database)} CHARACTER SET utf8mb4")
                    conn.select_db(self.database)
                    cur.execute("SELECT GET_LOCK(%s, %s)", (lock, _MIGRATE_TIMEOUT))
                    if cur.fetchone()[0] != 1:
                        raise BackendUnavailableError(f"{self._where}: another replica is still migrating")
                    self._migrate(cur)
                    cur.execute("SELECT RELEASE_LOCK(%s)", (lock,))
            finally:
                conn.close()  # also releases the lock if anything above failed
        except pymysql.err.MySQLError as e:
            raise self._translate(e) from e
        logger.debug("mysql schema at version %d in %s", SCHEMA_VERSION, self.database)

    @staticmethod
    def _migrate(cur: Cursor) -> None:
        cur.execute(_CREATE_TASK)
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.COLUMNS"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'task' AND COLUMN_NAME = 'message'"
        )
        if cur.fetchone()[0] == 0:  # the user's own table
            cur.execute("ALTER TABLE `task` ADD COLUMN `message` TEXT NULL COMMENT 'why the task failed'")
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE()"
            " AND TABLE_NAME = 'task' AND COLUMN_NAME = 'status' AND SEQ_IN_INDEX = 1"
        )
        if cur.fetchone()[0] == 0:
            cur.execute(f"CREATE INDEX `{INDEX_NAME}` ON `task` (`status`)")
        cur.execute(_CREATE_LEADER)
        cur.execute(_CREATE_SCHEMA)
        cur.execute(
            "INSERT IGNORE INTO nightwatch_schema (version, description) VALUES (%s, %s)",
            (SCHEMA_VERSION, SCHEMA_DESCRIPTION),
        )

    def add(self, task: NewTask) -> Task:
        def work(cur: Cursor) -> Task:
            try:
                cur.execute(
                    "INSERT INTO task (name, namespace, info, status, user_id) VALUES (%s, %s, %s, %s, %s)",
                    (task.name, task.namespace, task.info, str(task.status), task.user_id),
                )
            except pymysql.err.IntegrityError as e:
                if e.args and e.args[0] == 1062:
                    raise duplicate(task) from e
                raise
            cur.execute(f"SELECT {COLUMNS} FROM task WHERE id = %s", (cur.lastrowid,))
            return row_to_task(cur.fetchone())

        return self._run(work)

    def get(self, task_id: int) -> Task:
        def work(cur: Cursor) -> Any:
            cur.execute(f"SELECT {COLUMNS} FROM task WHERE id = %s", (task_id,))
            return cur.fetchone()

        row = self._run(work)
        if row is None:
            raise TaskNotFoundError(task_id)
        return row_to_task(row)

    def page(self, statuses: Sequence[str] | None, after_id: int, limit: int) -> list[Task]:
        if statuses is not None and not statuses:
            return []
        where, params = status_filter(statuses)

        def work(cur: Cursor) -> list[Task]:
            cur.execute(
                f"SELECT {COLUMNS} FROM task WHERE {where}id > %s ORDER BY id LIMIT %s",
                (*params, after_id, limit),
            )
            return [row_to_task(r) for r in cur.fetchall()]

        return self._run(work)

    def count_by_status(self) -> dict[str, int]:
        def work(cur: Cursor) -> dict[str, int]:
            cur.execute("SELECT status, COUNT(*) FROM task GROUP BY status")
            return {str(status): int(n) for status, n in cur.fetchall()}

        return self._run(work)

    def begin_term(self, name: str) -> int:
        def work(cur: Cursor) -> int:
            # LAST_INSERT_ID(expr) makes the new epoch this session's LAST_INSERT_ID.
            cur.execute(
                "INSERT INTO nightwatch_leader (name, epoch) VALUES (%s, LAST_INSERT_ID(1))"
                " ON DUPLICATE KEY UPDATE epoch = LAST_INSERT_ID(epoch + 1)",
                (name,),
            )
            cur.execute("SELECT LAST_INSERT_ID()")
            return int(cur.fetchone()[0])

        return self._run(work)

    def current_epoch(self, name: str) -> int:
        return self._run(lambda cur: self._epoch(cur, name))

    @staticmethod
    def _epoch(cur: Cursor, name: str) -> int:
        cur.execute("SELECT epoch FROM nightwatch_leader WHERE name = %s", (name,))
        row = cur.fetchone()
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
        checked = fence if self._fencing else None

        def work(cur: Cursor) -> bool:
            if checked is None:
                cur.execute(_PLAIN_UPDATE, (str(new), message, task_id, str(old)))
            else:
                cur.execute(
                    _FENCED_UPDATE, (checked.name, str(new), message, task_id, str(old), checked.epoch)
                )
            if cur.rowcount == 1:
                return True
            if checked is not None and self._epoch(cur, checked.name) != checked.epoch:
                raise FencedError(checked.name, checked.epoch)
            return False

        return self._run(work)

    def close(self) -> None:
        self._pool.close()
