"""PostgreSQL turns read-only under a running daemon (a standby after a failover, simulated
with ``default_transaction_read_only`` and every session terminated): the daemon stays up,
logs one warning per retry (not one per task, never a traceback), and leads again -- tasks
reach their terminal status -- once the database is writable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from daemons import Cluster, SqlTasks, cluster, fast_config, postgres_store, wait_until
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from sql_databases import postgres_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(180)]

RETRY = 0.3  # the retry interval and the watcher's period in fast_config
TASKS = 20


def set_read_only(admin_dsn: str, database: str, on: bool) -> None:
    """As a failover would: new sessions of ``database`` are read-only (or writable again) and
    the present ones are gone."""
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = {}").format(
            sql.Identifier(database), sql.SQL("on" if on else "off")))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = %s AND pid <> pg_backend_pid()", (database,))


@pytest.fixture
def running(postgres_dsn: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[Cluster, SqlTasks, str]]:
    """A daemon's cluster on a database of its own holding the seed's table; the tasks; its DSN."""
    with postgres_database(postgres_dsn) as dsn:
        tasks = SqlTasks.postgres(dsn)
        tasks.create_table()
        name = f"nwt-ro-{tmp_path.name[-12:]}"
        with cluster(tmp_path, fast_config(postgres_store(dsn), redis_url, name, tmp_path)) as c:
            yield c, tasks, dsn


def test_postgres_read_only_under_a_running_daemon(running: tuple[Cluster, SqlTasks, str],
                                                   postgres_dsn: str) -> None:
    c, tasks, dsn = running
    database = str(conninfo_to_dict(dsn)["dbname"])
    replica = c.start("r1")
    c.leader()
    first = tasks.insert(3, prefix="before")
    wait_until(lambda: all(tasks.statuses()[i] in ("Succeeded", "Failed") for i in first), 30,
               lambda: f"the first tasks to finish\n{c.tails()}")
    epoch_before = replica.epoch() or 0

    set_read_only(postgres_dsn, database, True)
    # the user's system still writes (its session overrides the default): tasks nightwatch cannot take on now
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
    for i in range(TASKS):
        conn.execute("INSERT INTO task (name, namespace, info, status, user_id) VALUES (%s, 'default', %s,"
                     " 'Normal', 1)", (f"during-{i:02d}", '{"image": "busybox", "command": ["true"]}'))
    conn.close()
    seen = len(replica.events())
    window = 4.0
    time.sleep(window)
    assert replica.proc.poll() is None, c.tails()
    during = replica.events()[seen:]
    warnings = [e for e in during if e["level"] == "warning"]
    assert not [e for e in during if e["level"] in ("error", "critical") or "exc" in e], c.tails()
    assert any("read-only" in e["msg"] for e in warnings), c.tails()
    assert 2 <= len(warnings) <= window / RETRY + 3, "\n".join(e["msg"] for e in warnings)
    assert all(tasks.statuses()[i] == "Normal" for i in range(max(first) + 1, max(first) + 1 + TASKS)
               if i in tasks.statuses())

    set_read_only(postgres_dsn, database, False)
    wait_until(lambda: not tasks.unfinished(), 30, lambda: f"every task to finish once writable\n{c.tails()}")
    assert replica.proc.poll() is None
    assert (replica.epoch() or 0) >= epoch_before
    assert "Traceback" not in replica.text()
