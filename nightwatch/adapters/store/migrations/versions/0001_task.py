"""The task table, as the user's own system creates it, when it does not exist yet.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nightwatch.adapters.store.migrations._ddl import dialect, has_table, offline

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not offline() and has_table("task"):
        return  # the user's table: nightwatch adds its parts in the next revisions
    on_update = " ON UPDATE CURRENT_TIMESTAMP" if dialect() == "mysql" else ""
    op.create_table(
        "task",
        # SQLite makes only an INTEGER PRIMARY KEY an alias of the rowid (and so autoincrementing).
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("name", sa.String(45), nullable=False, server_default=""),
        sa.Column("namespace", sa.String(45), nullable=False, server_default=""),
        sa.Column("info", sa.Text(), nullable=False),
        sa.Column("status", sa.String(45), nullable=False, server_default="Normal"),
        sa.Column("user_id", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(), nullable=False, server_default=sa.text("CURRENT_TIMESTAMP")),
        sa.Column("updated_at", sa.DateTime(), nullable=False,
                  server_default=sa.text("CURRENT_TIMESTAMP" + on_update)),
        sa.UniqueConstraint("name", "namespace", name="uk_name_namespace"),
        if_not_exists=True if offline() else None,
        sqlite_autoincrement=True,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    raise NotImplementedError("nightwatch never drops the task table: it holds the user's rows")
