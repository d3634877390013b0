"""The schema commands as a user runs them, on the embedded SQLite default: db migrate
[--sql], db status, read-only commands on a schema that is behind, store.migrate: off."""

from __future__ import annotations

import fcntl
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from nightwatch.app.config import default_config_text

NIGHTWATCH = [sys.executable, "-m", "nightwatch"]
SEED = Path(__file__).parent.parent / "contract" / "seed" / "task-table.sqlite.sql"
HEAD = "0007"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh directory with the embedded default (no HTTP port)."""
    (tmp_path / "config").mkdir()
    text = default_config_text()
    assert "listen: 127.0.0.1:9090" in text
    (tmp_path / "config" / "nightwatch.yaml").write_text(text.replace("listen: 127.0.0.1:9090", 'listen: ""'))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NIGHTWATCH_CONFIG", raising=False)
    return tmp_path


def set_migrate(workdir: Path, value: str) -> None:
    path = workdir / "config" / "nightwatch.yaml"
    assert "  migrate: auto " in path.read_text()
    path.write_text(path.read_text().replace("  migrate: auto ", f"  migrate: {value} "))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NIGHTWATCH, *args], capture_output=True, text=True, timeout=60)


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("nightwatch:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def users_table(db: Path) -> None:
    """The user's own table (the seed's DDL and rows), before nightwatch ran anything."""
    with closing(sqlite3.connect(db)) as conn:
        conn.executescript(SEED.read_text())


def tables_and_columns(db: Path) -> dict[str, list[str]]:
    with closing(sqlite3.connect(db)) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')"
                                             " AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}


def test_db_status_and_db_migrate(workdir: Path) -> None:
    users_table(workdir / "nightwatch.db")
    status = cli("db", "status")
    assert status.returncode == 2
    assert status.stdout.strip() == f"schema at none, nightwatch needs {HEAD}: run nightwatch db migrate"
    migrated = cli("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == f"schema at {HEAD}: up to date"
    assert cli("db", "status").stdout.strip() == f"schema at {HEAD}: up to date"
    assert "message" in tables_and_columns(workdir / "nightwatch.db")["task"]


def test_first_use_of_the_embedded_default_creates_the_file_and_its_schema(workdir: Path) -> None:
    listed = cli("task", "list")
    assert listed.returncode == 0, listed.stderr
    assert (workdir / "nightwatch.db").is_file()
    assert cli("db", "status").stdout.strip() == f"schema at {HEAD}: up to date"


@pytest.mark.parametrize("command", [["task", "list"], ["task", "get", "1"], ["status"],
                                     ["task", "submit", "--name", "x", "--namespace", "default", "--image", "i"]])
def test_a_command_on_a_schema_behind_says_so_in_one_line_exits_2_and_changes_nothing(
        workdir: Path, command: list[str]) -> None:
    db = workdir / "nightwatch.db"
    users_table(db)
    before = tables_and_columns(db)
    proc = cli(*command)
    assert proc.returncode == 2, proc.stderr
    assert one_line(proc) == f"nightwatch: schema at none, nightwatch needs {HEAD}: run nightwatch db migrate"
    assert tables_and_columns(db) == before


def test_config_show_never_opens_the_database(workdir: Path) -> None:
    assert cli("config", "show").returncode == 0
    assert not (workdir / "nightwatch.db").exists()


def test_db_migrate_sql_prints_the_ddl_without_running_it_and_a_dba_can_apply_it(workdir: Path) -> None:
    db = workdir / "nightwatch.db"
    users_table(db)
    before = tables_and_columns(db)
    proc = cli("db", "migrate", "--sql")
    assert proc.returncode == 0, proc.stderr
    assert "ALTER TABLE task ADD COLUMN message TEXT;" in proc.stdout
    assert "CREATE INDEX IF NOT EXISTS idx_task_status_id ON task (status, id);" in proc.stdout
    assert tables_and_columns(db) == before  # printed, not run
    with closing(sqlite3.connect(db)) as conn:
        conn.executescript(proc.stdout)
    assert cli("db", "status").stdout.strip() == f"schema at {HEAD}: up to date"
    assert cli("db", "migrate", "--sql").stdout.strip() == f"-- the schema is at {HEAD} already: nothing to do"


def test_store_migrate_off_refuses_to_start_while_behind_and_runs_once_migrated(workdir: Path) -> None:
    set_migrate(workdir, "off")
    users_table(workdir / "nightwatch.db")
    refused = cli("run", "--once", "--wait", "5")
    assert refused.returncode == 2
    assert one_line(refused) == (f"nightwatch: config error: store.migrate is off and the schema is at none, "
                                 f"nightwatch needs {HEAD}: run nightwatch db migrate")
    assert "message" not in tables_and_columns(workdir / "nightwatch.db")["task"]
    assert cli("db", "migrate").returncode == 0
    ran = cli("run", "--once", "--wait", "5")
    assert ran.returncode == 0, ran.stderr


def test_store_migrate_takes_auto_or_off(workdir: Path) -> None:
    set_migrate(workdir, "sometimes")
    proc = cli("run")
    assert proc.returncode == 2
    assert one_line(proc) == "nightwatch: config error: store.migrate: 'sometimes' is not one of auto | off"


def test_run_once_upgrades_the_users_table_itself(workdir: Path) -> None:
    users_table(workdir / "nightwatch.db")
    ran = cli("run", "--once", "--wait", "5")
    assert ran.returncode == 0, ran.stderr
    assert cli("db", "status").stdout.strip() == f"schema at {HEAD}: up to date"


def test_run_once_gives_up_at_its_wait_while_another_process_holds_the_migration_lock(workdir: Path) -> None:
    users_table(workdir / "nightwatch.db")
    with open(workdir / "nightwatch.db.migrate.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another nightwatch migrating, for ever
        started = time.monotonic()
        try:
            ran = subprocess.run([*NIGHTWATCH, "run", "--once", "--wait", "3"], capture_output=True, text=True,
                                 timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("run --once --wait 3 was still waiting for the migration lock after 20s")
        took = time.monotonic() - started
    assert ran.returncode == 1, ran.stderr
    errors = [line for line in ran.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and errors[0].endswith("the schema could not be checked or upgraded within 3s"), ran.stderr
    assert "Traceback" not in ran.stderr, ran.stderr
    assert took < 10, took
