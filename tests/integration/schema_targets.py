"""A throw-away MariaDB or PostgreSQL database with the user's seed table, the CLI run on it
as a user would (a subprocess with a YAML config), and a database user with DML rights only."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from daemons import NIGHTWATCH, SqlTasks, mysql_store, postgres_store
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sql_databases import MySQLServer, mysql_database, postgres_database

_SCRUB = ("NIGHTWATCH_CONFIG", "NIGHTWATCH_REPLICA")


@dataclass
class Target:
    kind: str  # "mysql" | "postgres"
    database: str
    store: dict[str, Any]  # the config's ``store`` section, as the admin
    admin: SqlTasks  # plain SQL as the admin, outside nightwatch
    workdir: Path
    _server: MySQLServer | None = None
    _dsn: str = ""
    _users: list[str] = field(default_factory=list)

    def connect(self) -> Any:
        """A plain driver connection as the admin (autocommit), e.g. to hold a transaction open."""
        if self._server is not None:
            return self._server.connect(self.database)
        return psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)

    def config(self, name: str = "nightwatch", store: dict[str, Any] | None = None, **over: Any) -> Path:
        """A config file: this database, a file lock, local jobs, no HTTP port, text logs."""
        doc: dict[str, Any] = {
            "store": store or self.store,
            "lock": {"backend": "file", "name": "nightwatch", "file": {"path": str(self.workdir / "nw.lock")},
                     "ttl": "3s", "renew_interval": "500ms", "renew_deadline": "2s", "retry_interval": "300ms"},
            "jobs": {"backend": "local", "allowed_namespaces": ["default"],
                     "local": {"state_dir": str(self.workdir / "jobs")}},
            "watchers": {"task": {"spec": "@every 300ms"}},
            "server": {"listen": ""},
            "log": {"level": "info", "format": "text"},
        }
        for key, value in over.items():
            doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def dml_user(self) -> dict[str, Any]:
        """A new database user with SELECT, INSERT and UPDATE on this database only (and, on
        PostgreSQL, what a serial id needs: UPDATE on the sequences); the ``store`` section for it."""
        user, password = "nwt_dml_" + uuid.uuid4().hex[:8], "dml-" + uuid.uuid4().hex[:8]
        self._users.append(user)
        if self.kind == "mysql":
            for host in ("%", "localhost", "127.0.0.1"):
                self.admin.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'",
                                   f"GRANT SELECT, INSERT, UPDATE ON `{self.database}`.* TO '{user}'@'{host}'")
            store = mysql_store("mysql://x@127.0.0.1", self.database)
            store["mysql"].update(host=self._server.host, port=self._server.port,  # type: ignore[union-attr]
                                  user=user, password=password)
            return store
        role = sql.Identifier(user)
        self.admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password)).as_string(),
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(self.database), role).as_string(),
            sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role).as_string(),
            sql.SQL("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {}").format(role).as_string(),
            sql.SQL("GRANT UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}").format(role).as_string(),
            # and on what the admin creates later (db migrate)
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO {}")
            .format(role).as_string(),
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT UPDATE ON SEQUENCES TO {}")
            .format(role).as_string(),
        )
        return postgres_store(make_conninfo(self._dsn, user=user, password=password))

    def grant_history_pruning(self) -> None:
        """What the history watcher needs beyond SELECT, INSERT, UPDATE: DELETE on task_event
        (old events only; nightwatch never deletes a task row). Once ``db migrate`` made it."""
        for user in self._users:
            if self.kind == "mysql":
                for host in ("%", "localhost", "127.0.0.1"):
                    self.admin.execute(f"GRANT DELETE ON `{self.database}`.task_event TO '{user}'@'{host}'")
            else:
                self.admin.execute(sql.SQL("GRANT DELETE ON task_event TO {}").format(sql.Identifier(user))
                                   .as_string())

    def _drop_users(self) -> None:
        for user in self._users:
            with contextlib.suppress(Exception):
                if self.kind == "mysql":
                    for host in ("%", "localhost", "127.0.0.1"):
                        self.admin.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
                else:
                    self.admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(user)).as_string())


def nightwatch(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    return subprocess.run([*NIGHTWATCH, *args, "--config", str(config)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=config.parent, stdin=subprocess.DEVNULL)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a failing command ends with; never a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("nightwatch:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@contextlib.contextmanager
def target(kind: str, request: pytest.FixtureRequest, workdir: Path) -> Iterator[Target]:
    if kind == "mysql":
        url = request.getfixturevalue("mysql_url")
        with mysql_database(url) as (server, database):
            t = Target("mysql", database, mysql_store(url, database), SqlTasks.mysql(server, database), workdir,
                       _server=server)
            try:
                yield t
            finally:
                t._drop_users()
        return
    admin_dsn = request.getfixturevalue("postgres_dsn")
    users: list[str] = []
    try:
        with postgres_database(admin_dsn) as dsn:
            t = Target("postgres", str(conninfo_to_dict(dsn)["dbname"]), postgres_store(dsn),
                       SqlTasks.postgres(dsn), workdir, _dsn=dsn)
            try:
                yield t
            finally:
                t._drop_users()
                users = t._users
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as conn:
            for user in users:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


@pytest.fixture(params=[pytest.param("mysql", marks=pytest.mark.mysql),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def server_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A MariaDB and a PostgreSQL database holding the user's seed table (no rows)."""
    with target(request.param, request, tmp_path) as t:
        t.admin.create_table()
        yield t
