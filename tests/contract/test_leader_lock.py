"""The LeaderLock contract, against the Protocol only, over memory, file, redis1 and redis3;
then what only one adapter promises (file: crash release; Redis: quorum, timeouts, config)."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from lock_fixtures import TTL, LockBackend, RedisServers, free_port, make_backend

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.lock.file import FileLeaderLock
from nightwatch.adapters.lock.memory import InMemoryLeaderLock, MemoryLockHub
from nightwatch.adapters.lock.redis import RedisLeaderLock
from nightwatch.domain.constants import redis_lock_key, redis_wake_key
from nightwatch.domain.errors import BackendUnavailableError, ConfigError, LeadershipLostError
from nightwatch.domain.ports import LeaderLock

T = TypeVar("T")


@pytest.fixture(scope="session")
def redis_trio() -> Iterator[RedisServers]:
    """Three Redis nodes for the whole session; tests must not stop them (use ``RedisServers``)."""
    servers = RedisServers(3)
    yield servers
    servers.close()


REDIS_KINDS = [pytest.param(kind, marks=pytest.mark.redis) for kind in ("redis1", "redis3")]


@pytest.fixture(params=["memory", "file", *REDIS_KINDS])
def backend(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> Iterator[LockBackend]:
    """Every LeaderLock adapter."""
    b = make_backend(request.param, request, tmp_path, unique_name)
    yield b
    b.close()


@pytest.fixture(params=["memory", *REDIS_KINDS])
def expiring_backend(
    request: pytest.FixtureRequest, tmp_path: Path, unique_name: str
) -> Iterator[LockBackend]:
    """The adapters whose leases have a TTL (not the file lock: it lasts as long as its process)."""
    b = make_backend(request.param, request, tmp_path, unique_name)
    assert b.ttl_left is not None
    yield b
    b.close()


def timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    t0 = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - t0


# -- the contract ----------------------------------------------------------------------------


def test_two_contenders_exactly_one_acquires(backend: LockBackend) -> None:
    a, b = backend.make("a"), backend.make("b")
    va, vb = a.acquire(), b.acquire()
    assert va is not None and va > 0
    assert vb is None
    assert a.holder() == b.holder() == "a"


def test_racing_contenders_never_both_acquire(backend: LockBackend) -> None:
    locks = [backend.make(f"c{i}") for i in range(4)]
    barrier = threading.Barrier(len(locks))
    results: dict[str, float | None] = {}

    def contend(lock: LeaderLock, identity: str) -> None:
        barrier.wait()
        results[identity] = lock.acquire()

    threads = [threading.Thread(target=contend, args=(lock, f"c{i}")) for i, lock in enumerate(locks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [ident for ident, v in results.items() if v is not None]
    assert len(results) == len(locks)
    # Redlock may split the votes so that nobody wins a round; never more than one may.
    assert len(winners) <= 1 if backend.kind == "redis3" else len(winners) == 1
    assert locks[0].holder() == (winners[0] if winners else None)


def test_holder_is_none_when_free(backend: LockBackend) -> None:
    a = backend.make("a")
    assert a.holder() is None
    assert a.acquire() is not None
    a.release()
    assert a.holder() is None


def test_renew_keeps_the_lease(backend: LockBackend) -> None:
    a, b = backend.make("a"), backend.make("b")
    assert a.acquire() is not None
    for _ in range(3):
        validity = a.renew()
        assert validity > 0
        assert b.acquire() is None
    assert b.holder() == "a"


def test_validity_never_exceeds_ttl(backend: LockBackend) -> None:
    a = backend.make("a")
    acquired, renewed = a.acquire(), a.renew()
    assert acquired is not None
    if backend.ttl_left is not None:
        assert 0 < acquired <= TTL and 0 < renewed <= TTL
    else:
        assert acquired == renewed == math.inf


def test_release_lets_another_acquire(backend: LockBackend) -> None:
    a, b = backend.make("a"), backend.make("b")
    assert a.acquire() is not None
    a.release()
    assert b.acquire() is not None
    assert a.holder() == "b"
    with pytest.raises(LeadershipLostError):
        a.renew()


def test_release_wakes_a_waiter(backend: LockBackend) -> None:
    a, b = backend.make("a"), backend.make("b")
    assert a.acquire() is not None
    woke = threading.Event()
    said: list[bool] = []

    def wait_then_flag() -> None:
        said.append(b.wait(5))
        woke.set()

    waiter = threading.Thread(target=wait_then_flag)
    waiter.start()
    time.sleep(0.2)
    assert not woke.is_set(), "wait() returned although nobody released"
    released_at = time.monotonic()
    a.release()
    assert woke.wait(0.5), "the waiter did not wake within 0.5 s of the release"
    assert time.monotonic() - released_at < 0.5
    waiter.join(1)
    assert said == [True]  # it says a release woke it: the daemon tries at once on that
    assert b.acquire() is not None


def test_wait_returns_after_its_timeout_when_nothing_happens(backend: LockBackend) -> None:
    a, b = backend.make("a"), backend.make("b")
    assert a.acquire() is not None
    woken, elapsed = timed(b.wait, 0.3)
    assert 0.28 <= elapsed < 0.8
    assert woken is False
    _, elapsed = timed(b.wait, 0)
    assert elapsed < 0.1


def test_a_non_holders_release_does_not_free_the_lock(backend: LockBackend) -> None:
    a, b, c = backend.make("a"), backend.make("b"), backend.make("c")
    assert a.acquire() is not None
    assert b.acquire() is None
    b.release()
    c.release()  # never even tried
    assert c.acquire() is None
    assert a.renew() > 0
    assert c.holder() == "a"


def test_renew_without_the_lease_is_leadership_lost(backend: LockBackend) -> None:
    with pytest.raises(LeadershipLostError):
        backend.make("a").renew()


def test_renew_after_a_takeover_is_leadership_lost(backend: LockBackend) -> None:
    a, b, c = backend.make("a"), backend.make("b"), backend.make("c")
    assert a.acquire() is not None
    backend.lapse()  # a's lease is gone (expired, or the file deleted) ...
    assert b.acquire() is not None  # ... and b takes over
    with pytest.raises(LeadershipLostError):
        a.renew()
    a.release()  # the deposed holder's release must not free b's lease
    assert c.acquire() is None
    assert b.renew() > 0
    assert c.holder() == "b"


def test_a_deposed_holders_release_does_not_free_its_successor(backend: LockBackend) -> None:
    a, b, c = backend.make("a"), backend.make("b"), backend.make("c")
    assert a.acquire() is not None
    backend.lapse()
    assert b.acquire() is not None
    a.release()  # a has not noticed yet that it lost the lease
    assert c.acquire() is None
    assert b.renew() > 0
    assert c.holder() == "b"


def test_renew_resets_the_ttl_rather_than_adding_to_it(expiring_backend: LockBackend) -> None:
    backend = expiring_backend
    assert backend.ttl_left is not None
    a = backend.make("a")
    assert a.acquire() is not None
    backend.advance(0.3)
    a.renew()
    left = backend.ttl_left()
    assert left is not None
    assert TTL - 0.25 <= left <= TTL  # added, it would be about 2 * TTL - 0.3


def test_a_lease_lapses_without_renewal(expiring_backend: LockBackend) -> None:
    backend = expiring_backend
    a, b = backend.make("a", ttl=0.3), backend.make("b", ttl=0.3)
    assert a.acquire() is not None
    assert b.acquire() is None
    backend.advance(0.4)
    assert b.acquire() is not None
    with pytest.raises(LeadershipLostError):
        a.renew()


def test_acquire_again_while_holding_keeps_the_lease(backend: LockBackend) -> None:
    a, b = backend.make("a"), backend.make("b")
    assert a.acquire() is not None
    assert a.acquire() is not None
    assert b.acquire() is None
    assert a.renew() > 0


# -- memory ----------------------------------------------------------------------------------


def test_memory_locks_share_the_default_hub() -> None:
    clock = FakeClock()
    a = InMemoryLeaderLock("default-hub-test", "a", 5, clock)
    b = InMemoryLeaderLock("default-hub-test", "b", 5, clock)
    assert a.acquire() == 5
    assert b.acquire() is None
    a.release()
    assert b.acquire() == 5
    b.release()


def test_memory_lease_expires_by_the_injected_clock() -> None:
    clock, hub = FakeClock(), MemoryLockHub()
    a = InMemoryLeaderLock("x", "a", 10, clock, hub)
    b = InMemoryLeaderLock("x", "b", 10, clock, hub)
    assert a.acquire() == 10
    clock.advance(9.99)
    assert b.acquire() is None
    clock.advance(0.02)
    assert b.acquire() == 10
    assert (a.acquisitions, b.acquisitions) == (1, 1)


def test_memory_hub_can_be_made_unavailable() -> None:
    clock, hub = FakeClock(), MemoryLockHub()
    a = InMemoryLeaderLock("x", "a", 10, clock, hub)
    assert a.acquire() is not None
    hub.unavailable = True
    with pytest.raises(BackendUnavailableError):
        a.renew()
    with pytest.raises(BackendUnavailableError):
        a.acquire()
    with pytest.raises(BackendUnavailableError):
        a.holder()
    a.release()  # logs, never raises
    hub.unavailable = False
    assert a.holder() == "a"  # the failed release left the lease to expire by itself


# -- file ------------------------------------------------------------------------------------

HOLD_AND_SLEEP = """
import sys, time
from nightwatch.adapters.lock.file import FileLeaderLock
lock = FileLeaderLock("crash", sys.argv[1], "child")
assert lock.acquire() is not None
print("held", flush=True)
time.sleep(60)
"""


def test_file_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    path = str(tmp_path / "deep" / "dir" / "crash.lock")
    child = subprocess.Popen([sys.executable, "-c", HOLD_AND_SLEEP, path], stdout=subprocess.PIPE, text=True)
    mine = FileLeaderLock("crash", path, "parent")
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        assert mine.acquire() is None
        assert mine.holder() == "child"
        child.kill()
        child.wait(5)
        assert mine.acquire() == math.inf
        assert mine.holder() == "parent"
    finally:
        child.kill()
        child.wait(5)
        mine.close()


def test_file_lock_replaced_file_is_leadership_lost(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    a, b = FileLeaderLock("x", str(path), "a"), FileLeaderLock("x", str(path), "b")
    assert a.acquire() == math.inf
    replacement = tmp_path / "new"
    replacement.write_text("")
    replacement.replace(path)
    assert b.acquire() == math.inf
    with pytest.raises(LeadershipLostError):
        a.renew()
    a.close()
    assert b.holder() == "b"
    b.close()


# -- redis -----------------------------------------------------------------------------------


@pytest.fixture
def own_trio() -> Iterator[RedisServers]:
    """Three nodes of this test's own, which it may stop."""
    servers = RedisServers(3)
    yield servers
    servers.close()


@pytest.mark.redis
def test_redlock_acquires_with_one_node_of_three_down(own_trio: RedisServers) -> None:
    own_trio.stop(0)
    a = RedisLeaderLock("q", own_trio.urls, "a", ttl=TTL)
    b = RedisLeaderLock("q", own_trio.urls, "b", ttl=TTL)
    try:
        validity, elapsed = timed(a.acquire)
        assert validity is not None and TTL - 0.5 < validity < TTL
        assert elapsed < 1
        assert b.acquire() is None
        assert b.holder() == "a"
        assert 0 < a.renew() < TTL
        a.release()
        assert b.acquire() is not None
    finally:
        a.close()
        b.close()


@pytest.mark.redis
def test_redlock_without_a_quorum_holds_nothing(own_trio: RedisServers) -> None:
    a = RedisLeaderLock("q", own_trio.urls, "a", ttl=TTL)
    b = RedisLeaderLock("q", own_trio.urls, "b", ttl=TTL)
    try:
        assert a.acquire() is not None
        own_trio.stop(0)
        own_trio.stop(1)
        with pytest.raises(BackendUnavailableError):  # transient: not (yet) lost
            a.renew()
        t0 = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            b.acquire()
        assert time.monotonic() - t0 < 1
        with own_trio.client(2) as survivor:
            assert survivor.get("nightwatch:lock:q").startswith("a:")  # b left nothing behind
        a.release()  # never raises
        with own_trio.client(2) as survivor:
            assert survivor.get("nightwatch:lock:q") is None
    finally:
        a.close()
        b.close()


@pytest.mark.redis
def test_redlock_needs_a_majority_of_nodes(redis_trio: RedisServers, unique_name: str) -> None:
    prefix = f"{unique_name}:"
    key = redis_lock_key(prefix, "m")
    nodes = [redis_trio.client(i) for i in range(3)]
    a = RedisLeaderLock("m", redis_trio.urls, "a", ttl=TTL, key_prefix=prefix)
    try:
        nodes[0].set(key, "x:foreign", px=5000)  # a minority holds a stale foreign lease
        validity = a.acquire()
        assert validity is not None and 0 < validity < TTL
        assert a.holder() == "a"
        a.release()
        nodes[1].set(key, "x:foreign", px=5000)  # now a majority does
        assert a.acquire() is None
        assert a.holder() == "x"
        assert nodes[2].get(key) is None  # the failed round was undone on every node
    finally:
        a.close()
        for node in nodes:
            node.delete(key, redis_wake_key(prefix, "m"))
            node.close()


@pytest.mark.redis
def test_an_error_of_any_kind_on_one_node_of_three_costs_that_node_only(
        redis_trio: RedisServers, unique_name: str) -> None:
    """Not only redis-py's own errors: here one node holds a value that is not UTF-8, so
    reading it raises UnicodeDecodeError. The quorum answers regardless."""
    import redis as redis_py

    prefix = f"{unique_name}:"
    key = redis_lock_key(prefix, "u")
    raw = redis_py.Redis(host="127.0.0.1", port=redis_trio.ports[0], socket_timeout=1)
    a = RedisLeaderLock("u", redis_trio.urls, "a", ttl=TTL, key_prefix=prefix)
    try:
        raw.set(key, b"\xff\xfe", px=5000)
        assert a.acquire() is not None  # two of three nodes
        assert a.holder() == "a"
        assert 0 < a.renew() < TTL
        a.release()
        assert a.holder() is None
    finally:
        a.close()
        raw.delete(key, redis_wake_key(prefix, "u"))
        raw.close()


@pytest.mark.redis
def test_redis_down_is_backend_unavailable_fast() -> None:
    lock = RedisLeaderLock("down", [f"redis://127.0.0.1:{free_port()}/0"], "a")
    try:
        for call in (lock.acquire, lock.holder):
            t0 = time.monotonic()
            with pytest.raises(BackendUnavailableError, match="unreachable"):
                call()
            assert time.monotonic() - t0 < 1
        lock.release()
        _, elapsed = timed(lock.wait, 0.3)
        assert 0.28 <= elapsed < 0.8
    finally:
        lock.close()


@pytest.mark.redis
def test_redis_wrong_credentials_are_a_config_error() -> None:
    server = RedisServers(1, "--requirepass", "sekret")
    try:
        for url in (server.urls[0], server.urls[0].replace("//", "//:wrong@")):
            lock = RedisLeaderLock("auth", [url], "a")
            with pytest.raises(ConfigError, match=r"lock\.redis\.urls.*credentials") as refused:
                lock.acquire()
            assert ":wrong@" not in str(refused.value)  # the password is masked
            lock.close()
        good = RedisLeaderLock("auth", [server.urls[0].replace("//", "//:sekret@")], "a")
        assert good.acquire() is not None
        good.close()
    finally:
        server.close()


@pytest.mark.parametrize(
    "urls",
    [
        ["redis://127.0.0.1:notaport/0"],
        ["http://127.0.0.1:6379/0"],
        ["redis://127.0.0.1:6379/0", "redis://127.0.0.1:6380/0"],
        [f"redis://127.0.0.1:{p}/0" for p in range(6379, 6383)],
        [],
    ],
    ids=["bad-port", "bad-scheme", "two", "four", "none"],
)
def test_redis_bad_urls_are_config_errors(urls: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"lock\.redis\.urls"):
        RedisLeaderLock("x", urls, "a")
