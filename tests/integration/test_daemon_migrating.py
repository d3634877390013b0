"""``run`` migrates before its loop, outside the heartbeat: while it waits for another
replica's migration (the test holds the migration lock), /healthz stays 200 past the loop
stall limit, /readyz answers 503 "migrating", and SIGTERM ends the wait at once."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemons import NIGHTWATCH, free_port, mysql_store, wait_until
from sql_databases import mysql_database

from nightwatch.app.server import LOOP_STALL

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


@contextmanager
def held_sqlite_lock(path: Path) -> Iterator[None]:
    with open(str(path.resolve()) + ".migrate.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextmanager
def held_mysql_lock(server: Any, database: str) -> Iterator[None]:
    conn = server.connect(database)
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, 0)", (f"nightwatch_migrate:{database}",))
        assert cur.fetchone()[0] == 1
    try:
        yield
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, Any], Any]]:
    """(the store section, a context manager holding that store's migration lock)."""
    if request.param == "sqlite":
        db = tmp_path / "nightwatch.db"
        yield {"backend": "sqlite", "sqlite": {"path": str(db)}}, lambda: held_sqlite_lock(db)
        return
    url = request.getfixturevalue("mysql_url")
    with mysql_database(url) as (server, database):
        yield mysql_store(url, database), lambda: held_mysql_lock(server, database)


def start(tmp_path: Path, store: dict[str, Any], port: int) -> subprocess.Popen[bytes]:
    config = {
        "store": store,
        "lock": {"backend": "file", "file": {"path": str(tmp_path / "nw.lock")}},
        "jobs": {"backend": "fake"},
        "server": {"listen": f"127.0.0.1:{port}"},
        "log": {"level": "info", "format": "text"},
    }
    path = tmp_path / "nightwatch.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("NIGHTWATCH_CONFIG", "NIGHTWATCH_REPLICA")}
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - open for the daemon's life
    return subprocess.Popen([*NIGHTWATCH, "run", "--config", str(path)], stdout=log, stderr=log, env=env,
                            cwd=tmp_path, stdin=subprocess.DEVNULL)


def test_waiting_for_anothers_migration_the_daemon_is_alive_not_ready_and_sigterm_ends_the_wait(
        setup: tuple[dict[str, Any], Any], tmp_path: Path) -> None:
    store, held = setup
    port = free_port()
    with held():
        daemon = start(tmp_path, store, port)
        try:
            log = lambda: (tmp_path / "daemon.log").read_text()  # noqa: E731
            wait_until(lambda: get(port, "/readyz")[0] == 503 and "migrating" in get(port, "/readyz")[1], 20,
                       lambda: f"/readyz saying migrating\n{log()}")
            until = time.monotonic() + LOOP_STALL + 2  # longer than the loop-stall limit of /healthz
            while time.monotonic() < until:
                code, body = get(port, "/healthz")
                assert code == 200, f"/healthz {code} {body} while waiting for the migration\n{log()}"
                assert "migrating" in get(port, "/readyz")[1]
                time.sleep(0.5)
            assert "another nightwatch is migrating the schema" in log()
            signalled = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(10) == 0, log()
            assert time.monotonic() - signalled < 3, f"SIGTERM took {time.monotonic() - signalled:.1f}s\n{log()}"
            assert "Traceback" not in log()
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(5)


def test_once_the_other_migration_is_done_the_daemon_migrates_and_becomes_ready(
        setup: tuple[dict[str, Any], Any], tmp_path: Path) -> None:
    store, held = setup
    port = free_port()
    with held():
        daemon = start(tmp_path, store, port)
        try:
            wait_until(lambda: "migrating" in get(port, "/readyz")[1], 20, "/readyz saying migrating")
        except BaseException:
            daemon.kill()
            raise
    try:
        log = lambda: (tmp_path / "daemon.log").read_text()  # noqa: E731
        wait_until(lambda: (r := get(port, "/readyz"))[0] == 200 and r[1].startswith("leader"), 20,
                   lambda: f"/readyz 200 leader\n{log()}")
        assert "schema at 0007" in log()
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(10) == 0


@pytest.mark.postgres
def test_a_migration_behind_an_open_transaction_barely_blocks_the_users_writes(
        postgres_dsn: str, unique_name: str) -> None:
    """A report's transaction stays open on task while the daemon's schema phase runs for 15 s:
    each attempt at the exclusive lock queues the user's INSERTs for at most the lock timeout,
    and attempts back off, so the writer is blocked a small part of the time."""
    import threading

    import psycopg
    from sql_databases import SEED_DIR, postgres_database, postgres_execute, sql_statements

    from nightwatch.app.config import load_config
    from nightwatch.app.container import build_container

    with postgres_database(postgres_dsn) as dsn:
        postgres_execute(dsn, *sql_statements((SEED_DIR / "task-table.postgres.sql").read_text()))
        reader = psycopg.connect(dsn)  # a transaction, left open
        reader.execute("SELECT count(*) FROM task").fetchone()
        latencies: list[tuple[float, float]] = []  # (when it started, how long it took)
        done = threading.Event()

        def write() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for i in range(1000):
                    if done.is_set():
                        return
                    started = time.monotonic()
                    conn.execute("INSERT INTO task (name, namespace, info, status) VALUES (%s, 'default', '{}',"
                                 " 'Succeeded')", (f"w-{i}",))
                    latencies.append((started, time.monotonic() - started))
                    time.sleep(0.1)

        config = load_config(overrides={
            "store": {"backend": "postgres", "postgres": {"dsn": dsn}},
            "lock": {"backend": "memory", "name": unique_name, "retry_interval": "1s"},
            "jobs": {"backend": "fake"}, "server": {"listen": ""}})
        container = build_container(config)
        writer = threading.Thread(target=write)
        writer.start()
        try:
            time.sleep(0.5)
            started = time.monotonic()
            assert container.daemon().run_once(15.0) == 1  # never got the lock: the reader is still open
            took = time.monotonic() - started
        finally:
            done.set()
            writer.join(10)
            reader.close()
            container.shutdown_resources()
        end = started + took
        during = [t for at, t in latencies if started <= at < end]
        blocked = sum(min(at + t, end) - at for at, t in latencies if started <= at < end and t > 0.05)
        print(f"schema phase {took:.1f}s: {len(during)} INSERTs, worst {max(during):.2f}s, "
              f"blocked {blocked:.1f}s ({100 * blocked / took:.0f}% of the time)")
        assert max(during) <= 2.5
        assert blocked / took <= 0.35
