"""Alembic's environment, driven from ``migrations.upgrade`` / ``offline_sql``: the
connection (online) or the dialect name (offline) comes in ``config.attributes``; there is
no alembic.ini and no logging set-up here (the CLI configures logging)."""

from __future__ import annotations

import logging
from typing import Any

from alembic import context

from nightwatch.adapters.store.migrations import VERSION_TABLE

logger = logging.getLogger("nightwatch.adapters.store.migrations")


def _applied(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
    if not ctx.as_sql:
        logger.info("schema: %s %s (%s)", "stamped" if step.is_stamp else "applied", step.up_revision_id,
                    step.up_revision.doc.splitlines()[0] if step.up_revision else "")


config = context.config
options: dict[str, Any] = {"version_table": VERSION_TABLE, "transaction_per_migration": True,
                           "on_version_apply": _applied}

if context.is_offline_mode():
    context.configure(dialect_name=config.attributes["dialect_name"], literal_binds=True, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    context.configure(connection=config.attributes["connection"], **options)
    with context.begin_transaction():
        context.run_migrations()
