"""PostgreSQL only: a trigger on task that NOTIFYs ``nightwatch_task`` when a ``Normal`` row
is inserted, when a row is set (back) to ``Normal`` (the user's reset, a retry) and when a
cancel is requested, so the leader (LISTENing) launches or cancels at once instead of at its
next tick. The payload is empty: PostgreSQL folds identical notifications of one
transaction into one, so a bulk INSERT of 20,000 rows queues one, not 20,000 (the leader reads
the table, not the payload). ``CREATE OR REPLACE`` + ``DROP TRIGGER IF EXISTS``
make it safe to run again, online or offline (``--sql``). MariaDB/MySQL and SQLite: nothing
(the leader probes them instead, see adapters/store/notify.py).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

from nightwatch.adapters.store.migrations._ddl import dialect

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHANNEL = "nightwatch_task"
FUNCTION = "nightwatch_task_notify"
TRIGGER = "nightwatch_task_notify"

# No ";" ends a line inside the body: tools that split a script on ";\n" keep it whole.
CREATE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (TG_OP = 'INSERT' AND NEW.status = 'Normal')
     OR (TG_OP = 'UPDATE' AND NEW.status = 'Normal' AND OLD.status IS DISTINCT FROM 'Normal')
     OR (TG_OP = 'UPDATE' AND NEW.cancel_requested_at IS NOT NULL
         AND OLD.cancel_requested_at IS DISTINCT FROM NEW.cancel_requested_at)
  THEN PERFORM pg_notify('{CHANNEL}', ''); END IF; RETURN NULL
; END
$$"""


def upgrade() -> None:
    if dialect() != "postgresql":
        return
    op.execute(CREATE_FUNCTION)
    # AFTER ... FOR EACH ROW: the notification is sent at commit, never for a rolled-back write
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON task")
    op.execute(f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OF status, cancel_requested_at ON task"
               f" FOR EACH ROW EXECUTE FUNCTION {FUNCTION}()")


def downgrade() -> None:
    if dialect() != "postgresql":
        return
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON task")
    op.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")
