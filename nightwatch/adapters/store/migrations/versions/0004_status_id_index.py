"""An index on task (status, id) for the launch and sync scans; it replaces 0.1's (status).

Built without blocking the user's writes: CONCURRENTLY on PostgreSQL (outside a
transaction), ALGORITHM=INPLACE, LOCK=NONE on MariaDB/MySQL.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

from nightwatch.adapters.store.migrations._ddl import dialect, indexes, invalid_postgres_index, offline

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NEW = "idx_task_status_id"
OLD = "idx_task_status"  # nightwatch 0.1's


def upgrade() -> None:
    d = dialect()
    if offline():
        _create(d, if_not_exists=True)
        _drop(d, if_exists=True)
        return
    if d == "postgresql" and invalid_postgres_index(NEW):
        _drop(d, if_exists=True, name=NEW)
    found = indexes("task")
    if NEW not in found:
        _create(d, if_not_exists=False)
    if OLD in found:
        _drop(d, if_exists=False)


def _create(d: str, *, if_not_exists: bool) -> None:
    guard = " IF NOT EXISTS" if if_not_exists else ""
    if d == "mysql":
        op.execute(f"ALTER TABLE task ADD INDEX{guard} {NEW} (status, id), ALGORITHM=INPLACE, LOCK=NONE")
    elif d == "postgresql":
        with op.get_context().autocommit_block():
            if not offline():
                # CONCURRENTLY waits for the transactions open on task to end, without blocking
                # anyone's writes meanwhile: the migration's lock_timeout must not cut that wait short.
                op.execute("SET lock_timeout = 0")
            op.create_index(NEW, "task", ["status", "id"], postgresql_concurrently=True,
                            if_not_exists=if_not_exists or None)
    else:
        op.create_index(NEW, "task", ["status", "id"], if_not_exists=if_not_exists or None)


def _drop(d: str, *, if_exists: bool, name: str = OLD) -> None:
    guard = " IF EXISTS" if if_exists else ""
    if d == "mysql":
        op.execute(f"ALTER TABLE task DROP INDEX{guard} {name}, ALGORITHM=INPLACE, LOCK=NONE")
    elif d == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(name, table_name="task", postgresql_concurrently=True, if_exists=if_exists or None)
    else:
        op.drop_index(name, table_name="task", if_exists=if_exists or None)


def downgrade() -> None:
    op.drop_index(NEW, table_name="task")
