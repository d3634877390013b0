"""Task lifecycle: attempt, cancel request, retry delay and finish time on task; the
task_event history; an index on task (namespace, id) for the listings by namespace.

The columns are added without rewriting the user's table: ALGORITHM=INSTANT on MariaDB/MySQL
(LOCK=NONE where the server cannot do it instantly), and on PostgreSQL nullable columns and a
constant default (a catalogue change only). The index is built as 0004's is: CONCURRENTLY on
PostgreSQL, ALGORITHM=INPLACE, LOCK=NONE on MariaDB/MySQL.

Rows that finished before this revision get ``finished_at = updated_at``: without it, the
user's reset of such a row to ``Normal`` would look like a task never run, and attempt 1's
finished Job would be adopted (its old result copied back). The backfill runs after the
columns are committed, in batches of ``BACKFILL_BATCH`` ids, each statement committing on
its own, so no statement locks many of the user's rows or holds them for long. The
``--sql`` script has one plain UPDATE instead.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

from nightwatch.adapters.store.migrations import LOCK_TIMEOUT
from nightwatch.adapters.store.migrations._ddl import (
    columns,
    dialect,
    has_table,
    indexes,
    invalid_postgres_index,
    offline,
)

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NAMESPACE_INDEX = "idx_task_namespace_id"
EVENT_INDEXES = {"idx_task_event_task_id": ["task_id", "id"], "idx_task_event_at": ["at"]}
# name -> (MariaDB/MySQL, PostgreSQL, the column for SQLite)
COLUMNS: dict[str, tuple[str, str, Callable[[], sa.Column[Any]]]] = {
    "attempt": ("INT NOT NULL DEFAULT 1", "INTEGER NOT NULL DEFAULT 1",
                lambda: sa.Column("attempt", sa.Integer(), nullable=False, server_default="1")),
    "cancel_requested_at": ("DATETIME NULL", "TIMESTAMP WITHOUT TIME ZONE",
                            lambda: sa.Column("cancel_requested_at", sa.DateTime(), nullable=True)),
    "cancel_reason": ("TEXT NULL", "TEXT", lambda: sa.Column("cancel_reason", sa.Text(), nullable=True)),
    "retry_at": ("DATETIME NULL", "TIMESTAMP WITHOUT TIME ZONE",
                 lambda: sa.Column("retry_at", sa.DateTime(), nullable=True)),
    "finished_at": ("DATETIME NULL", "TIMESTAMP WITHOUT TIME ZONE",
                    lambda: sa.Column("finished_at", sa.DateTime(), nullable=True)),
}
_MYSQL_REFUSED = (1845, 1846)  # this ALGORITHM / LOCK is not supported for the operation
BACKFILL_BATCH = 5_000  # ids per UPDATE of the finished_at backfill
FINISHED = ("Succeeded", "Failed", "Cancelled")


def upgrade() -> None:
    d = dialect()
    _add_columns(d)
    _backfill_finished_at(d)
    _event_table()
    if d == "postgresql" and not offline() and invalid_postgres_index(NAMESPACE_INDEX):
        _drop_index(d)
    if offline() or NAMESPACE_INDEX not in indexes("task"):
        _create_index(d, if_not_exists=offline())


def _add_columns(d: str) -> None:
    missing = list(COLUMNS) if offline() else [c for c in COLUMNS if c not in columns("task")]
    if not missing:
        return
    guard = " IF NOT EXISTS" if offline() else ""
    if d == "mysql":
        adds = ", ".join(f"ADD COLUMN{guard} {c} {COLUMNS[c][0]}" for c in missing)
        if offline():
            op.execute(f"ALTER TABLE task {adds}, ALGORITHM=INSTANT")
            return
        try:
            op.execute(f"ALTER TABLE task {adds}, ALGORITHM=INSTANT")
        except sa.exc.DBAPIError as e:  # e.g. an old table format: in place, still not blocking writes
            if getattr(e.orig, "args", (None,))[0] not in _MYSQL_REFUSED:
                raise
            op.execute(f"ALTER TABLE task {adds}, ALGORITHM=INPLACE, LOCK=NONE")
    elif d == "postgresql":  # one statement: one short ACCESS EXCLUSIVE lock, no rewrite
        if not offline():  # 0004's index build, run just before on this connection, lifted the timeout
            op.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}s'")
        op.execute("ALTER TABLE task " + ", ".join(f"ADD COLUMN{guard} {c} {COLUMNS[c][1]}" for c in missing))
    else:
        for c in missing:
            op.add_column("task", COLUMNS[c][2]())


def _backfill_finished_at(d: str) -> None:
    """``finished_at = updated_at`` on the rows already finished (their status byte for byte:
    MariaDB/MySQL's collation would also match ``failed`` or ``Failed ``)."""
    finished = ", ".join(f"'{s}'" for s in FINISHED)
    where = f"status IN ({finished}) AND finished_at IS NULL"
    if d == "mysql":
        where += f" AND CAST(status AS BINARY) IN ({finished})"
    # updated_at set to itself: MariaDB/MySQL's ON UPDATE CURRENT_TIMESTAMP would move it
    update = "UPDATE task SET finished_at = updated_at" + (", updated_at = updated_at" if d == "mysql" else "")
    with op.get_context().autocommit_block():  # after the columns' commit: no lock of theirs is held
        if offline():
            op.execute(f"{update} WHERE {where}")
            return
        config = op.get_context().config
        batch = int(config.attributes.get("backfill_batch", BACKFILL_BATCH)) if config else BACKFILL_BATCH
        bind, after = op.get_bind(), None
        while True:  # keyset batches: gaps in the ids cost nothing
            start = "" if after is None else f" WHERE id > {int(after)}"
            last = bind.execute(sa.text(f"SELECT id FROM task{start} ORDER BY id"
                                        f" LIMIT 1 OFFSET {batch - 1}")).scalar()
            span = ([] if after is None else [f"id > {int(after)}"]) + ([] if last is None else [f"id <= {int(last)}"])
            bind.execute(sa.text(f"{update} WHERE {' AND '.join([*span, where])}"))
            if last is None:
                return
            after = last


def _event_table() -> None:
    if offline() or not has_table("task_event"):
        op.create_table(
            "task_event",
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                      autoincrement=True),
            sa.Column("task_id", sa.BigInteger(), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("at", sa.DateTime(), nullable=False),
            sa.Column("from_status", sa.String(45), nullable=True),
            sa.Column("to_status", sa.String(45), nullable=True),
            sa.Column("message", sa.Text(), nullable=True),
            sa.Column("epoch", sa.BigInteger(), nullable=True),
            sa.Column("replica", sa.String(191), nullable=False, server_default=""),
            if_not_exists=True if offline() else None,
            sqlite_autoincrement=True,
            mysql_engine="InnoDB",
            mysql_charset="utf8mb4",
        )
    found = set() if offline() else indexes("task_event")
    for name, cols in EVENT_INDEXES.items():  # a table of nightwatch's own: no online build needed
        if name not in found:
            op.create_index(name, "task_event", cols, if_not_exists=offline() or None)


def _create_index(d: str, *, if_not_exists: bool) -> None:
    guard = " IF NOT EXISTS" if if_not_exists else ""
    if d == "mysql":
        op.execute(f"ALTER TABLE task ADD INDEX{guard} {NAMESPACE_INDEX} (namespace, id),"
                   " ALGORITHM=INPLACE, LOCK=NONE")
    elif d == "postgresql":
        with op.get_context().autocommit_block():
            if not offline():  # as 0004: CONCURRENTLY's wait for open transactions blocks no writes
                op.execute("SET lock_timeout = 0")
            op.create_index(NAMESPACE_INDEX, "task", ["namespace", "id"], postgresql_concurrently=True,
                            if_not_exists=if_not_exists or None)
    else:
        op.create_index(NAMESPACE_INDEX, "task", ["namespace", "id"], if_not_exists=if_not_exists or None)


def _drop_index(d: str) -> None:
    with op.get_context().autocommit_block():
        op.drop_index(NAMESPACE_INDEX, table_name="task", postgresql_concurrently=True, if_exists=True)


def downgrade() -> None:
    raise NotImplementedError("forward only: the columns and task_event hold the tasks' history")
