"""The tables nightwatch reads and writes, as SQLAlchemy Core metadata.

``task`` is the user's table (the seed's DDL) plus nightwatch's ``message`` column and
its ``(status, id)`` index; ``nightwatch_leader`` holds one epoch per lock name. The
Alembic revisions create exactly this; the store only reads and writes it.
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
    UniqueConstraint("name", "namespace", name="uk_name_namespace"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)

# The launch and sync scans seek it: one status, ids in order.
STATUS_ID_INDEX = Index("idx_task_status_id", task.c.status, task.c.id)

nightwatch_leader = Table(
    "nightwatch_leader",
    metadata,
    Column("name", String(191), primary_key=True),  # 191 characters: InnoDB's utf8mb4 key limit
    Column("epoch", BigInteger, nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
)
