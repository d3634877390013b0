#!/usr/bin/env python3
"""Failover benchmark: how long until another replica leads after the leader is killed.

Runs ``--replicas`` `nightwatch run` processes against a real Redis (a lock name and key prefix
of their own) and a real database (a fresh one, dropped afterwards), then, for ``--rounds``
rounds of each scenario, kills the current leader and measures the time from the kill (taken
just before ``os.kill``) to the ``became leader`` line of another replica's JSON log (same host,
same clock):

- crash:    SIGKILL -- the lease must expire (at most ttl after the last renew), then a standby's
            next retry takes it;
- graceful: SIGTERM -- the leader finishes its run in flight, releases the lock and wakes the
            standbys, which take over at once.

The killed replica is started again after each round, so there are always ``--replicas``. The
kill falls at a random point of the leader's renew cycle. Prints median, p95 and max per
scenario, with the machine and the settings.

    .venv/bin/python benchmarks/failover.py                       # 20 rounds each, postgres
    .venv/bin/python benchmarks/failover.py --store mysql --rounds 30 --replicas 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

NIGHTWATCH = [sys.executable, "-m", "nightwatch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    end = time.monotonic() + timeout
    while True:
        if value := predicate():
            return value
        if time.monotonic() >= end:
            raise SystemExit(f"failover: timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# -- the database: a fresh one per run -------------------------------------------------------


@contextlib.contextmanager
def fresh_database(kind: str, args: argparse.Namespace) -> Any:
    name = "nwbench_" + uuid.uuid4().hex[:10]
    if kind == "postgres":
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import make_conninfo

        with psycopg.connect(args.postgres_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            version = conn.execute("SHOW server_version").fetchone()[0]
        try:
            yield {"backend": "postgres", "postgres": {"dsn": make_conninfo(args.postgres_dsn, dbname=name)}}, \
                f"PostgreSQL {version}"
        finally:
            with psycopg.connect(args.postgres_dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    else:
        import pymysql

        url = urlsplit(args.mysql_url)
        server = {"host": url.hostname or "127.0.0.1", "port": url.port or 3306,
                  "user": url.username or "root", "password": url.password or ""}
        with pymysql.connect(**server, autocommit=True, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            cur.execute("SELECT VERSION()")
            version = cur.fetchone()[0]
        try:
            yield {"backend": "mysql", "mysql": {**server, "database": name}}, f"MySQL/MariaDB {version}"
        finally:
            with pymysql.connect(**server, autocommit=True, connect_timeout=5) as conn, conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


def redis_version(url: str) -> str:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        return f"Redis {client.info('server')['redis_version']}"
    finally:
        client.close()


# -- replicas --------------------------------------------------------------------------------


@dataclass
class Replica:
    name: str
    workdir: Path
    config: dict[str, Any]
    generation: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def start(self) -> None:
        self.generation += 1
        port = free_port()
        config = {**self.config, "server": {**self.config["server"], "listen": f"127.0.0.1:{port}"}}
        path = self.workdir / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.port = port
        self.log_path = self.workdir / f"{self.name}.{self.generation}.log"
        env = {**os.environ, "NIGHTWATCH_REPLICA": self.name}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*NIGHTWATCH, "run", "--config", str(path)], stdout=log,
                                         stderr=subprocess.STDOUT, env=env, cwd=self.workdir)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def elected_at(self) -> list[float]:
        """Wall-clock times of this process's ``became leader`` lines."""
        return [datetime.fromisoformat(r["ts"]).timestamp() for r in self.records()
                if "became leader" in r.get("msg", "")]

    def readyz(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as answer:
                return str(answer.read().decode())
        except OSError:
            return ""

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def current_leader(replicas: list[Replica]) -> Replica | None:
    """The live replica with the latest ``became leader`` line that still says it leads."""
    best: tuple[float, Replica] | None = None
    for r in replicas:
        if r.alive() and (times := r.elected_at()) and (best is None or times[-1] > best[0]):
            best = (times[-1], r)
    if best is None or not best[1].readyz().startswith("leader"):
        return None
    return best[1]


def one_round(replicas: list[Replica], signum: int, renew_interval: float, timeout: float) -> tuple[float, str]:
    leader = wait_for(lambda: current_leader(replicas), timeout, "a leader")
    others = [r for r in replicas if r is not leader]
    wait_for(lambda: all(r.readyz().startswith("standby") for r in others), timeout, "every standby ready")
    time.sleep(0.5 + random.uniform(0, renew_interval))  # anywhere in the leader's renew cycle
    before = {r.name: len(r.elected_at()) for r in others}
    assert leader.proc is not None
    killed_at = time.time()
    os.kill(leader.proc.pid, signum)

    def successor() -> tuple[float, str] | None:
        for r in others:
            times = r.elected_at()
            if len(times) > before[r.name]:
                return times[-1], r.name
        return None

    elected, name = wait_for(successor, timeout, "another replica to lead")
    code = leader.proc.wait(30)
    if signum == signal.SIGTERM and code != 0:
        raise SystemExit(f"failover: {leader.name} exited {code} on SIGTERM (see {leader.log_path})")
    leader.start()  # back to full strength for the next round
    return elected - killed_at, name


# -- report ----------------------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def summary(label: str, values: list[float]) -> str:
    p95 = statistics.quantiles(values, n=100, method="inclusive")[94] if len(values) > 1 else values[0]
    return (f"{label:9} n={len(values):<3} median {statistics.median(values):6.3f}s  p95 {p95:6.3f}s  "
            f"max {max(values):6.3f}s  (min {min(values):.3f}s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="rounds per scenario (default 20)")
    p.add_argument("--replicas", type=int, default=3, choices=(2, 3), help="replicas (default 3)")
    p.add_argument("--store", choices=("postgres", "mysql"), default="postgres")
    p.add_argument("--scenarios", default="crash,graceful", help="comma-separated: crash, graceful")
    p.add_argument("--ttl", type=float, default=10.0, help="lock.ttl, seconds (default 10)")
    p.add_argument("--renew-interval", type=float, default=2.0, help="lock.renew_interval (default 2)")
    p.add_argument("--renew-deadline", type=float, default=7.0, help="lock.renew_deadline (default 7)")
    p.add_argument("--retry-interval", type=float, default=1.0, help="lock.retry_interval (default 1)")
    p.add_argument("--shutdown-timeout", type=float, default=5.0, help="server.shutdown_timeout (default 5)")
    p.add_argument("--redis-url", default=os.environ.get("NIGHTWATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--postgres-dsn", default=os.environ.get(
        "NIGHTWATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--mysql-url", default=os.environ.get("NIGHTWATCH_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306"))
    p.add_argument("--seed", type=int, default=None, help="random seed for the kill phase")
    p.add_argument("--keep", action="store_true", help="keep the working directory (configs, logs)")
    args = p.parse_args(argv)
    random.seed(args.seed)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if unknown := set(scenarios) - {"crash", "graceful"}:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")

    lock_name = "nwbench-" + uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="nightwatch-failover-"))
    timeout = args.ttl + args.retry_interval + 15
    with fresh_database(args.store, args) as (store, db_version):
        config = {
            "store": store,
            "lock": {"backend": "redis", "name": lock_name, "ttl": f"{args.ttl}s",
                     "renew_interval": f"{args.renew_interval}s", "renew_deadline": f"{args.renew_deadline}s",
                     "retry_interval": f"{args.retry_interval}s",
                     "redis": {"urls": [args.redis_url], "key_prefix": f"{lock_name}:"}},
            "jobs": {"backend": "fake"},
            "server": {"shutdown_timeout": f"{args.shutdown_timeout}s"},
            "log": {"level": "info", "format": "json"},
        }
        replicas = [Replica(f"r{i + 1}", workdir, config) for i in range(args.replicas)]
        print(f"machine:  {os.cpu_count()} CPUs ({cpu_model()}), {platform.platform()}, "
              f"Python {platform.python_version()}")
        print(f"backends: {redis_version(args.redis_url)} (1 node), {db_version}")
        print(f"settings: {args.replicas} replicas, ttl {args.ttl:g}s, renew every {args.renew_interval:g}s, "
              f"renew deadline {args.renew_deadline:g}s, retry every {args.retry_interval:g}s, "
              f"shutdown timeout {args.shutdown_timeout:g}s, jobs: fake, watcher task @every 2s")
        print(f"command:  {' '.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])}")
        sys.stdout.flush()
        results: dict[str, list[float]] = {}
        try:
            for r in replicas:
                r.start()
            for scenario in scenarios:
                signum = signal.SIGKILL if scenario == "crash" else signal.SIGTERM
                times = results.setdefault(scenario, [])
                for n in range(args.rounds):
                    took, who = one_round(replicas, signum, args.renew_interval, timeout)
                    times.append(took)
                    print(f"  {scenario} round {n + 1:2}: {took:6.3f}s -> {who}", file=sys.stderr, flush=True)
        finally:
            for r in replicas:
                r.stop()
    print("time from the kill to another replica leading:")
    for scenario, times in results.items():
        print("  " + summary(scenario, times))
        print("  " + " ".join(f"{t:.2f}" for t in times))
    if args.keep:
        print(f"logs and configs: {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
