"""Commands that only read never lock the user's table: while the user's system has a
transaction open on ``task``, ``nightwatch task list`` (and friends) run, and the user's
next INSERT goes through at once. The positive control runs the DDL 0.1 ran on every
command (``ALTER TABLE task ADD COLUMN IF NOT EXISTS``) and shows that it does block it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from schema_targets import Target, error_line, nightwatch, server_db  # noqa: F401

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

LOCK_WAIT = 3  # seconds the user's INSERT waits for a lock before giving up


@contextmanager
def open_reader(t: Target) -> Iterator[Any]:
    """The user's system in the middle of a transaction that has read ``task``."""
    conn = t.connect()
    cur = conn.cursor()
    cur.execute("BEGIN")
    cur.execute("SELECT COUNT(*) FROM task")
    cur.fetchall()
    try:
        yield conn
    finally:
        cur.execute("ROLLBACK")
        conn.close()


def users_insert(t: Target, name: str) -> float:
    """The user's web form inserting a task; seconds it took. Raises when it waited for a
    lock longer than LOCK_WAIT."""
    conn = t.connect()
    try:
        cur = conn.cursor()
        if t.kind == "mysql":
            cur.execute(f"SET SESSION lock_wait_timeout = {LOCK_WAIT}, innodb_lock_wait_timeout = {LOCK_WAIT}")
        else:
            cur.execute(f"SET lock_timeout = '{LOCK_WAIT}s'")
        started = time.monotonic()
        cur.execute("INSERT INTO task (name, namespace, info, status, user_id)"
                    f" VALUES ('{name}', 'default', '{{}}', 'Normal', 1)")
        return time.monotonic() - started
    finally:
        conn.close()


@pytest.mark.parametrize("schema", ["migrated", "behind"])
def test_read_only_commands_under_an_open_transaction_leave_the_users_inserts_unblocked(
        server_db: Target, schema: str) -> None:  # noqa: F811
    config = server_db.config()
    if schema == "migrated":
        assert nightwatch(config, "db", "migrate").returncode == 0
    with open_reader(server_db):
        for n, command in enumerate((["task", "list"], ["task", "get", "1"], ["status"], ["config", "show"])):
            # the command runs while the reader's transaction is open, the INSERT right after it
            results: dict[str, Any] = {}
            runner = threading.Thread(target=lambda r=results, c=command: r.update(
                proc=nightwatch(config, *c, timeout=30)))
            runner.start()
            time.sleep(0.3)
            took = users_insert(server_db, f"form-{n}")
            runner.join(30)
            proc = results["proc"]
            assert took < 1.0, f"{command}: the user's INSERT waited {took:.1f}s"
            if schema == "behind" and command != ["config", "show"]:
                assert proc.returncode == 2
                assert error_line(proc).endswith("nightwatch needs 0007: run nightwatch db migrate")
            elif command == ["task", "get", "1"]:
                assert proc.returncode == 1 and "no task with id 1" in proc.stderr.lower() or proc.returncode == 0
            else:
                assert proc.returncode == 0, proc.stderr
    if schema == "behind":  # and nothing was changed behind the user's back
        columns = {r[0] for r in server_db.admin.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'task'"
            + (f" AND table_schema = '{server_db.database}'" if server_db.kind == "mysql" else ""))}
        assert "message" not in columns


def test_positive_control_the_ddl_0_1_ran_on_every_command_blocks_the_users_insert(
        server_db: Target) -> None:  # noqa: F811
    if server_db.kind == "postgres":
        # 0.1 ran this on PostgreSQL before every command, the column there or not: it takes
        # ACCESS EXCLUSIVE first. (0.1 looked at MariaDB's catalogue first, so there it ran the
        # ALTER on the user's table as the seed made it, which is the case left as it is here.)
        assert nightwatch(server_db.config(), "db", "migrate").returncode == 0
    with open_reader(server_db):
        alter = server_db.connect()
        blocked = threading.Thread(
            target=lambda: alter.cursor().execute("ALTER TABLE task ADD COLUMN IF NOT EXISTS message TEXT"),
            daemon=True)
        blocked.start()
        time.sleep(0.5)
        assert blocked.is_alive(), "the ALTER did not wait for the open transaction"
        with pytest.raises(Exception, match="(?i)lock"):  # the INSERT queues behind the ALTER
            users_insert(server_db, "form")
    blocked.join(10)
    alter.close()
