"""A small harness for the multi-process tests: real ``nightwatch run`` processes.

- ``Cluster`` writes one YAML config per replica, starts ``python -m nightwatch run`` for
  each (JSON logs to a file), finds the leader from those logs, and kills, pauses and
  resumes replicas by signal. ``close()`` kills whatever is left.
- ``SqlTasks`` is the user's own system: it creates the seed's ``task`` table and inserts
  rows with plain SQL, and reads statuses back, on MariaDB/MySQL or PostgreSQL.
- ``PrivatePostgres`` / ``PrivateMariaDB`` are throw-away database servers (own data
  directory, own port) that a test may stop and restart without disturbing the shared ones.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pymysql
import pytest
import yaml
from sql_databases import SEED_DIR, MySQLServer, sql_statements

T = TypeVar("T")
NIGHTWATCH = [sys.executable, "-m", "nightwatch"]
# The same CLI with a store that drops the epoch check: only for the fencing positive controls.
UNFENCED_NIGHTWATCH = [sys.executable, str(Path(__file__).parent.parent / "unfenced_nightwatch.py")]
TERMINAL = ("Succeeded", "Failed", "Cancelled")
# Environment a replica must not inherit from the test run.
_SCRUB = ("NIGHTWATCH_CONFIG", "NIGHTWATCH_REPLICA", "NIGHTWATCH_TEST_DISABLE_FENCING")


def unavailable(what: str) -> None:
    """A server binary a test needs is missing: fail when NIGHTWATCH_REQUIRE_BACKENDS=1, else skip."""
    message = f"{what} not found on this machine"
    if os.environ.get("NIGHTWATCH_REQUIRE_BACKENDS") == "1":
        pytest.fail(f"NIGHTWATCH_REQUIRE_BACKENDS=1 but {message}", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str | Callable[[], str],
               interval: float = 0.05) -> T:
    """``predicate()``'s first truthy value, polling; AssertionError naming ``what`` (a string, or
    a function making one at failure time, say with the replicas' last log lines) after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for "
                                 f"{what if isinstance(what, str) else what()}")
        time.sleep(interval)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fast_config(store: dict[str, Any], redis_url: str, lock_name: str, workdir: Path) -> dict[str, Any]:
    """Redis lock with test-speed timing, local jobs with a shared state dir and launch record,
    the task watcher every 300 ms, no HTTP port, JSON logs."""
    return {
        "store": store,
        "lock": {
            "backend": "redis", "name": lock_name, "ttl": "3s", "renew_interval": "500ms",
            "renew_deadline": "2s", "retry_interval": "300ms",
            "redis": {"urls": [redis_url], "key_prefix": f"{lock_name}:", "socket_timeout": "300ms"},
        },
        "jobs": {
            "backend": "local", "allowed_namespaces": ["default"],
            "local": {"state_dir": str(workdir / "jobs"), "record_path": str(workdir / "launches.txt")},
        },
        "watchers": {"task": {"spec": "@every 300ms", "batch_size": 100, "concurrency": 8,
                              "missing_grace": "30s"}},
        "server": {"listen": ""},
        "log": {"level": "info", "format": "json"},
    }


def mysql_store(url: str, database: str, **extra: Any) -> dict[str, Any]:
    server = MySQLServer.from_url(url)
    return {"backend": "mysql", "mysql": {
        "host": server.host, "port": server.port, "user": server.user, "password": server.password,
        "database": database, "connect_timeout": "2s", "read_timeout": "5s", **extra}}


def postgres_store(dsn: str, **extra: Any) -> dict[str, Any]:
    return {"backend": "postgres", "postgres": {"dsn": dsn, "connect_timeout": "2s",
                                                "statement_timeout": "5s", **extra}}


# -- replicas ---------------------------------------------------------------------------------

def _timestamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


@dataclass
class Replica:
    """One ``nightwatch run`` process and its log (one JSON object per line on stderr)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    paused: bool = False
    _events: list[dict[str, Any]] = field(default_factory=list)
    _offset: int = 0

    # -- the log --

    def events(self) -> list[dict[str, Any]]:
        """Every log line so far, parsed; a line that is not JSON is kept as ``{"raw": line}``."""
        with open(self.log_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # only whole lines
        self._offset += end
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"raw": line}
            if isinstance(event, dict):
                if "ts" in event:
                    event["t"] = _timestamp(event)
                self._events.append(event)
        return list(self._events)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def matching(self, needle: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if needle in e.get("msg", e.get("raw", ""))]

    def elections(self) -> list[dict[str, Any]]:
        return self.matching("became leader")

    def step_downs(self) -> list[dict[str, Any]]:
        return self.matching("stepping down")

    def writes(self) -> list[dict[str, Any]]:
        """Successful task status writes: the lines carrying ``from`` and ``to``."""
        return [e for e in self.events() if "from" in e and "to" in e]

    def leading(self) -> bool:
        """Its last leadership line says it leads (and it is running, not paused)."""
        if self.paused or self.proc.poll() is not None:
            return False
        marks = [e for e in self.events() if "became leader" in e.get("msg", "") or "stepping down" in e.get("msg", "")]
        return bool(marks) and "became leader" in marks[-1]["msg"]

    def epoch(self) -> int | None:
        elections = self.elections()
        return int(elections[-1]["epoch"]) if elections else None

    # -- signals --

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def pause(self) -> float:
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True
        return time.time()

    def resume(self) -> float:
        """The time of the resume, to the millisecond, floored: log lines carry truncated
        milliseconds, so a line the replica logs in that same millisecond must not read as
        earlier. (Stopped since its pause, the replica did nothing in that millisecond before.)"""
        resumed = math.floor(time.time() * 1000) / 1000
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False
        return resumed

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def __repr__(self) -> str:
        return f"Replica({self.name}, pid {self.proc.pid}, rc {self.proc.poll()})"


class Cluster:
    """Several replicas of one config (each its own file, identity and log) in ``workdir``."""

    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        self.workdir = workdir
        self.config = config
        self.replicas: list[Replica] = []

    @property
    def record(self) -> Path:
        return Path(self.config["jobs"]["local"]["record_path"])

    def start(self, name: str, *, env: dict[str, str] | None = None,
              overrides: dict[str, Any] | None = None, unfenced: bool = False) -> Replica:
        config = merge(self.config, {"lock": {"identity": name}, **(overrides or {})})
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        full_env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        full_env.update(env or {})
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as log, open(self.workdir / f"{name}.out", "wb") as out:
            command = UNFENCED_NIGHTWATCH if unfenced else NIGHTWATCH
            proc = subprocess.Popen([*command, "run", "--config", str(path)], stdout=out, stderr=log,
                                    stdin=subprocess.DEVNULL, cwd=self.workdir, env=full_env)
        replica = Replica(name, proc, log_path)
        self.replicas.append(replica)
        return replica

    def start_many(self, n: int, **kwargs: Any) -> list[Replica]:
        return [self.start(f"r{i}", **kwargs) for i in range(1, n + 1)]

    def leader(self, timeout: float = 15.0, *, besides: Iterable[Replica] = ()) -> Replica:
        """The replica that leads now (waiting up to ``timeout``), other than ``besides``."""
        skip = {r.name for r in besides}

        def find() -> Replica | None:
            leading = [r for r in self.replicas if r.name not in skip and r.leading()]
            return max(leading, key=lambda r: r.epoch() or 0) if leading else None

        return wait_until(find, timeout, lambda: f"a leader among "
                          f"{[r.name for r in self.replicas if r.name not in skip]}\n{self.tails()}")

    def launches(self) -> Counter[int]:
        """Task id -> how many Jobs were created for it (the gateways' shared launch record)."""
        if not self.record.exists():
            return Counter()
        return Counter(int(line.split()[0]) for line in self.record.read_text().splitlines() if line.strip())

    def tails(self, lines: int = 15) -> str:
        out = []
        for r in self.replicas:
            text = r.text().splitlines()[-lines:]
            out.append(f"--- {r.name} (pid {r.proc.pid}, rc {r.proc.poll()}) ---\n" + "\n".join(text))
        return "\n".join(out)

    def close(self) -> None:
        for r in self.replicas:
            if r.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    r.proc.send_signal(signal.SIGCONT)
                    r.proc.kill()
        for r in self.replicas:
            with contextlib.suppress(subprocess.TimeoutExpired):
                r.proc.wait(10)


@contextlib.contextmanager
def cluster(workdir: Path, config: dict[str, Any]) -> Iterator[Cluster]:
    c = Cluster(workdir, config)
    try:
        yield c
    finally:
        c.close()


def launching(tasks: SqlTasks, c: Cluster) -> bool:
    """True while the leader is between creating Jobs and writing their tasks' status: the
    launch record holds more tasks than have left ``Normal``."""
    launched = sum(n for status, n in tasks.counts().items() if status != "Normal")
    return len(c.launches()) > launched


# -- the user's own system: plain SQL on the task table ----------------------------------------

def task_info(i: int) -> str:
    """Every other task runs ``true``, the others ``sleep 0.1``."""
    if i % 2:
        return '{"image": "busybox", "command": ["true"]}'
    return '{"image": "busybox", "command": ["sleep"], "args": ["0.1"]}'


class SqlTasks:
    """The task table as the user's system sees it: created from the seed's DDL, rows inserted
    and statuses read with plain SQL (no nightwatch code)."""

    def __init__(self, kind: str, connect: Callable[[], Any]) -> None:
        self.kind = kind  # "mysql" | "postgres"
        self._connect = connect

    @classmethod
    def mysql(cls, server: MySQLServer, database: str) -> SqlTasks:
        return cls("mysql", lambda: server.connect(database))

    @classmethod
    def postgres(cls, dsn: str) -> SqlTasks:
        return cls("postgres", lambda: psycopg.connect(dsn, autocommit=True, connect_timeout=5))

    def execute(self, *statements: str) -> None:
        conn = self._connect()
        try:
            cur = conn.cursor()
            for statement in statements:
                cur.execute(statement)
            cur.close()
        finally:
            conn.close()

    def query(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            cur = conn.cursor()
            cur.execute(statement, params)
            rows = list(cur.fetchall())
            cur.close()
            return rows
        finally:
            conn.close()

    def create_table(self) -> None:
        """The seed's CREATE TABLE exactly as the user's system runs it (without its sample rows)."""
        script = (SEED_DIR / f"task-table.{self.kind}.sql").read_text()
        self.execute(*[s for s in sql_statements(script) if s.lstrip().upper().startswith("CREATE")])

    def insert(self, count: int, start: int = 1, prefix: str = "t",
               info: Callable[[int], str] = task_info) -> list[int]:
        rows = [(f"{prefix}-{i:04d}", "default", info(i), "Normal", 1) for i in range(start, start + count)]
        conn = self._connect()
        try:
            cur = conn.cursor()
            cur.executemany(
                "INSERT INTO task (name, namespace, info, status, user_id) VALUES (%s, %s, %s, %s, %s)", rows
            )
            cur.close()
        finally:
            conn.close()
        names = [r[0] for r in rows]
        return [row[0] for row in self.query("SELECT id, name FROM task ORDER BY id") if row[1] in set(names)]

    def statuses(self) -> dict[int, str]:
        return {int(i): str(s) for i, s in self.query("SELECT id, status FROM task")}

    def failed(self) -> list[tuple[int, str, str]]:
        """(id, name, message) of the Failed tasks."""
        return [(int(i), str(n), str(m)) for i, n, m in
                self.query("SELECT id, name, message FROM task WHERE status = 'Failed' ORDER BY id")]

    def unfinished(self) -> list[tuple[int, str, str]]:
        """(id, name, status) of the tasks not terminal yet."""
        return [(int(i), str(n), str(s)) for i, n, s in self.query(
            "SELECT id, name, status FROM task WHERE status NOT IN ('Succeeded', 'Failed', 'Cancelled') ORDER BY id")]

    def counts(self) -> Counter[str]:
        return Counter(self.statuses().values())

    def terminal(self) -> int:
        c = self.counts()
        return sum(c[s] for s in TERMINAL)

    def try_terminal(self) -> int:
        """Like ``terminal`` but -1 while the server is away."""
        try:
            return self.terminal()
        except (pymysql.err.MySQLError, psycopg.Error):
            return -1


# -- private database servers -----------------------------------------------------------------

def _run_as(user: str, *argv: str, timeout: float = 60) -> None:
    cmd = list(argv)
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", user, "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)


def _private_dir(owner: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="nwt-db-"))
    if os.geteuid() == 0:
        shutil.chown(path, owner, owner)
    return path


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb + pg_ctl, as the ``postgres`` user when root),
    trust auth on 127.0.0.1:<port>, fsync off. ``stop()``/``start()``/``restart()`` at will."""

    @staticmethod
    def bindir() -> Path | None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if found:
            return found[-1].parent
        on_path = shutil.which("pg_ctl")
        return Path(on_path).parent if on_path else None

    def __init__(self) -> None:
        bindir = self.bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bin = bindir
        self.port = free_port()
        self.dir = _private_dir("postgres")
        self.data = self.dir / "data"
        _run_as("postgres", str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                "--no-sync", "--no-instructions")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        _run_as("postgres", str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                "-l", str(self.dir / "server.log"), "-w", "-t", "30", "start")

    def stop(self) -> None:
        _run_as("postgres", str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            _run_as("postgres", str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateMariaDB:
    """A MariaDB server of its own (mariadb-install-db + mariadbd as the ``mysql`` user), root
    with no password on 127.0.0.1:<port>. ``stop()``/``start()`` at will."""

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("mariadbd") or Path("/usr/sbin/mariadbd").exists()) and bool(
            shutil.which("mariadb-install-db"))

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = _private_dir("mysql")
        self.data = self.dir / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=mysql",
             "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
            check=True, capture_output=True, timeout=120,
        )

    @property
    def url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}"

    def start(self) -> None:
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        with open(self.dir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [mariadbd, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
                 "--bind-address=127.0.0.1", f"--socket={self.dir / 'mysqld.sock'}", "--user=mysql",
                 "--skip-log-bin", "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
                 "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
                 f"--pid-file={self.dir / 'mysqld.pid'}"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            )
        wait_until(lambda: self.proc is not None and (self.proc.poll() is not None or _port_open(self.port)),
                   60, f"mariadbd to listen on {self.port}")
        assert self.proc.poll() is None, (self.dir / "server.log").read_text()[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # a clean shutdown, as `systemctl restart` does
            self.proc.wait(60)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)
