"""Throw-away databases on the real MySQL/MariaDB and PostgreSQL servers the tests use.

Each context manager creates a database with a unique name and drops it afterwards,
so every test has its own and nothing depends on order.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import pymysql
from psycopg import sql
from psycopg.conninfo import make_conninfo

SEED_DIR = Path(__file__).parent / "contract" / "seed"


def unique_database() -> str:
    return "nwt_" + uuid.uuid4().hex[:12]


def sql_statements(script: str) -> list[str]:
    """The statements of a seed script: comment lines dropped, split on a closing ``;``."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    statements = (s.strip().rstrip(";").strip() for s in "\n".join(lines).split(";\n"))
    return [s for s in statements if s]


@dataclass(frozen=True)
class MySQLServer:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> MySQLServer:
        parts = urlsplit(url)
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
        )

    def connect(self, database: str | None = None) -> pymysql.Connection:
        return pymysql.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            database=database, autocommit=True, connect_timeout=5, read_timeout=30,
        )

    def execute(self, database: str, *statements: str) -> None:
        with self.connect(database) as conn, conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)


@contextmanager
def mysql_database(url: str) -> Iterator[tuple[MySQLServer, str]]:
    server, name = MySQLServer.from_url(url), unique_database()
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield server, name
    finally:
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@contextmanager
def postgres_database(admin_dsn: str) -> Iterator[str]:
    """Yields the DSN of a new database on the server ``admin_dsn`` points at."""
    name = unique_database()
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def postgres_execute(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        for statement in statements:
            conn.execute(statement.encode())
