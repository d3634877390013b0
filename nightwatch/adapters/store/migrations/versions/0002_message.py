"""task.message: why nightwatch failed a task (nullable, so the user's inserts need not name it).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from nightwatch.adapters.store.migrations._ddl import columns, dialect, offline

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    d = dialect()
    if offline():
        if d == "mysql":  # MariaDB's IF NOT EXISTS; LOCK=NONE: refuse rather than block the user's writes
            op.execute("ALTER TABLE task ADD COLUMN IF NOT EXISTS message TEXT NULL, LOCK=NONE")
        elif d == "postgresql":
            op.execute("ALTER TABLE task ADD COLUMN IF NOT EXISTS message TEXT")
        else:
            op.add_column("task", sa.Column("message", sa.Text(), nullable=True))
        return
    if "message" in columns("task"):
        return
    if d == "mysql":  # the server picks INSTANT where it can; LOCK=NONE keeps the user's writes going
        op.execute("ALTER TABLE task ADD COLUMN message TEXT NULL, LOCK=NONE")
    else:
        op.add_column("task", sa.Column("message", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("task", "message")
