"""What the revisions ask of the database they run on. Online, a revision looks at the
catalogue and adds only what is missing (the user's table may already have parts of it);
offline (``--sql``) it cannot look, so it writes ``IF NOT EXISTS`` forms instead."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def dialect() -> str:
    name = op.get_context().dialect.name
    return "mysql" if name == "mariadb" else name


def offline() -> bool:
    return bool(op.get_context().as_sql)


def has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name)


def columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def indexes(table: str) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(op.get_bind()).get_indexes(table)}


def invalid_postgres_index(name: str) -> bool:
    """A ``CREATE INDEX CONCURRENTLY`` that was interrupted leaves an invalid index behind,
    which ``IF NOT EXISTS`` would then take for done."""
    valid = op.get_bind().execute(sa.text(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = :n AND pg_table_is_visible(c.oid)"), {"n": name}).scalar()
    return valid is False
