"""The tables nightwatch reads and writes, as SQLAlchemy Core metadata.

``task`` is the user's table (the seed's DDL) plus nightwatch's columns (``message``, the
lifecycle's ``attempt``, cancel request, ``retry_at``, ``finished_at``) and its ``(status, id)``
and ``(namespace, id)`` indexes; ``nightwatch_leader`` holds one epoch per lock name;
``task_event`` one row per applied transition. The Alembic revisions create exactly this;
the store only reads and writes it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from nightwatch.domain.constants import EVENT_TABLE
from nightwatch.domain.model import VARCHAR_COLUMNS

# SQLite makes only an INTEGER PRIMARY KEY an alias of the rowid (and so autoincrementing).
ID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

task = Table(
    "task",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("name", String(VARCHAR_COLUMNS["name"]), nullable=False, server_default=""),
    Column("namespace", String(VARCHAR_COLUMNS["namespace"]), nullable=False, server_default=""),
    Column("info", Text, nullable=False),
    Column("status", String(VARCHAR_COLUMNS["status"]), nullable=False, server_default="Normal"),
    Column("user_id", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
    Column("updated_at", DateTime, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
    Column("message", Text, nullable=True),  # nightwatch's: why a task failed
    Column("attempt", Integer, nullable=False, server_default="1"),  # 0005 on: the lifecycle
    Column("cancel_requested_at", DateTime, nullable=True),
    Column("cancel_reason", Text, nullable=True),
    Column("retry_at", DateTime, nullable=True),
    Column("finished_at", DateTime, nullable=True),
    UniqueConstraint("name", "namespace", name="uk_name_namespace"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# The launch and sync scans seek it: one status, ids in order.
STATUS_ID_INDEX = Index("idx_task_status_id", task.c.status, task.c.id)
# The listings by namespace, newest first.
NAMESPACE_ID_INDEX = Index("idx_task_namespace_id", task.c.namespace, task.c.id)

nightwatch_leader = Table(
    "nightwatch_leader",
    metadata,
    Column("name", String(191), primary_key=True),  # 191 characters: InnoDB's utf8mb4 key limit
    Column("epoch", BigInteger, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

task_event = Table(
    EVENT_TABLE,
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("task_id", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", DateTime, nullable=False),
    Column("from_status", String(VARCHAR_COLUMNS["status"]), nullable=True),
    Column("to_status", String(VARCHAR_COLUMNS["status"]), nullable=True),
    Column("message", Text, nullable=True),
    Column("epoch", BigInteger, nullable=True),
    Column("replica", String(191), nullable=False, server_default=""),
    Index("idx_task_event_task_id", "task_id", "id"),
    Index("idx_task_event_at", "at"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)
