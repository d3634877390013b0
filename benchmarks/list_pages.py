#!/usr/bin/env python3
"""List benchmark: the console's task list page and ``GET /api/v1/tasks`` with 100,000 tasks.

For each store (SQLite, PostgreSQL) a fresh database is migrated and filled on the server
with ``--tasks`` rows: all finished (90 % Succeeded, 10 % Failed; half in namespace
``team-a``) but ``--in-flight`` Normal ones. A real ``nightwatch run`` (fake job gateway,
Jobs that run for an hour) then leads: it launches those and keeps them in flight, syncing
them every 2 s, while this script asks, one request at a time on a kept-alive connection:

- ``page /``: the list page, first page (50 tasks, with the counts per status)
- ``page /?before=``: an older page at a random depth
- ``page /?status=Failed``, ``page /?namespace=team-a&before=``: filtered pages
- ``live``: the list page's live-update call (50 ids, the newest id, the counts every 5th time)
- ``api /tasks``, ``api /tasks?cursor=`` (walking 200 pages deep), ``api /tasks?status=Failed``

It prints p50, p95 and max per kind (the goal: p95 <= 150 ms). Figures, not a test.

    .venv/bin/python benchmarks/list_pages.py                       # sqlite and postgres, 100k
    .venv/bin/python benchmarks/list_pages.py --stores sqlite --tasks 20000 --requests 50
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "benchmark-token-0123456789abcdef"
INFO = '{"image": "busybox", "command": ["sleep", "3600"]}'
FILL = {
    "sqlite": [
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {finished}) "
        "INSERT INTO task (name, namespace, info, status, user_id, message) SELECT 'done-' || i, "
        "CASE WHEN i % 2 = 0 THEN 'team-a' ELSE 'default' END, '{info}', "
        "CASE WHEN i % 10 = 0 THEN 'Failed' ELSE 'Succeeded' END, i % 100, "
        "CASE WHEN i % 10 = 0 THEN 'exit code 1' END FROM seq",
        "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < {in_flight}) "
        "INSERT INTO task (name, namespace, info, status, user_id) SELECT 'busy-' || i, 'default', '{info}', "
        "'Normal', 1 FROM seq",
        "ANALYZE",
    ],
    "postgres": [
        "INSERT INTO task (name, namespace, info, status, user_id, message) SELECT 'done-' || i, "
        "CASE WHEN i % 2 = 0 THEN 'team-a' ELSE 'default' END, '{info}', "
        "CASE WHEN i % 10 = 0 THEN 'Failed' ELSE 'Succeeded' END, i % 100, "
        "CASE WHEN i % 10 = 0 THEN 'exit code 1' END FROM generate_series(1, {finished}) i",
        "INSERT INTO task (name, namespace, info, status, user_id) SELECT 'busy-' || i, 'default', '{info}', "
        "'Normal', 1 FROM generate_series(1, {in_flight}) i",
        "VACUUM ANALYZE task",
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def sqlite_database(workdir: Path) -> Iterator[tuple[dict[str, Any], Callable[[str], None]]]:
    path = workdir / "bench.db"

    def execute(sql: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(sql)

    yield {"backend": "sqlite", "sqlite": {"path": str(path)}}, execute


@contextmanager
def postgres_database(dsn: str) -> Iterator[tuple[dict[str, Any], Callable[[str], None]]]:
    name = "nwl_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    own = make_conninfo(dsn, dbname=name)
    try:
        def execute(sql: str) -> None:
            with psycopg.connect(own, autocommit=True) as conn:
                conn.execute(sql.encode())

        yield {"backend": "postgres", "postgres": {"dsn": own}}, execute
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def nightwatch(config: Path, *args: str, **kw: Any) -> Any:
    env = {k: v for k, v in os.environ.items() if k not in ("NIGHTWATCH_CONFIG", "NIGHTWATCH_REPLICA")}
    return subprocess.Popen([sys.executable, "-m", "nightwatch", *args, "--config", str(config)], env=env,
                            cwd=config.parent, **kw)


class Client:
    def __init__(self, port: int, fresh: bool = False) -> None:
        self.port = port
        self.fresh = fresh  # a new connection for each request (else one kept alive, as a browser does)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def get(self, path: str) -> tuple[float, int, bytes]:
        if self.fresh:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        started = time.perf_counter()
        self.conn.request("GET", path)
        answer = self.conn.getresponse()
        body = answer.read()
        return (time.perf_counter() - started) * 1000, answer.status, body

    def json(self, path: str) -> Any:
        _, status, body = self.get(path)
        assert status == 200, (path, status, body[:200])
        return json.loads(body)


def wait_in_flight(client: Client, in_flight: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            counts = client.json("/api/v1/tasks?limit=1")["counts"]
        except (OSError, http.client.HTTPException, AssertionError):
            client.conn.close()
            time.sleep(0.5)
            continue
        if counts.get("Running", 0) + counts.get("Pending", 0) >= in_flight:
            return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"the daemon did not get {in_flight} tasks in flight within {timeout:.0f}s")


def measure(client: Client, total: int, requests: int) -> dict[str, list[float]]:
    rng = random.Random(7)
    newest = client.json("/api/v1/tasks?limit=50")["tasks"]
    ids = ",".join(str(t["id"]) for t in newest)
    top = newest[0]["id"]
    cursor: list[str | None] = [None]

    def api_walk() -> str:
        path = "/api/v1/tasks?limit=50" + (f"&cursor={cursor[0]}" if cursor[0] else "")
        return path

    kinds: dict[str, Callable[[int], str]] = {
        "probe /healthz (the floor)": lambda i: "/healthz",
        "page /": lambda i: "/",
        "page /?before=": lambda i: f"/?before={rng.randint(100, total)}",
        "page /?status=Failed": lambda i: "/?status=Failed",
        "page /?namespace=team-a&before=": lambda i: f"/?namespace=team-a&before={rng.randint(100, total)}",
        "live": lambda i: f"/console/live?ids={ids}&top={top}" + ("&counts=1" if i % 5 == 0 else ""),
        "api /tasks": lambda i: "/api/v1/tasks?limit=50",
        "api /tasks?cursor=": lambda i: api_walk(),
        "api /tasks?status=Failed": lambda i: "/api/v1/tasks?status=Failed&limit=50",
    }
    times: dict[str, list[float]] = {}
    for kind, path_of in kinds.items():
        times[kind] = []
        cursor[0] = None
        for i in range(requests + 3):  # three warm-up requests
            ms, status, body = client.get(path_of(i))
            assert status == 200, (kind, status, body[:300])
            if kind == "api /tasks?cursor=":
                cursor[0] = json.loads(body).get("next_cursor") if i % 200 != 199 else None
            if i >= 3:
                times[kind].append(ms)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


def run(kind: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="nw-list-") as tmp:
        workdir = Path(tmp)
        database = sqlite_database(workdir) if kind == "sqlite" else postgres_database(args.postgres_dsn)
        with database as (store, execute):
            port = free_port()
            config = workdir / "nightwatch.yaml"
            config.write_text(yaml.safe_dump({
                "store": store,
                "lock": {"backend": "file", "file": {"path": str(workdir / "lock")}},
                "jobs": {"backend": "fake", "allowed_namespaces": ["default", "team-a"],
                         "fake": {"default_duration": 3600}},
                "server": {"listen": f"127.0.0.1:{port}", "auth": {"tokens": [TOKEN]}},
                "log": {"level": "warning"},
            }))
            migrate = nightwatch(config, "db", "migrate", stdout=subprocess.DEVNULL)
            assert migrate.wait(120) == 0, "nightwatch db migrate failed"
            started = time.monotonic()
            finished = args.tasks - args.in_flight
            for statement in FILL[kind]:
                execute(statement.format(finished=finished, in_flight=args.in_flight, info=INFO))
            filled = time.monotonic() - started
            with open(workdir / "daemon.log", "wb") as log:
                daemon = nightwatch(config, "run", stdout=log, stderr=subprocess.STDOUT)
            try:
                launched = wait_in_flight(Client(port), args.in_flight, 300)
                times = measure(Client(port, fresh=args.fresh_connections), args.tasks, args.requests)
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(30)
            print(f"{kind}: {args.tasks} tasks (filled in {filled:.0f}s), {args.in_flight} in flight "
                  f"(launched in {launched:.0f}s), {args.requests} requests per kind", flush=True)
            for name, values in times.items():
                print(f"  {name:34} p50 {statistics.median(values):6.1f} ms  p95 {p95(values):6.1f} ms"
                      f"  max {max(values):6.1f} ms", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stores", default="sqlite,postgres")
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--in-flight", type=int, default=1_000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--fresh-connections", action="store_true",
                   help="a new TCP connection per request (default: one kept alive, as a browser does)")
    p.add_argument("--postgres-dsn", default=os.environ.get(
        "NIGHTWATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = p.parse_args()
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs (shared), python "
          f"{platform.python_version()}; one request at a time, "
          f"{'a new connection each' if args.fresh_connections else 'one kept-alive connection'}")
    for kind in args.stores.split(","):
        run(kind, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
