"""``db migrate --sql`` and ``db status`` on MariaDB and PostgreSQL, as a DBA uses them."""

from __future__ import annotations

import copy
import re

import pytest
from daemons import free_port
from schema_targets import Target, nightwatch, server_db  # noqa: F401

pytestmark = [pytest.mark.timeout(120)]


def test_the_sql_script_starts_at_the_databases_revision(server_db: Target) -> None:  # noqa: F811
    config = server_db.config()
    fresh = nightwatch(config, "db", "migrate", "--sql")
    assert fresh.returncode == 0, fresh.stderr
    assert "CREATE TABLE nightwatch_alembic_version" in fresh.stdout
    assert nightwatch(config, "db", "migrate").returncode == 0
    assert nightwatch(config, "db", "migrate", "--sql").stdout.strip() == (
        "-- the schema is at 0007 already: nothing to do")
    server_db.admin.execute("UPDATE nightwatch_alembic_version SET version_num = '0004'")
    status = nightwatch(config, "db", "status")
    assert (status.returncode, status.stdout.strip()) == (
        2, "schema at 0004, nightwatch needs 0007: run nightwatch db migrate")
    later = nightwatch(config, "db", "migrate", "--sql").stdout
    assert "0005" in later and "CREATE TABLE IF NOT EXISTS task_event" in later
    assert "ADD COLUMN IF NOT EXISTS attempt" in later and "idx_task_namespace_id" in later
    assert "idx_task_status_id" not in later and not re.search(r"nightwatch_leader\b", later)
    assert "CREATE TABLE IF NOT EXISTS nightwatch_replica" in later  # 0006
    assert "ADD COLUMN IF NOT EXISTS message" not in later
    server_db.admin.execute("UPDATE nightwatch_alembic_version SET version_num = '0003'")
    assert "idx_task_status_id" in nightwatch(config, "db", "migrate", "--sql").stdout


def test_the_sql_script_is_printed_even_when_the_database_cannot_be_reached(server_db: Target) -> None:  # noqa: F811
    store = copy.deepcopy(server_db.store)
    if server_db.kind == "mysql":
        store["mysql"]["port"] = free_port()
    else:
        store["postgres"]["dsn"] = f"postgresql://nobody@127.0.0.1:{free_port()}/nowhere"
    proc = nightwatch(server_db.config("away", store=store), "db", "migrate", "--sql")
    assert proc.returncode == 0, proc.stderr
    assert "CREATE TABLE IF NOT EXISTS task" in proc.stdout
    assert "the script starts from nothing" in proc.stderr and "Traceback" not in proc.stderr
