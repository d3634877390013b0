#!/usr/bin/env python3
"""Latency benchmark: how soon nightwatch reacts to a new row and to a finished Job.

For each store (PostgreSQL with LISTEN/NOTIFY, MariaDB and SQLite with the index probe) a
fresh database is migrated and a real leader (the container's daemon, in this process, file
lock, ``watchers.task.spec: @every 2s`` as shipped) is started, for each of ``--jobs``:

- ``local``: local Jobs (latency) and fake Jobs (idle, burst);
- ``kubernetes``: ``jobs.backend: kubernetes`` (the shipped qps/burst) against the API stand-in
  of the tests, in this process (benchmarks/standin_jobs.py), whose ticker moves Jobs on a time
  rule; its own CPU is subtracted from the leader's; one warm-up task (not measured) first, as
  the first launch also sets up the API client (about 1 s).

Then:

- ``--tasks`` rows are inserted one at a time, a few tens of ms apart, each a short Job
  (local: ``sleep 0.3``; stand-in: running after 0.1 s, complete after 0.3 s): row inserted ->
  Job created (local: gateway.launch returned; stand-in: it stored the POSTed Job), and Job
  finished (local: mtime of its ``exit`` file; stand-in: its ticker marked it Complete) -> row
  terminal (the status write returned);
- idle: ``--idle-in-flight`` long Jobs in flight and nothing changing, for ``--idle-seconds``:
  database statements (and, on the stand-in, API calls) per watcher run and the leader's CPU
  per second;
- burst: ``--burst`` rows inserted at once (one INSERT ... SELECT) with Jobs that end after
  0.5 s: time to the first terminal row and to the last.

Prints p50 / p95 / max.

    .venv/bin/python benchmarks/latency.py                                  # all three stores, both
    .venv/bin/python benchmarks/latency.py --stores sqlite --jobs kubernetes --tasks 200 --burst 2000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402
import standin_jobs  # noqa: E402  (benchmarks/, the script's directory)

from nightwatch.app.config import load_config  # noqa: E402
from nightwatch.app.container import build_container  # noqa: E402
from tests.sql_databases import mysql_database, postgres_database  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = {"Succeeded", "Failed", "Cancelled"}
LAUNCH_PER_RUN = [500]  # --launch-per-run


def pct(values: list[float]) -> str:
    if not values:
        return "n/a"
    ms = sorted(v * 1000 for v in values)
    p = lambda q: ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]  # noqa: E731
    return f"p50 {p(0.5):7.1f} ms  p95 {p(0.95):7.1f} ms  max {ms[-1]:7.1f} ms  (n={len(ms)})"


@contextmanager
def store_config(name: str, tmp: Path) -> Iterator[dict[str, Any]]:
    if name == "sqlite":
        yield {"backend": "sqlite", "sqlite": {"path": str(tmp / "nw.db")}}
    elif name == "mariadb":
        with mysql_database(os.environ.get("NIGHTWATCH_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306")) as (s, db):
            yield {"backend": "mysql", "mysql": {"host": s.host, "port": s.port, "user": s.user,
                                                 "password": s.password, "database": db}}
    else:
        admin = os.environ.get("NIGHTWATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
        with postgres_database(admin) as dsn:
            listen = os.environ.get("BENCH_LISTEN", "1") == "1"  # BENCH_LISTEN=0: the tick alone
            yield {"backend": "postgres", "postgres": {"dsn": dsn, "listen": listen}}


class Leader:
    """The container's daemon on a thread, with the gateway and the store instrumented."""

    def __init__(self, store: dict[str, Any], jobs: str, tmp: Path, **jobs_cfg: Any) -> None:
        overrides = {
            "store": store, "lock": {"backend": "file", "file": {"path": str(tmp / f"{jobs}.lock")}},
            "jobs": {"backend": jobs, jobs: {"state_dir": str(tmp / "state"), **jobs_cfg} if jobs == "local"
                     else jobs_cfg},
            "server": {"listen": ""}, "log": {"level": "warning"},
            "watchers": {"history": {"enabled": False}, "task": {"launch_per_run": LAUNCH_PER_RUN[0]}},
        }
        self.container = build_container(load_config(str(ROOT / "config" / "nightwatch.yaml"), overrides))
        self.daemon = self.container.daemon()
        self.store = self.container.store()
        self.gateway = self.container.gateway()
        self.created: dict[int, float] = {}
        self.terminal: dict[int, float] = {}
        self.statements = 0
        launch, transition = self.gateway.launch, self.store.transition

        def timed_launch(task: Any, spec: Any) -> Any:
            out = launch(task, spec)
            self.created.setdefault(task.id, time.time())
            return out

        def timed_transition(task_id: int, old: Any, new: Any, *a: Any, **kw: Any) -> Any:
            out = transition(task_id, old, new, *a, **kw)
            if out and str(getattr(new, "value", new)) in TERMINAL:
                self.terminal.setdefault(task_id, time.time())
            return out

        self.gateway.launch, self.store.transition = timed_launch, timed_transition

        @sa.event.listens_for(self.store.engine, "before_cursor_execute")
        def count(*_: Any) -> None:
            self.statements += 1

        self._thread = threading.Thread(target=self.daemon.run, daemon=True)

    def __enter__(self) -> Leader:
        self._thread.start()
        end = time.monotonic() + 60
        while not self.daemon.elector.is_leader and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(1.0)  # the first run, the LISTEN connection
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.request_stop()
        self._thread.join(30)
        self.container.shutdown_resources()

    def runs(self) -> float:
        m = self.container.metrics().watcher_runs
        return sum(m.labels("task", r)._value.get() for r in ("ok", "error"))


def insert(engine: sa.Engine, name: str, info: str) -> float:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO task (name, namespace, info, status) VALUES (:n, 'default', :i, 'Normal')"),
                     {"n": name, "i": info})
    return time.time()


def wait_for(check: Callable[[], bool], limit: float) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


@contextmanager
def jobs_leader(name: str, jobs: str, d: Path, *, fake_duration: float, start_after: float = 0.0,
                finish_after: float | None = None) -> Iterator[tuple[Leader, standin_jobs.MeteredStandIn | None]]:
    """A leader on ``name``: with fake Jobs of ``fake_duration`` s (``jobs="fake"``), local Jobs,
    or the stand-in's Jobs on its time rule (``jobs="kubernetes"``)."""
    with store_config(name, d) as cfg:
        if jobs != "kubernetes":
            extra = {"default_duration": fake_duration} if jobs == "fake" else {}
            with Leader(cfg, jobs, d, **extra) as leader:
                yield leader, None
            return
        with standin_jobs.standin(d, start_after=start_after, finish_after=finish_after) as (api, k8s), \
                Leader(cfg, "kubernetes", d, **k8s) as leader:
            if finish_after is not None:  # the first launch also sets up the API client: not measured
                insert(leader.store.engine, "warm-up", '{"image": "busybox"}')
                wait_for(lambda: len(leader.terminal) >= 1, 60)
                for seen in (leader.created, leader.terminal, api.created_at, api.finished_at):
                    seen.clear()
            yield leader, api


def latency(name: str, jobs: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d, \
            jobs_leader(name, jobs, Path(d), fake_duration=0, start_after=0.1, finish_after=0.3) as (leader, api):
        engine = leader.store.engine
        info = json.dumps({"image": "busybox", "command": ["sleep", "0.3"]})
        inserted: dict[str, float] = {}
        for i in range(args.tasks):
            inserted[f"t-{i}"] = insert(engine, f"t-{i}", info)
            time.sleep(random.uniform(0.01, 0.06))
        wait_for(lambda: len(leader.terminal) >= args.tasks, 120)
        with engine.connect() as conn:
            ids = dict(conn.execute(sa.text("SELECT name, id FROM task")).all())
        created = api.created_at if api else leader.created
        to_job = [created[ids[n]] - t for n, t in inserted.items() if ids[n] in created]
        finished: dict[int, float] = {ids[n]: api.finished_at[ids[n]] for n in inserted
                                      if api and ids[n] in api.finished_at}
        if api is None:
            state = Path(d) / "state" / "jobs" / "default"
            for n in inserted:
                exit_file = state / n / "exit"
                if exit_file.exists():
                    finished[ids[n]] = exit_file.stat().st_mtime
        to_row = [leader.terminal[i] - t for i, t in finished.items() if i in leader.terminal]
        label = "k8s  " if api else "local"
        print(f"{name:8} {label}  row inserted -> Job created : {pct(to_job)}")
        print(f"{name:8} {label}  Job finished -> row terminal: {pct(to_row)}")


def idle(name: str, jobs: str, args: argparse.Namespace) -> None:
    jobs = "fake" if jobs == "local" else jobs
    with tempfile.TemporaryDirectory() as d, \
            jobs_leader(name, jobs, Path(d), fake_duration=3600) as (leader, api):
        n = args.idle_in_flight
        fill(leader.store.engine, name, n)
        wait_for(lambda: len(leader.created) >= n, 300)
        if api:  # every Job running, then left as it is
            wait_for(lambda: api.running() >= n, 60)
            api.pin_all()
        time.sleep(3)

        def sample() -> tuple[float, ...]:
            calls = sum(api.requests.values()) if api else 0
            return (leader.runs(), leader.statements, calls, time.process_time() - (api.cpu() if api else 0),
                    time.monotonic())

        before = sample()
        verbs = dict(api.requests) if api else {}
        time.sleep(args.idle_seconds)
        runs, statements, calls, cpu, wall = (x - y for x, y in zip(sample(), before, strict=True))
        label = "k8s " if api else "fake"
        extra = ""
        if api:
            made = {v: c - verbs.get(v, 0) for v, c in api.requests.items() if c > verbs.get(v, 0)}
            extra = f"{calls / max(runs, 1):.1f} API calls per run ({calls:.0f} in all: {made or 'none'}), "
        print(f"{name:8} idle   {label} {n} in flight: {runs:.0f} runs in {wall:.0f}s, {extra}"
              f"{statements / max(runs, 1):.1f} statements per run ({statements / wall:.1f}/s with the probe), "
              f"leader CPU {100 * cpu / wall:.1f} % of one core, RSS {rss_mib():.0f} MiB"
              f"{' (the stand-in included)' if api else ''}")


def rss_mib() -> float:
    """This process's resident set now (the leader runs in it), from /proc."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def fill(engine: sa.Engine, name: str, n: int, info: str = '{"image": "busybox", "command": ["true"]}', *,
         status: str = "Normal", prefix: str = "b-") -> None:
    """``n`` rows in one INSERT ... SELECT (one transaction, one statement)."""
    head = "INSERT INTO task (name, namespace, info, status) "
    query = {
        "postgres": f"{head}SELECT '{prefix}' || i, 'default', :i, :s FROM generate_series(1, {n}) i",
        "mariadb": f"{head}SELECT CONCAT('{prefix}', seq), 'default', :i, :s FROM seq_1_to_{n}",
        "sqlite": f"WITH RECURSIVE q(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM q WHERE i < {n}) "
                  f"{head}SELECT '{prefix}' || i, 'default', :i, :s FROM q",
    }[name]
    with engine.begin() as conn:
        conn.execute(sa.text(query), {"i": info, "s": status})


def burst(name: str, jobs: str, args: argparse.Namespace) -> None:
    jobs = "fake" if jobs == "local" else jobs
    with tempfile.TemporaryDirectory() as d, \
            jobs_leader(name, jobs, Path(d), fake_duration=0.5, finish_after=0.5) as (leader, api):
        t0 = time.time()
        fill(leader.store.engine, name, args.burst)
        wait_for(lambda: len(leader.terminal) >= args.burst, args.burst_limit)
        done = sorted(leader.terminal.values())
        first = f"{done[0] - t0:.2f} s" if done else "none"
        last = f"{done[-1] - t0:.1f} s" if len(done) >= args.burst else f"not all within {args.burst_limit}s"
        label = "k8s " if api else "fake"
        print(f"{name:8} burst  {label} {args.burst} at once (Jobs of 0.5 s): first terminal {first}, "
              f"last {last} ({len(done)} terminal)")


PROBES = {  # the candidates for the MariaDB/SQLite probe
    "MAX(id) WHERE status = 'Normal' (chosen)": "SELECT MAX(id) FROM task WHERE status = 'Normal'",
    "COUNT(*) WHERE status = 'Normal'": "SELECT COUNT(*) FROM task WHERE status = 'Normal'",
    "MAX(cancel_requested_at)": "SELECT MAX(cancel_requested_at) FROM task",
}


def probe(name: str, jobs: str, args: argparse.Namespace) -> None:
    """What each candidate probe costs with ``--probe-rows`` finished rows and ``--burst`` Normal."""
    with tempfile.TemporaryDirectory() as d, store_config(name, Path(d)) as cfg, \
            Leader(cfg, "fake", Path(d), default_duration=3600) as leader:
        leader.daemon.scheduler.pause()  # leave the rows as they are
        engine = leader.store.engine
        fill(engine, name, args.probe_rows, status="Succeeded", prefix="d-")
        fill(engine, name, args.burst, prefix="n-")
        for label, query in PROBES.items():
            times = []
            with engine.connect() as conn:
                for _ in range(50):
                    t = time.perf_counter()
                    conn.execute(sa.text(query)).scalar()
                    times.append(time.perf_counter() - t)
            print(f"{name:8} probe  {label:42} {pct(times)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", default="postgres,mariadb,sqlite")
    parser.add_argument("--jobs", default="local,kubernetes", help="local (local and fake Jobs), kubernetes")
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--idle-in-flight", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=20000)
    parser.add_argument("--burst-limit", type=float, default=600.0)
    parser.add_argument("--probe-rows", type=int, default=200000)
    parser.add_argument("--only", default="latency,idle,burst", help="latency, idle, burst, probe")
    parser.add_argument("--launch-per-run", type=int, default=500, help="1000000: the unbounded launch of before")
    args = parser.parse_args()
    LAUNCH_PER_RUN[0] = args.launch_per_run
    parts = {"latency": latency, "idle": idle, "burst": burst, "probe": probe}
    for name in args.stores.split(","):
        for part in args.only.split(","):
            for jobs in args.jobs.split(",")[:1] if part == "probe" else args.jobs.split(","):
                parts[part](name, jobs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
