"""The HTTP server under hostile conditions, through real HTTP: probes answer within 200 ms
whatever the backends do (a store that accepts and never answers, a Redis node that is
SIGSTOPped), an idle client does not keep a handler thread, and shutdown closes the port."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ops_cluster import free_port, http_get, wait_for
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sql_databases import postgres_database

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.lock.memory import InMemoryLeaderLock, MemoryLockHub
from nightwatch.adapters.lock.redis import RedisLeaderLock
from nightwatch.adapters.store.memory import InMemoryTaskStore
from nightwatch.app.config import load_config
from nightwatch.app.container import build_container
from nightwatch.app.daemon import Daemon
from nightwatch.app.elector import LeaderElector
from nightwatch.app.metrics import Metrics
from nightwatch.app.scheduler import Scheduler
from nightwatch.app.server import start_server

pytestmark = [pytest.mark.timeout(60)]

PROBE_BUDGET = 0.2  # seconds: a probe must answer within this, whatever the backends do
IDLE_LIMIT = 10.0  # seconds: a client that connects and sends nothing is hung up on within this


class FreezingProxy:
    """Forwards 127.0.0.1:<port> to ``target``. ``freeze()`` makes it a backend that hangs: open
    connections stop carrying bytes either way and new ones are accepted but never answered,
    as a stopped server or a black-holed network does. ``thaw()`` lets everything flow again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.flowing = threading.Event()
        self.flowing.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.flowing.set()
        for s in [self._listener, *self._conns]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self.flowing.wait()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._conns.append(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def timed_get(url: str, timeout: float = 3.0) -> tuple[float, int, str]:
    """(seconds taken, status, body); a request that got no answer within ``timeout`` is
    (timeout, 0, "no answer")."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            code, body = answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        code, body = e.code, e.read().decode()
    except (TimeoutError, urllib.error.URLError, ConnectionError):
        return timeout, 0, "no answer"
    return time.monotonic() - started, code, body


def probe_for(url: str, seconds: float) -> list[tuple[float, int, str]]:
    """/readyz every 100 ms for ``seconds``."""
    answers: list[tuple[float, int, str]] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        answers.append(timed_get(url))
        time.sleep(0.1)
    return answers


def memory_daemon() -> tuple[Daemon, Metrics]:
    clock = SystemClock()
    store, metrics = InMemoryTaskStore(clock), Metrics()
    lock = InMemoryLeaderLock("nightwatch", "probe", 2.0, clock, MemoryLockHub())
    elector = LeaderElector(lock, store, clock, identity="probe", renew_interval=0.2, renew_deadline=1.5,
                            retry_interval=0.1, metrics=metrics)
    return Daemon(store, elector, Scheduler([], clock, metrics=metrics), retry_interval=0.1), metrics


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[str]:
    with postgres_database(postgres_dsn) as dsn:
        yield dsn


@pytest.fixture
def stoppable_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server on a free loopback port, for the test to SIGSTOP."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            return False
        return True

    try:
        wait_for(answers, 5, "the private redis-server")
    except AssertionError:
        proc.kill()
        raise
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(5)


def run_in_thread(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def serve() -> Iterator[Callable[[dict[str, Any]], str]]:
    """``serve(overrides)``: a daemon built from the config, running in a thread behind its HTTP
    server; returns the /readyz URL. Stopped, and checked to have stopped, after the test."""
    running: list[tuple[Any, Daemon, Any, threading.Thread]] = []

    def start(overrides: dict[str, Any]) -> str:
        config = load_config(overrides={**overrides, "jobs": {"backend": "fake"}, "server": {"listen": ""}})
        container = build_container(config)
        daemon = container.daemon()
        server = start_server("127.0.0.1:0", daemon, container.metrics(), config["lock"]["ttl"])
        running.append((container, daemon, server, run_in_thread(daemon)))
        return f"http://127.0.0.1:{server.server_address[1]}/readyz"

    yield start
    for container, daemon, server, thread in running:
        daemon.request_stop()
        thread.join(10)
        server.shutdown()
        container.shutdown_resources()
        assert not thread.is_alive()


def assert_fast(answers: list[tuple[float, int, str]]) -> None:
    slowest = max(answers)
    print(f"{len(answers)} probes, slowest {slowest[0] * 1000:.1f} ms: {slowest[1]} {slowest[2].strip()}")
    assert slowest[0] < PROBE_BUDGET, f"a probe took {slowest[0]:.3f}s: {slowest}"


@pytest.mark.postgres
def test_readyz_answers_within_200ms_while_the_store_hangs(
        pg: str, unique_name: str, serve: Callable[[dict[str, Any]], str]) -> None:
    params = conninfo_to_dict(pg)
    proxy = FreezingProxy((str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)))
    try:
        url = serve({
            "store": {"backend": "postgres", "postgres": {
                "dsn": make_conninfo(pg, host="127.0.0.1", port=str(proxy.port)),
                "connect_timeout": "1s", "statement_timeout": "1s"}},
            "lock": {"backend": "memory", "name": unique_name, "identity": "hung-store", "ttl": "2s",
                     "renew_interval": "500ms", "renew_deadline": "1500ms", "retry_interval": "500ms"},
        })
        wait_for(lambda: timed_get(url)[2].startswith("leader"), 10, "a ready leader")
        healthy = probe_for(url, 1.0)
        assert_fast(healthy)
        proxy.freeze()
        hung = probe_for(url, 5.0)
        assert_fast(hung)
        # the answer is the last finished check, and says how old it is
        assert all(code == 200 and re.search(r"\(checked \d+\.\ds ago\)$", body.strip())
                   for _, code, body in healthy), healthy
        assert all(code in (200, 503) for _, code, _ in hung), hung
        assert hung[-1][1] == 503, hung[-1]  # the check has hung for long enough: not ready
        # either the check is still stuck, or the store's own connect timeout ended it first
        reason = hung[-1][2]
        assert ("has not answered" in reason or "store not reachable" in reason) \
            and len(reason.strip().splitlines()) == 1, hung[-1]

        proxy.thaw()
        wait_for(lambda: timed_get(url)[1] == 200, 15, "/readyz to recover with the store", 0.2)
    finally:
        proxy.close()


@pytest.mark.redis
def test_readyz_of_a_standby_answers_within_200ms_while_its_redis_is_stopped(
        stoppable_redis: tuple[str, subprocess.Popen[bytes]], unique_name: str,
        serve: Callable[[dict[str, Any]], str]) -> None:
    redis_url, redis_proc = stoppable_redis
    holder = RedisLeaderLock(unique_name, [redis_url], "the-leader", ttl=30.0)
    assert holder.acquire()  # another replica leads: this daemon stays a standby
    try:
        url = serve({
            "store": {"backend": "memory"},
            "lock": {"backend": "redis", "name": unique_name, "identity": "standby", "ttl": "4s",
                     "renew_interval": "500ms", "renew_deadline": "3s", "retry_interval": "500ms",
                     "redis": {"urls": [redis_url]}},
        })
        wait_for(lambda: timed_get(url)[2].startswith("standby (leader: the-leader)"), 10, "a ready standby")
        redis_proc.send_signal(signal.SIGSTOP)
        stopped = probe_for(url, 4.0)
        assert_fast(stopped)
        assert stopped[-1][1] == 503, stopped[-1]
        redis_proc.send_signal(signal.SIGCONT)
        wait_for(lambda: timed_get(url)[1] == 200, 10, "/readyz to recover with Redis", 0.2)
    finally:
        redis_proc.send_signal(signal.SIGCONT)
        holder.close()


def test_an_idle_client_is_disconnected_and_others_are_served() -> None:
    daemon, metrics = memory_daemon()
    server = start_server("127.0.0.1:0", daemon, metrics, 2.0)
    address = ("127.0.0.1", server.server_address[1])
    try:
        idle = [socket.create_connection(address, 2) for _ in range(20)]  # connect, never send a byte
        for s in idle:
            s.settimeout(IDLE_LIMIT)
        assert http_get(f"http://{address[0]}:{address[1]}/healthz")[0] in (200, 500)
        started = time.monotonic()
        for s in idle:
            try:
                assert s.recv(1024) == b""  # the server hung up on us
            except TimeoutError:
                pytest.fail(f"an idle client was still connected after {time.monotonic() - started:.1f}s")
            s.close()
    finally:
        server.shutdown()


def test_shutdown_closes_the_listening_socket() -> None:
    daemon, metrics = memory_daemon()
    server = start_server("127.0.0.1:0", daemon, metrics, 2.0)
    port = server.server_address[1]
    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] in (200, 500)
    server.shutdown()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), 1).close()
    socket.create_server(("127.0.0.1", port)).close()  # and the port is free for the next one


class _HangingQueries:
    """The daemon's store, but every listing hangs until ``release`` is set (a console or API
    request stuck on a slow query)."""

    def __init__(self, inner: Any, release: threading.Event) -> None:
        self._inner, self._release = inner, release
        self.waiting = 0

    def query(self, q: Any) -> Any:
        self.waiting += 1
        self._release.wait(30)
        return self._inner.query(q)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_probes_answer_within_200ms_while_every_api_worker_is_busy() -> None:
    daemon, metrics = memory_daemon()
    release = threading.Event()
    store = _HangingQueries(daemon.store, release)
    server = start_server("127.0.0.1:0", daemon, metrics, 2.0, store=store)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = run_in_thread(daemon)
    busy = [threading.Thread(target=timed_get, args=(f"{base}/api/v1/tasks", 30.0), daemon=True)
            for _ in range(60)]  # more than the worker threads Starlette runs handlers in (40)
    try:
        wait_for(lambda: timed_get(f"{base}/readyz")[1] == 200, 10, "a ready leader")
        for t in busy:
            t.start()
        wait_for(lambda: store.waiting >= 40, 10, "the API's workers all stuck in a query")
        answers = [timed_get(f"{base}{path}") for _ in range(10) for path in ("/healthz", "/readyz", "/metrics")]
        assert_fast(answers)
        assert all(code == 200 for _, code, _ in answers), answers
    finally:
        release.set()
        for t in busy:
            t.join(10)
        daemon.request_stop()
        thread.join(10)
        server.shutdown()


def test_kept_alive_connections_have_tcp_nodelay() -> None:
    """Without TCP_NODELAY each response on a kept-alive connection waits for the client's
    delayed ACK (about 40 ms): uvicorn writes headers and body apart."""
    import http.client

    daemon, metrics = memory_daemon()
    server = start_server("127.0.0.1:0", daemon, metrics, 2.0)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        for _ in range(2):  # the same connection, kept alive
            conn.request("GET", "/healthz")
            conn.getresponse().read()
        (sock,) = server.open_sockets()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        conn.close()
    finally:
        server.shutdown()
