"""nightwatch_replica (each replica's heartbeat: role, epoch, started_at, version) and
nightwatch_leader_change (one row per leadership term: epoch, holder, time), for the cluster
view of the API and the console. Tables of nightwatch's own: the user's table is untouched.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nightwatch.adapters.store.migrations._ddl import has_table, offline

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    guard = True if offline() else None
    if offline() or not has_table("nightwatch_replica"):
        op.create_table(
            "nightwatch_replica",
            sa.Column("lock_name", sa.String(191), primary_key=True),
            sa.Column("identity", sa.String(191), primary_key=True),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("epoch", sa.BigInteger(), nullable=True),
            sa.Column("started_at", sa.DateTime(), nullable=False),
            sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
            sa.Column("version", sa.String(45), nullable=False, server_default=""),
            if_not_exists=guard, mysql_engine="InnoDB", mysql_charset="utf8mb4",
        )
    if offline() or not has_table("nightwatch_leader_change"):
        op.create_table(
            "nightwatch_leader_change",
            sa.Column("lock_name", sa.String(191), primary_key=True),
            sa.Column("epoch", sa.BigInteger(), primary_key=True, autoincrement=False),
            sa.Column("holder", sa.String(191), nullable=False),
            sa.Column("at", sa.DateTime(), nullable=False),
            if_not_exists=guard, mysql_engine="InnoDB", mysql_charset="utf8mb4",
        )


def downgrade() -> None:
    op.drop_table("nightwatch_leader_change")
    op.drop_table("nightwatch_replica")
