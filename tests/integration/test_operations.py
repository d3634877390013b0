"""Operating nightwatch (issue 5): probes, metrics and JSON logs of running daemons, read through
real HTTP; graceful shutdown with a slow run in flight; a wedged leader; a store out of reach.

The multi-replica tests run `nightwatch run` as subprocesses, as a user would, on real Redis and
PostgreSQL (a fresh database each), with jobs on the Kubernetes API stand-in or the fake gateway.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from k8s_standin import ApiStandIn, write_kubeconfig
from ops_cluster import (
    NIGHTWATCH,
    Replica,
    TcpProxy,
    http_get,
    install_slow_plugin,
    leader_and_standby,
    replicas,
    total,
    ts,
    value,
    wait_for,
)
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sql_databases import postgres_database

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.lock.memory import InMemoryLeaderLock, MemoryLockHub
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.config import load_config
from nightwatch.app.container import build_container
from nightwatch.app.daemon import Daemon
from nightwatch.app.elector import LeaderElector
from nightwatch.app.metrics import Metrics
from nightwatch.app.scheduler import Scheduler
from nightwatch.app.server import start_server

pytestmark = [pytest.mark.timeout(60)]

# Every metric issue 5 names, as /metrics spells them.
ISSUE_METRICS = {
    "nightwatch_is_leader", "nightwatch_leader_epoch", "nightwatch_leader_transitions_total",
    "nightwatch_tasks", "nightwatch_task_transitions_total", "nightwatch_watcher_runs_total",
    "nightwatch_watcher_run_seconds", "nightwatch_job_requests_total", "nightwatch_lock_renew_seconds",
    "nightwatch_fenced_writes_total",
}
SLEEP = '{"image": "busybox", "command": ["sleep"], "args": ["1"]}'
FALSE = '{"image": "busybox", "command": ["false"]}'


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[str]:
    with postgres_database(postgres_dsn) as dsn:
        yield dsn


def cluster_config(pg: str, redis_url: str, name: str, **sections: Any) -> dict[str, Any]:
    """Real Redis lock (own key prefix) and PostgreSQL store; short timings so tests are quick."""
    config: dict[str, Any] = {
        "store": {"backend": "postgres", "postgres": {"dsn": pg}},
        "lock": {"backend": "redis", "name": name, "ttl": "4s", "renew_interval": "500ms",
                 "renew_deadline": "3s", "retry_interval": "1s",
                 "redis": {"urls": [redis_url], "key_prefix": f"{name}:"}},
        "jobs": {"backend": "fake", "fake": {"default_duration": 1.0}},
        "watchers": {"task": {"spec": "@every 250ms", "count_interval": "250ms"}},  # the gauge follows each run
        "server": {"shutdown_timeout": "1s"},
    }
    config.update(sections)
    return config


def insert_tasks(dsn: str, rows: list[tuple[str, str]]) -> None:
    """As the user's web form does: plain INSERTs with status Normal."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        for name, info in rows:
            conn.execute("INSERT INTO task (name, namespace, info, status, user_id) "
                         "VALUES (%s, 'default', %s, 'Normal', 1)", (name, info))


# -- two replicas, one scripted run --------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_probes_metrics_logs_and_status_follow_a_scripted_run(
    tmp_path: Path, pg: str, redis_url: str, unique_name: str
) -> None:
    with ApiStandIn(start_after=0.2, finish_after=1.0) as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api)
        config = cluster_config(pg, redis_url, unique_name, jobs={
            "backend": "kubernetes", "allowed_namespaces": ["default"],
            "kubernetes": {"kubeconfig": str(kubeconfig), "context": "standin", "qps": 100, "burst": 100,
                           "request_timeout": "5s"},
        })
        a, b = Replica("ops-a", tmp_path, config), Replica("ops-b", tmp_path, config)
        with replicas(a, b):
            leader, standby = leader_and_standby(a, b)
            insert_tasks(pg, [("ok-1", SLEEP), ("ok-2", SLEEP), ("loser", FALSE), ("broken", '{"image": ')])

            def finished() -> Any:
                samples = leader.metrics()[1]
                tasks = {s: value(samples, "nightwatch_tasks", status=s)
                         for s in ("Normal", "Pending", "Running", "Succeeded", "Failed")}
                return samples if tasks == {"Normal": 0, "Pending": 0, "Running": 0, "Succeeded": 2,
                                            "Failed": 2} else None

            lead = wait_for(finished, 20, "the leader's nightwatch_tasks gauge to show every task done", 0.2)
            stand_names, stand = standby.metrics()
            lead_names = leader.metrics()[0]

            # every name of issue 5, on both replicas, parsed by prometheus_client's own parser
            assert lead_names >= ISSUE_METRICS, ISSUE_METRICS - lead_names
            assert stand_names >= ISSUE_METRICS, ISSUE_METRICS - stand_names

            # exactly one leader, with a term from the store and one acquisition
            assert (value(lead, "nightwatch_is_leader"), value(stand, "nightwatch_is_leader")) == (1, 0)
            epoch = value(lead, "nightwatch_leader_epoch")
            assert epoch >= 1
            assert value(lead, "nightwatch_leader_transitions_total", reason="acquired") == 1
            assert value(stand, "nightwatch_leader_transitions_total", reason="acquired") == 0
            assert value(lead, "nightwatch_lock_renew_seconds_count") >= 1

            # the tasks' way through the statuses, as counted by the leader
            moves = {(dict(ls)["from"], dict(ls)["to"]): v for (n, ls), v in lead.items()
                     if n == "nightwatch_task_transitions_total"}
            assert moves.get(("Normal", "Pending")) == 3 and moves.get(("Normal", "Failed")) == 1, moves
            assert total(lead, "nightwatch_task_transitions_total", to="Succeeded") == 2, moves
            assert total(lead, "nightwatch_task_transitions_total", to="Failed") == 2, moves
            assert total(lead, "nightwatch_task_transitions_total", **{"from": "Pending"}) == 3, moves
            assert total(stand, "nightwatch_task_transitions_total") == 0

            # watcher runs, and the calls the Kubernetes gateway made as the stand-in saw them
            ok_runs = value(lead, "nightwatch_watcher_runs_total", watcher="task", result="ok")
            assert ok_runs >= 3
            assert value(lead, "nightwatch_watcher_run_seconds_count", watcher="task") >= ok_runs
            assert value(lead, "nightwatch_job_requests_total", verb="create", code="201") == 3
            assert sum(api.created.values()) == 3
            assert value(lead, "nightwatch_job_requests_total", verb="list", code="200") >= 1
            assert total(stand, "nightwatch_job_requests_total") == 0
            assert value(lead, "nightwatch_fenced_writes_total") == 0
            assert value(stand, "nightwatch_fenced_writes_total") == 0

            # probes
            assert leader.get("/healthz") == (200, "ok\n") and standby.get("/healthz") == (200, "ok\n")
            ready_code, ready_body = leader.get("/readyz")
            assert ready_code == 200 and ready_body.startswith(f"leader (epoch {int(epoch)})"), ready_body
            ready_code, ready_body = standby.get("/readyz")
            assert ready_code == 200 and ready_body.startswith("standby"), ready_body
            assert leader.get("/nothing")[0] == 404

            # `nightwatch status --json` on the same store and lock names the leader and its epoch
            status = subprocess.run([*NIGHTWATCH, "status", "--json", "--config", str(a.config_path)],
                                    capture_output=True, text=True, timeout=30)
            assert status.returncode == 0, status.stderr
            doc = json.loads(status.stdout)
            assert (doc["leader"], doc["epoch"]) == (leader.name, epoch)
            assert {k: v for k, v in doc["tasks"].items() if v} == {"Succeeded": 2, "Failed": 2}

            # a standby told to stop goes at once; the leader hands over and exits 0 too
            sent = standby.signal(signal.SIGTERM)
            assert standby.wait(10) == 0
            stopped = standby.find(f"{standby.name}: stopped")
            assert len(stopped) == 1 and ts(stopped[0]) - sent < 1.0, ts(stopped[0]) - sent
            leader.signal(signal.SIGTERM)
            assert leader.wait(10) == 0

        # JSON logs: one object per line, each with ts, level, logger, msg and the replica
        for r in (a, b):
            records = r.records()
            assert records
            for rec in records:
                assert {"ts", "level", "logger", "msg"} <= rec.keys() and rec["replica"] == r.name, rec
        logged = Counter((rec["from"], rec["to"]) for rec in leader.records() if "from" in rec)
        assert logged == Counter({k: int(v) for k, v in moves.items()})  # every transition at INFO
        for rec in leader.records():
            if "from" in rec:
                assert rec["level"] == "info" and rec["task_id"] and rec["epoch"] == epoch, rec


# -- graceful shutdown ---------------------------------------------------------------------------


def slow_config(pg: str, redis_url: str, name: str, *, honour: bool, shutdown_timeout: str) -> dict[str, Any]:
    return cluster_config(
        pg, redis_url, name,
        watchers={"task": {"spec": "@every 1s"},
                  "slow": {"spec": "@every 1s", "seconds": 30, "honour_cancel": honour}},
        server={"shutdown_timeout": shutdown_timeout},
    )


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("honour", [True, False], ids=["run-honours-cancel", "run-ignores-cancel"])
def test_sigterm_cancels_the_run_in_flight_after_the_timeout_exits_0_and_a_standby_leads_at_once(
    tmp_path: Path, pg: str, redis_url: str, unique_name: str, honour: bool
) -> None:
    plugin = install_slow_plugin(tmp_path / "plugin")
    config = slow_config(pg, redis_url, unique_name, honour=honour, shutdown_timeout="1s")
    a = Replica("slow-a", tmp_path, config, pythonpath=plugin)
    b = Replica("slow-b", tmp_path, config, pythonpath=plugin)
    with replicas(a, b):
        leader, standby = leader_and_standby(a, b)
        wait_for(lambda: leader.find("slow run started"), 10, "the slow run to start on the leader")
        sent = leader.signal(signal.SIGTERM)
        assert leader.wait(10) == 0, leader.raw_log()
        exited = time.time()

        cancelled = leader.find("did not finish within 1.0s; cancelling it")
        assert len(cancelled) == 1, leader.raw_log()
        assert ts(cancelled[0]) - sent >= 0.95  # it had its shutdown_timeout to finish
        released = leader.find("released lock")
        assert len(released) == 1 and ts(released[0]) >= ts(cancelled[0])
        took_over = wait_for(lambda: standby.find(f"{standby.name}: became leader"), 5, "the standby to lead")
        # the release comes after the "cancelled" line and before the "released" one
        handover = ts(took_over[0]) - ts(cancelled[0])
        assert 0 <= handover <= 1.0, handover
        assert not leader.find("slow run finished")
        stopped = leader.find(f"{leader.name}: stopped")
        assert len(stopped) == 1 and ts(stopped[0]) - ts(released[0]) < 1.0
        if honour:
            assert leader.find("slow run cancelled")
        else:  # the run sleeps on: the process leaves it behind rather than hang
            assert leader.find("exiting although 1 thread(s) still run cancelled work")
        assert exited - sent < 10  # not the 30 s of the slow run

        samples = standby.metrics()[1]
        assert value(samples, "nightwatch_is_leader") == 1
        assert value(samples, "nightwatch_leader_transitions_total", reason="acquired") == 1


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
def test_a_second_signal_exits_at_once(tmp_path: Path, pg: str, redis_url: str, unique_name: str) -> None:
    plugin = install_slow_plugin(tmp_path / "plugin")
    config = slow_config(pg, redis_url, unique_name, honour=False, shutdown_timeout="20s")
    only = Replica("lone", tmp_path, config, pythonpath=plugin)
    with replicas(only):
        wait_for(lambda: only.find("slow run started"), 20, "the slow run to start")
        only.signal(signal.SIGTERM)
        wait_for(lambda: only.find("finishing the run in flight"), 5, "the graceful shutdown to begin")
        sent = only.signal(signal.SIGTERM)
        assert only.wait(5) == 128 + signal.SIGTERM
        assert time.time() - sent < 2.0  # not the 20 s shutdown_timeout
    assert only.find("second signal: exiting now")


# -- in-process daemons: a wedged leader, an unreachable store ------------------------------------


class WedgingLock(InMemoryLeaderLock):
    """A real in-memory lease whose renew() can be made to hang, as on a stuck network call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wedged = threading.Event()
        self.unwedge = threading.Event()

    def renew(self) -> float:
        if self.wedged.is_set():
            self.unwedge.wait()
        return super().renew()


def test_healthz_turns_500_on_a_leader_whose_renewals_hang() -> None:
    clock, lease = SystemClock(), 1.0
    store, metrics = InMemoryTaskStore(clock), Metrics()
    lock = WedgingLock("nightwatch", "wedged", lease, clock, MemoryLockHub())
    elector = LeaderElector(lock, store, clock, identity="wedged", renew_interval=0.2, renew_deadline=0.7,
                            retry_interval=0.1, metrics=metrics)
    daemon = Daemon(store, elector, Scheduler([], clock, metrics=metrics), retry_interval=0.1)
    server = start_server("127.0.0.1:0", daemon, metrics, lease)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: elector.is_leader, 5, "the daemon to lead")
        time.sleep(lease + 0.3)  # healthy: renewing for longer than a lease
        assert http_get(url + "/healthz") == (200, "ok\n")
        lock.wedged.set()
        wedged_at = time.monotonic()
        code, body = wait_for(lambda: (r := http_get(url + "/healthz"))[0] == 500 and r, lease + 2,
                              "/healthz to report the wedged leader", 0.1)
        assert time.monotonic() - wedged_at <= lease + 2
        assert "has not renewed its lease" in body and "wedged" in body, body
        assert http_get(url + "/readyz")[0] == 503
    finally:
        lock.unwedge.set()
        daemon.request_stop()
        thread.join(5)
        server.shutdown()
    assert not thread.is_alive()


@pytest.mark.postgres
def test_readyz_is_503_while_the_store_is_out_of_reach(pg: str, unique_name: str) -> None:
    params = conninfo_to_dict(pg)
    proxy = TcpProxy(str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)).mend()
    via_proxy = make_conninfo(pg, host="127.0.0.1", port=str(proxy.port))
    config = load_config(overrides={
        "store": {"backend": "postgres", "postgres": {"dsn": via_proxy, "connect_timeout": "1s",
                                                      "statement_timeout": "1s"}},
        "lock": {"backend": "memory", "name": unique_name, "identity": "cut-off", "ttl": "2s",
                 "renew_interval": "500ms", "renew_deadline": "1500ms", "retry_interval": "500ms"},
        "jobs": {"backend": "fake"},
        "server": {"listen": ""},
    })
    container = build_container(config)
    daemon = container.daemon()
    server = start_server("127.0.0.1:0", daemon, container.metrics(), config["lock"]["ttl"])
    url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: http_get(url)[1].startswith("leader"), 10, "a ready leader")
        proxy.cut()
        code, body = wait_for(lambda: (r := http_get(url))[0] == 503 and r, 5, "/readyz to fail", 0.1)
        assert body.startswith("store not reachable:"), body
        assert len(body.strip().splitlines()) == 1, body
        proxy.mend()
        wait_for(lambda: http_get(url)[0] == 200, 10, "/readyz to recover with the store", 0.2)
    finally:
        proxy.cut()
        daemon.request_stop()
        thread.join(10)
        server.shutdown()
        container.shutdown_resources()
    assert not thread.is_alive()
