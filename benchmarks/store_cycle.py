#!/usr/bin/env python3
"""Store benchmark: the database time of one launch + sync cycle as finished rows pile up.

For each backend (MariaDB/MySQL, PostgreSQL) and each table size, a fresh database is
migrated, then filled on the server (INSERT ... SELECT over a generated series) with
``--finished`` Succeeded/Failed rows followed by ``--in-flight`` Pending/Running rows and a
few Normal ones, and analysed. One cycle is what the task watcher reads every run:
launch = every Normal task, sync = every in-flight task, both paged to the end with
``--batch-size`` (the grouped count runs every ``count_interval``, not every cycle, and is
left out). Prints the median of ``--cycles`` cycles per size and the ratio big/small.

    .venv/bin/python benchmarks/store_cycle.py                          # 10k vs 1M, 20k in flight
    .venv/bin/python benchmarks/store_cycle.py --stores postgres --sizes 10000,100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
import pymysql  # noqa: E402
from psycopg.conninfo import make_conninfo  # noqa: E402

from nightwatch.adapters.clock import SystemClock  # noqa: E402
from nightwatch.adapters.store.sql import SQLTaskStore, mysql_store, postgres_store  # noqa: E402
from nightwatch.domain.model import IN_FLIGHT, TaskStatus  # noqa: E402

NORMAL = 50  # rows waiting to be launched, so the launch scan returns something
FILL = {  # (finished rows, in-flight rows, normal rows) -> statements run on the server
    "mysql": [
        "INSERT INTO task (name, namespace, info, status, user_id) SELECT CONCAT('done-', seq), 'default', '{{}}',"
        " IF(seq % 10 = 0, 'Failed', 'Succeeded'), 1 FROM seq_1_to_{finished}",
        "INSERT INTO task (name, namespace, info, status, user_id) SELECT CONCAT('busy-', seq), 'default', '{{}}',"
        " IF(seq % 2 = 0, 'Running', 'Pending'), 1 FROM seq_1_to_{in_flight}",
        "INSERT INTO task (name, namespace, info, status, user_id) SELECT CONCAT('new-', seq), 'default', '{{}}',"
        " 'Normal', 1 FROM seq_1_to_{normal}",
        "ANALYZE TABLE task",
    ],
    "postgres": [
        "INSERT INTO task (name, namespace, info, status, user_id) SELECT 'done-' || i, 'default', '{{}}',"
        " CASE WHEN i % 10 = 0 THEN 'Failed' ELSE 'Succeeded' END, 1 FROM generate_series(1, {finished}) i",
        "INSERT INTO task (name, namespace, info, status, user_id) SELECT 'busy-' || i, 'default', '{{}}',"
        " CASE WHEN i % 2 = 0 THEN 'Running' ELSE 'Pending' END, 1 FROM generate_series(1, {in_flight}) i",
        "INSERT INTO task (name, namespace, info, status, user_id) SELECT 'new-' || i, 'default', '{{}}',"
        " 'Normal', 1 FROM generate_series(1, {normal}) i",
        "VACUUM ANALYZE task",
    ],
}


@contextmanager
def mysql_database(url: str) -> Iterator[tuple[SQLTaskStore, Callable[[str], list[Any]]]]:
    parts = urlsplit(url)
    server = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 3306,
              "user": unquote(parts.username or "root"), "password": unquote(parts.password or "")}
    name = "nwb_" + uuid.uuid4().hex[:10]
    admin = pymysql.connect(**server, autocommit=True, read_timeout=3600)
    admin.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    store = mysql_store(server["host"], server["port"], server["user"], server["password"], name, SystemClock(),
                        read_timeout=60)
    admin.select_db(name)
    try:
        def execute(sql: str) -> list[Any]:
            with admin.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())

        yield store, execute
    finally:
        store.close()
        admin.cursor().execute(f"DROP DATABASE `{name}`")
        admin.close()


@contextmanager
def postgres_database(dsn: str) -> Iterator[tuple[SQLTaskStore, Callable[[str], list[Any]]]]:
    name = "nwb_" + uuid.uuid4().hex[:10]
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    own = make_conninfo(dsn, dbname=name)
    store = postgres_store(own, SystemClock(), statement_timeout=60)
    conn = psycopg.connect(own, autocommit=True)
    try:
        def execute(sql: str) -> list[Any]:
            cur = conn.execute(sql.encode())
            return list(cur.fetchall()) if cur.description else []

        yield store, execute
    finally:
        store.close()
        conn.close()
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


COLUMNS = "id, name, namespace, info, status, user_id, message, created_at, updated_at"
# The page query exactly as the store sends it (see SQLTaskStore.page and _dialects.exact).
PAGE = {
    "mysql": "ANALYZE FORMAT=JSON SELECT " + COLUMNS + " FROM task WHERE id > {after} AND status = '{status}'"
             " AND CAST(status AS BINARY) = '{status}' ORDER BY id LIMIT {limit}",
    "postgres": "EXPLAIN (ANALYZE, FORMAT JSON) SELECT " + COLUMNS + " FROM task WHERE id > {after}"
                " AND status = '{status}' ORDER BY id LIMIT {limit}",
}


def server_ms(kind: str, execute: Callable[[str], list[Any]], pages: list[tuple[str, int]], limit: int) -> float:
    """Time the server itself spent on these page queries (its own ANALYZE), in ms."""
    total = 0.0
    for status, after in pages:
        (raw,) = execute(PAGE[kind].format(after=after, status=status, limit=limit))[0]
        plan = json.loads(raw) if isinstance(raw, str) else raw
        if kind == "mysql":
            total += float(plan["query_block"]["r_total_time_ms"])
        else:
            total += float(plan[0]["Planning Time"]) + float(plan[0]["Execution Time"])
    return total


def scan(store: SQLTaskStore, status: str, batch: int, pages: list[tuple[str, int]]) -> int:
    """Page to the end, as the task watcher does; how many tasks were read."""
    seen, after = 0, 0
    while True:
        pages.append((status, after))
        page = store.page((status,), after, batch)
        if not page:
            return seen
        seen += len(page)
        after = page[-1].id


def measure(kind: str, store: SQLTaskStore, execute: Callable[[str], list[Any]], cycles: int,
            batch: int) -> dict[str, float]:
    """Medians over ``cycles`` (after one warm-up) of client and server time, launch and sync."""
    runs: dict[str, list[float]] = {"launch": [], "sync": [], "launch_db": [], "sync_db": []}
    for _ in range(cycles + 1):
        launch_pages: list[tuple[str, int]] = []
        sync_pages: list[tuple[str, int]] = []
        started = time.perf_counter()
        normal = scan(store, TaskStatus.NORMAL, batch, launch_pages)
        middle = time.perf_counter()
        in_flight = sum(scan(store, status, batch, sync_pages) for status in IN_FLIGHT)  # as the watcher does
        runs["launch"].append((middle - started) * 1000)
        runs["sync"].append((time.perf_counter() - middle) * 1000)
        runs["launch_db"].append(server_ms(kind, execute, launch_pages, batch))
        runs["sync_db"].append(server_ms(kind, execute, sync_pages, batch))
        assert (normal, in_flight) == (NORMAL, IN_FLIGHT_ROWS[0]), (normal, in_flight)
    return {k: statistics.median(v[1:]) for k, v in runs.items()}


IN_FLIGHT_ROWS = [20_000]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stores", default="mysql,postgres")
    p.add_argument("--sizes", default="10000,1000000", help="finished rows, comma-separated")
    p.add_argument("--in-flight", type=int, default=20_000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--cycles", type=int, default=5)
    p.add_argument("--mysql-url", default=os.environ.get("NIGHTWATCH_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306"))
    p.add_argument("--postgres-dsn", default=os.environ.get(
        "NIGHTWATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    IN_FLIGHT_ROWS[0] = args.in_flight
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()};"
          f" {args.in_flight} in flight, {NORMAL} Normal, batch {args.batch_size}, median of {args.cycles} cycles")
    for kind in args.stores.split(","):
        results = {}
        for finished in sizes:
            database = mysql_database(args.mysql_url) if kind == "mysql" else postgres_database(args.postgres_dsn)
            with database as (store, execute):
                store.migrate()
                started = time.monotonic()
                for statement in FILL[kind]:
                    execute(statement.format(finished=finished, in_flight=args.in_flight, normal=NORMAL))
                filled = time.monotonic() - started
                m = measure(kind, store, execute, args.cycles, args.batch_size)
                results[finished] = m["launch_db"] + m["sync_db"]
                print(f"{kind:8} {finished:>9} finished: DB time launch {m['launch_db']:6.1f} ms"
                      f" sync {m['sync_db']:6.1f} ms cycle {m['launch_db'] + m['sync_db']:6.1f} ms"
                      f" | with the client: launch {m['launch']:6.1f} ms sync {m['sync']:7.1f} ms"
                      f"  (filled in {filled:.0f}s)", flush=True)
        if len(sizes) > 1:
            print(f"{kind:8} DB time ratio {sizes[-1]}/{sizes[0]}: {results[sizes[-1]] / results[sizes[0]]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
