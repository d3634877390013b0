"""Helpers for the LeaderLock contract suite: one ``LockBackend`` per adapter.

The fixtures that use them live in ``test_leader_lock.py``.
``redis3`` runs three throw-away ``redis-server`` processes on free loopback ports.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.lock.file import FileLeaderLock
from nightwatch.adapters.lock.memory import InMemoryLeaderLock, MemoryLockHub
from nightwatch.adapters.lock.redis import RedisLeaderLock
from nightwatch.domain.constants import redis_lock_key
from nightwatch.domain.ports import LeaderLock

REQUIRE = os.environ.get("NIGHTWATCH_REQUIRE_BACKENDS") == "1"
TTL = 2.0  # long enough that no lease lapses by accident, short enough to observe PTTL
LOCK_NAME = "contract"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServers:
    """Throw-away ``redis-server`` processes (no persistence) that a test can stop and restart."""

    def __init__(self, count: int, *extra_args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            msg = "no redis-server binary on PATH (needed for the 3-node Redlock tests)"
            if REQUIRE:
                pytest.fail(f"NIGHTWATCH_REQUIRE_BACKENDS=1 but {msg}", pytrace=False)
            pytest.skip(msg)
        self.binary = binary
        self.extra_args = list(extra_args)
        self.ports = [free_port() for _ in range(count)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        for i in range(count):
            self.start(i)

    @property
    def urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{port}/0" for port in self.ports]

    def client(self, i: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.ports[i], socket_timeout=1, decode_responses=True)

    def start(self, i: int) -> None:
        args = [self.binary, "--port", str(self.ports[i]), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", *self.extra_args]
        self.procs[i] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.ports[i]), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self, i: int) -> None:
        proc, self.procs[i] = self.procs[i], None
        if proc is not None:
            proc.kill()
            proc.wait(5)

    def close(self) -> None:
        for i in range(len(self.procs)):
            self.stop(i)


@dataclass
class LockBackend:
    """One adapter under test, plus the backend-side handles the contract needs."""

    kind: str
    make_lock: Callable[[str, float], LeaderLock]
    lapse: Callable[[], None]  # the current lease expires (as if its holder had paused too long)
    advance: Callable[[float], None]  # let this much time pass on the lease's clock
    ttl_left: Callable[[], float | None] | None = None  # seconds the backend keeps the lease; None: file
    cleanup: Callable[[], None] = lambda: None
    made: list[LeaderLock] = field(default_factory=list)

    def make(self, identity: str, ttl: float = TTL) -> LeaderLock:
        lock = self.make_lock(identity, ttl)
        self.made.append(lock)
        return lock

    def close(self) -> None:
        for lock in self.made:
            lock.close()
        self.cleanup()


def memory_backend() -> LockBackend:
    clock, hub = FakeClock(), MemoryLockHub()

    def ttl_left() -> float | None:
        lease = hub.leases.get(LOCK_NAME)
        return None if lease is None else lease.expires_at - clock.monotonic()

    return LockBackend(
        kind="memory",
        make_lock=lambda identity, ttl: InMemoryLeaderLock(LOCK_NAME, identity, ttl, clock, hub),
        lapse=lambda: clock.advance(TTL + 0.001),
        advance=clock.advance,
        ttl_left=ttl_left,
    )


def file_backend(path: Path) -> LockBackend:
    return LockBackend(
        kind="file",
        make_lock=lambda identity, ttl: FileLeaderLock(LOCK_NAME, str(path), identity),
        lapse=lambda: path.unlink(),
        advance=time.sleep,
    )


def redis_backend(kind: str, urls: list[str], prefix: str) -> LockBackend:
    key = redis_lock_key(prefix, LOCK_NAME)
    clients = [redis.Redis.from_url(u, socket_timeout=1, decode_responses=True) for u in urls]

    def lapse() -> None:
        for c in clients:
            c.delete(key)

    def ttl_left() -> float | None:
        pttls = [int(c.pttl(key)) for c in clients]
        return max(pttls) / 1000 if max(pttls) >= 0 else None

    def cleanup() -> None:
        for c in clients:
            for k in list(c.scan_iter(match=f"{prefix}*")):
                c.delete(k)
            c.close()

    return LockBackend(
        kind=kind,
        make_lock=lambda identity, ttl: RedisLeaderLock(LOCK_NAME, urls, identity, ttl, key_prefix=prefix),
        lapse=lapse,
        advance=time.sleep,
        ttl_left=ttl_left,
        cleanup=cleanup,
    )


def make_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> LockBackend:
    if kind == "memory":
        return memory_backend()
    if kind == "file":
        return file_backend(tmp_path / "locks" / "nightwatch.lock")
    if kind == "redis1":
        return redis_backend(kind, [request.getfixturevalue("redis_url")], f"{unique_name}:")
    urls = request.getfixturevalue("redis_trio").urls  # the fixture lives in test_leader_lock.py
    return redis_backend(kind, urls, f"{unique_name}:")
