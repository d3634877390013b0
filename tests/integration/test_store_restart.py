"""After its database restarts, the store answers again as soon as the server does.

A private server (the test's own) is stopped and started under a store whose pool is full
of connections, which the restart has killed. The pool checks a connection before lending
it (pre-ping) and replaces every dead one, so the first call after the server is back
succeeds: PostgreSQL as quickly as MariaDB.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from daemons import PrivateMariaDB, PrivatePostgres, unavailable
from sql_databases import MySQLServer

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.store.sql import SQLTaskStore, mysql_store, postgres_store
from nightwatch.domain.errors import BackendUnavailableError
from nightwatch.domain.model import NewTask

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]
READY_WITHIN = 0.5  # seconds from the server answering to the store answering


def private(kind: str) -> tuple[object, SQLTaskStore]:
    if kind == "postgres":
        if PrivatePostgres.bindir() is None:
            unavailable("PostgreSQL server binaries (initdb, pg_ctl) for a private server")
        pg = PrivatePostgres()
        pg.start()
        return pg, postgres_store(pg.dsn, SystemClock(), connect_timeout=2)
    if not PrivateMariaDB.available():
        unavailable("mariadbd and mariadb-install-db for a private MariaDB server")
    maria = PrivateMariaDB()
    maria.start()
    server = MySQLServer.from_url(maria.url)
    server.execute("mysql", "CREATE DATABASE IF NOT EXISTS nightwatch")
    return maria, mysql_store(server.host, server.port, server.user, server.password, "nightwatch", SystemClock(),
                              connect_timeout=2, read_timeout=2)


@pytest.mark.parametrize("kind", [pytest.param("mysql", marks=pytest.mark.mysql),
                                  pytest.param("postgres", marks=pytest.mark.postgres)])
def test_the_store_answers_within_a_second_of_its_database_restarting(kind: str) -> None:
    server, store = private(kind)
    try:
        store.migrate()
        task = store.add(NewTask("t", "default", '{"image":"alpine"}'))
        with ThreadPoolExecutor(4) as pool:  # every pooled connection in use once
            list(pool.map(lambda _: [store.get(task.id) for _ in range(20)], range(4)))
        server.stop()  # type: ignore[attr-defined]
        down = time.monotonic()
        while time.monotonic() - down < 3:  # the daemon keeps calling while the server is away
            with pytest.raises(BackendUnavailableError):
                store.get(task.id)
            time.sleep(0.2)
        server.start()  # type: ignore[attr-defined]
        up = time.monotonic()
        while True:
            try:
                assert store.get(task.id) == task
                break
            except BackendUnavailableError:
                assert time.monotonic() - up < 30, "the store never answered again"
                time.sleep(0.02)
        took = time.monotonic() - up
        print(f"{kind}: answered {took:.3f}s after the server was back")
        assert took < READY_WITHIN, f"{kind}: answered {took:.2f}s after the server was back"
    finally:
        store.close()
        server.close()  # type: ignore[attr-defined]
