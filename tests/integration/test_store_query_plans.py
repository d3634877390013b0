"""The launch and sync scans seek the (status, id) index on MariaDB and PostgreSQL, and the
listings newest first seek (status, id) or (namespace, id) backwards.

The table is filled on the server with many finished rows and a few in flight, analysed,
and every statement the store sends for a launch page and a sync page is captured and
EXPLAINed as it was sent: an index seek on ``idx_task_status_id``, and no sort of the
matching rows (no filesort, no Sort node).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sql_databases import mysql_database, postgres_database, postgres_execute

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.store.sql import SQLTaskStore, mysql_store, postgres_store
from nightwatch.domain.model import TaskQuery, TaskStatus

pytestmark = pytest.mark.timeout(120)
FILL = {
    "mysql": [
        "INSERT INTO task (name, namespace, info, status) SELECT CONCAT('t', seq),"
        " CASE WHEN seq % 100 = 5 THEN 'demo' ELSE 'default' END, '{}',"
        " CASE WHEN seq % 100 = 0 THEN 'Running' WHEN seq % 100 = 1 THEN 'Pending'"
        " WHEN seq % 500 = 2 THEN 'Normal' ELSE 'Succeeded' END FROM seq_1_to_50000",
        "ANALYZE TABLE task",
    ],
    "postgres": [
        "INSERT INTO task (name, namespace, info, status) SELECT 't' || i,"
        " CASE WHEN i % 100 = 5 THEN 'demo' ELSE 'default' END, '{}',"
        " CASE WHEN i % 100 = 0 THEN 'Running' WHEN i % 100 = 1 THEN 'Pending'"
        " WHEN i % 500 = 2 THEN 'Normal' ELSE 'Succeeded' END FROM generate_series(1, 50000) i",
        "VACUUM ANALYZE task",
    ],
}


@pytest.fixture(params=[pytest.param("mysql", marks=pytest.mark.mysql),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def filled(request: pytest.FixtureRequest) -> Iterator[tuple[str, SQLTaskStore]]:
    if request.param == "mysql":
        with mysql_database(request.getfixturevalue("mysql_url")) as (server, database):
            store = mysql_store(server.host, server.port, server.user, server.password, database, SystemClock())
            store.migrate()
            server.execute(database, *FILL["mysql"])
            yield "mysql", store
            store.close()
    else:
        with postgres_database(request.getfixturevalue("postgres_dsn")) as dsn:
            store = postgres_store(dsn, SystemClock())
            store.migrate()
            postgres_execute(dsn, *FILL["postgres"])
            yield "postgres", store
            store.close()


def sent(store: SQLTaskStore, call: Any) -> list[tuple[str, Any]]:
    """Every (statement, parameters) the store sends to the driver during ``call()``."""
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and " task." in statement:
            captured.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", capture)
    return captured


def plan(kind: str, store: SQLTaskStore, statement: str, parameters: Any) -> str:
    with store.engine.connect() as conn:
        if kind == "mysql":
            rows = conn.exec_driver_sql("EXPLAIN FORMAT=JSON " + statement, parameters).all()
        else:
            rows = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).all()
    raw = rows[0][0]
    return raw if isinstance(raw, str) else json.dumps(raw)


@pytest.mark.parametrize("statuses", [[TaskStatus.NORMAL], [TaskStatus.PENDING, TaskStatus.RUNNING]],
                         ids=["launch", "sync"])
def test_the_scans_seek_the_status_id_index_and_sort_nothing(filled: tuple[str, SQLTaskStore],
                                                             statuses: list[str]) -> None:
    kind, store = filled
    after = 10_000
    # a page smaller than the matching rows, as in production (20,000 in flight, pages of 500):
    # with fewer matches than the page, sorting them all is a legitimate plan
    statements = sent(store, lambda: store.page(statuses, after, 100))
    assert statements, "the store sent no SELECT"
    for statement, parameters in statements:
        explained = plan(kind, store, statement, parameters)
        assert "idx_task_status_id" in explained, explained
        if kind == "mysql":
            assert '"using_filesort": true' not in explained.replace(" ", "").replace('":true', '": true'), explained
            assert '"access_type": "range"' in explained or '"access_type": "ref"' in explained, explained
        else:
            assert '"Node Type": "Sort"' not in explained, explained
            assert '"Index Name": "idx_task_status_id"' in explained, explained


@pytest.mark.parametrize(("query", "index"), [
    (TaskQuery(namespace="demo", limit=50), "idx_task_namespace_id"),  # 500 of 50,000 rows
    (TaskQuery(statuses=("Running",), limit=50), "idx_task_status_id"),
    (TaskQuery(statuses=("Running", "Pending"), before_id=40_000, limit=50), "idx_task_status_id"),
    (TaskQuery(namespace="demo", before_id=30_000, limit=50), "idx_task_namespace_id"),
], ids=["namespace", "status", "statuses-page-2", "namespace-page-2"])
def test_the_listings_newest_first_seek_an_index_and_sort_nothing(filled: tuple[str, SQLTaskStore],
                                                                   query: TaskQuery, index: str) -> None:
    kind, store = filled
    statements = sent(store, lambda: store.query(query))
    assert statements, "the store sent no SELECT"
    for statement, parameters in statements:
        explained = plan(kind, store, statement, parameters)
        assert index in explained, explained
        if kind == "mysql":
            assert '"using_filesort": true' not in explained.replace(" ", "").replace('":true', '": true'), explained
            assert '"access_type": "range"' in explained or '"access_type": "ref"' in explained, explained
        else:
            assert '"Node Type": "Sort"' not in explained, explained
            assert f'"Index Name": "{index}"' in explained and '"Scan Direction": "Backward"' in explained, explained
    assert [t.id for t in store.query(query)] == sorted((t.id for t in store.query(query)), reverse=True)
