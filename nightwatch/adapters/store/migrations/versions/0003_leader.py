"""nightwatch_leader: one epoch per lock name, for fenced writes. With it the schema equals
nightwatch 0.1's, whose databases are stamped here.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nightwatch.adapters.store.migrations._ddl import has_table, offline

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not offline() and has_table("nightwatch_leader"):
        return
    op.create_table(
        "nightwatch_leader",
        sa.Column("name", sa.String(191), primary_key=True),  # 191 characters: InnoDB's utf8mb4 key limit
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        if_not_exists=True if offline() else None,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("nightwatch_leader")
