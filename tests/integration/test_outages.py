"""``nightwatch run`` against backends that are wrong, away at start, or restarted under it.

Bad configuration stops start-up with one line; a backend that is merely away keeps the
daemon up as a standby that warns once per retry and gets to work when the server is back.
Servers that a test stops or restarts are its own (a private PostgreSQL cluster, a private
MariaDB, a private redis-server on a free port): the shared ones on the standard ports are
never touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import yaml
from daemons import (
    NIGHTWATCH,
    PrivateMariaDB,
    PrivatePostgres,
    Replica,
    SqlTasks,
    cluster,
    fast_config,
    free_port,
    launching,
    mysql_store,
    postgres_store,
    unavailable,
    wait_until,
)
from sql_databases import MySQLServer, mysql_database, postgres_database

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]
RETRY = 0.5  # lock.retry_interval in these tests


# -- bad input: one line, exit non-zero ---------------------------------------------------------

def run_to_exit(tmp_path, config):
    path = tmp_path / "nightwatch.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([*NIGHTWATCH, "run", "--config", str(path)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def the_error_line(stderr):
    """The one stderr line that is not a log record; there must be exactly one, and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert not [r for r in records if r["level"] in ("error", "critical") or "exc" in r], stderr
    others = [line for line in lines if not line.startswith("{")]
    assert len(others) == 1, stderr
    return others[0]


@pytest.fixture
def base(tmp_path, redis_url, unique_name):
    """A good config to spoil one key of (its store section is replaced by each test)."""
    return fast_config({}, redis_url, unique_name, tmp_path)


@pytest.mark.postgres
def test_a_malformed_postgres_dsn_stops_start_up_with_one_line(base, tmp_path):
    base["store"] = postgres_store("postgresql://127.0.0.1:fivefourthreetwo/nightwatch")
    proc = run_to_exit(tmp_path, base)
    assert proc.returncode != 0
    line = the_error_line(proc.stderr)
    assert line.startswith("nightwatch: ") and "store.postgres" in line and "dsn" in line, line


@pytest.mark.postgres
def test_an_unknown_postgres_role_stops_start_up_with_one_line(base, tmp_path, postgres_dsn, unique_name):
    with postgres_database(postgres_dsn) as dsn:
        base["store"] = postgres_store(f"{dsn} user={unique_name}")
        proc = run_to_exit(tmp_path, base)
    assert proc.returncode != 0
    line = the_error_line(proc.stderr)
    assert "store.postgres" in line and "dsn" in line and unique_name in line, line


@pytest.mark.mysql
def test_wrong_mysql_credentials_stop_start_up_with_one_line(base, tmp_path, mysql_url):
    with mysql_database(mysql_url) as (server, name):
        base["store"] = mysql_store(mysql_url, name, password=server.password + "-not-it")
        proc = run_to_exit(tmp_path, base)
    assert proc.returncode != 0
    line = the_error_line(proc.stderr)
    assert "store.mysql" in line and "store.mysql.password" in line and "Access denied" in line, line


@pytest.mark.mysql
def test_a_malformed_redis_url_stops_start_up_with_one_line(base, tmp_path, mysql_url):
    with mysql_database(mysql_url) as (_, name):
        base["store"] = mysql_store(mysql_url, name)
        base["lock"]["redis"]["urls"] = ["redis://127.0.0.1:sixthreesevennine/0"]
        proc = run_to_exit(tmp_path, base)
    assert proc.returncode != 0
    line = the_error_line(proc.stderr)
    assert "lock.redis.urls" in line and "sixthreesevennine" in line, line


# -- a backend away at start: a patient standby ---------------------------------------------------

def warnings_between(replica: Replica, start: float, end: float) -> list[dict]:
    return [e for e in replica.events() if e.get("level") == "warning" and start <= e.get("t", 0) < end]


def assert_one_warning_per_retry(replica: Replica, about: str, window: float) -> None:
    """Over ``window`` seconds after its first warning: one warning per retry interval, each a
    single line about ``about``, and no traceback."""
    first = wait_until(lambda: warnings_between(replica, 0, float("inf")), 20,
                       f"a first warning\n{replica.text()[-2000:]}")[0]["t"]
    time.sleep(max(0.0, first + window + 0.2 - time.time()))
    seen = warnings_between(replica, first, first + window)
    expected = window / RETRY
    assert expected - 1.5 <= len(seen) <= expected + 1.5, [e["msg"] for e in seen]
    assert all(about in e["msg"] for e in seen), [e["msg"] for e in seen]
    assert not [e for e in replica.events() if "exc" in e or e.get("level") == "error"], replica.text()[-3000:]
    assert "Traceback" not in replica.text()


@pytest.mark.postgres
def test_redis_down_at_start_keeps_a_standby_that_starts_work_when_redis_comes_back(
        postgres_dsn, unique_name, tmp_path):
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        unavailable("redis-server (to start Redis late)")
    port = free_port()
    with postgres_database(postgres_dsn) as dsn:
        config = fast_config(postgres_store(dsn), f"redis://127.0.0.1:{port}/0", unique_name, tmp_path)
        config["lock"]["retry_interval"] = f"{RETRY}s"
        tasks = SqlTasks.postgres(dsn)
        tasks.create_table()
        tasks.insert(20)
        redis = None
        try:
            with cluster(tmp_path, config) as c:
                replica = c.start("r1")
                assert_one_warning_per_retry(replica, "lock", window=3.0)
                assert replica.proc.poll() is None and not replica.elections()
                assert tasks.counts() == {"Normal": 20}
                redis = subprocess.Popen(
                    [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                c.leader(timeout=10)
                wait_until(lambda: tasks.terminal() == 20, 20, lambda: f"the tasks done\n{c.tails()}")
                assert tasks.counts() == {"Succeeded": 20}
        finally:
            if redis is not None:
                redis.terminate()
                redis.wait(10)


# -- a database restarted under running daemons ------------------------------------------------

class PrivateDatabase:
    """A private server (created, not started) with what a test needs of it: the store config,
    the user's view of the task table, and start/stop. The whole server is the test's own; the
    daemon's database is ``nightwatch`` on MariaDB (the store creates it) and ``postgres``."""

    def __init__(self, kind):
        if kind == "postgres":
            if PrivatePostgres.bindir() is None:
                unavailable("PostgreSQL server binaries (initdb, pg_ctl) for a private server")
            self.server = PrivatePostgres()
            self.store = postgres_store(self.server.dsn)
            self.tasks = SqlTasks.postgres(self.server.dsn)
        else:
            if not PrivateMariaDB.available():
                unavailable("mariadbd and mariadb-install-db for a private MariaDB server")
            self.server = PrivateMariaDB()
            self.store = mysql_store(self.server.url, "nightwatch")
            self.tasks = SqlTasks.mysql(MySQLServer.from_url(self.server.url), "nightwatch")
        self.kind = kind

    def start(self):
        self.server.start()
        if self.kind == "mysql":
            MySQLServer.from_url(self.server.url).execute("mysql", "CREATE DATABASE IF NOT EXISTS nightwatch")


@pytest.fixture(params=[pytest.param("mysql", marks=pytest.mark.mysql),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def private_database(request):
    db = PrivateDatabase(request.param)
    try:
        yield db
    finally:
        db.server.close()


def test_a_database_down_at_start_keeps_a_standby_that_starts_work_when_it_comes_back(
        private_database, redis_url, unique_name, tmp_path):
    config = fast_config(private_database.store, redis_url, unique_name, tmp_path)
    config["lock"]["retry_interval"] = f"{RETRY}s"
    with cluster(tmp_path, config) as c:
        replica = c.start("r1")
        assert_one_warning_per_retry(replica, "store", window=3.0)
        assert replica.proc.poll() is None and not replica.elections()
        # The server alone: the daemon creates its database itself (creating it from here too
        # raced with the daemon's first connection, which then met "Unknown database").
        private_database.server.start()
        c.leader(timeout=10)
        tasks = private_database.tasks
        tasks.insert(20)
        wait_until(lambda: tasks.terminal() == 20, 20, lambda: f"the tasks done\n{c.tails()}")
        assert tasks.counts() == {"Succeeded": 20}


def test_a_database_restarted_under_running_daemons_loses_no_task_and_launches_none_twice(
        private_database, redis_url, unique_name, tmp_path):
    private_database.start()
    db, tasks = private_database.server, private_database.tasks
    tasks.create_table()
    config = fast_config(private_database.store, redis_url, unique_name, tmp_path)
    with cluster(tmp_path, config) as c:
        c.start_many(2)
        leader = c.leader(timeout=20)
        tasks.insert(150)
        wait_until(lambda: tasks.terminal() >= 100, 20, lambda: f"a first wave under way\n{c.tails()}")
        tasks.insert(150, start=151)
        wait_until(lambda: launching(tasks, c), 10, "the leader launching the second wave", interval=0.005)
        down = time.time()  # the outage starts with the stop: a server shutting down already refuses work
        db.stop()  # mid-launch: Jobs created, their status writes about to fail
        time.sleep(3)
        db.start()
        up = time.time()
        wait_until(lambda: tasks.try_terminal() == 300, 40, lambda: f"all tasks terminal\n{c.tails()}")
        assert tasks.counts() == {"Succeeded": 300}, tasks.failed()[:5]
        launches = c.launches()
        assert sorted(launches) == sorted(tasks.statuses()), "every task launched"
        assert {i: n for i, n in launches.items() if n != 1} == {}, "none twice"
        assert all(r.proc.poll() is None for r in c.replicas), c.tails()  # recovered by themselves
        # Writes in flight when the server went away wait out their read timeout (5 s here) before
        # their batch reports the outage: it is noticed, but not necessarily before the server is back.
        felt = [e for e in leader.events() if e.get("level") == "warning" and down <= e["t"] <= up + 6]
        assert felt, f"the outage went unnoticed?\n{leader.text()[-3000:]}"
        recovered = [w for w in leader.writes() if w["t"] > up]
        assert recovered, "the leader wrote again after the restart"
        assert "Traceback" not in leader.text(), leader.text()[-3000:]
