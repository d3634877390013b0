"""Redlock and Redis nodes without persistence: a node that restarts empty while a replica
leads forgets the lease, and with a second such restart another replica could win a quorum.
The leader sees it on its next renew (the key is missing on that node while the others still
hold it) and says so in the log, once per node and term. Three private redis-servers."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from lock_fixtures import RedisServers

from nightwatch.adapters.lock.redis import RedisLeaderLock

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

LOGGER = "nightwatch.adapters.lock.redis"


@pytest.fixture
def trio() -> Iterator[RedisServers]:
    servers = RedisServers(3)
    yield servers
    servers.close()


def warnings_about(caplog: pytest.LogCaptureFixture, url: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING and url in r.getMessage()]


def test_a_quorum_node_restarted_empty_while_leading_is_warned_once(
        trio: RedisServers, caplog: pytest.LogCaptureFixture, unique_name: str) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    lock = RedisLeaderLock(unique_name, trio.urls, "leader", ttl=10.0)
    try:
        assert lock.acquire()
        for _ in range(3):
            assert lock.renew() > 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # healthy: silent

        trio.stop(1)
        trio.start(1)  # back on the same port, empty: no persistence
        for _ in range(4):  # the first call may meet the dead connection; the next ones reconnect
            assert lock.renew() > 0  # two of three still hold it: this replica still leads
        (warning,) = warnings_about(caplog, trio.urls[1])
        assert "missing" in warning and "2 of 3" in warning, warning
        assert "10s" in warning and "restart" in warning, warning  # names the rule: wait out the TTL
        assert trio.client(1).get(lock.key) is None  # nothing was written behind our back
        assert not warnings_about(caplog, trio.urls[0]) and not warnings_about(caplog, trio.urls[2])

        lock.release()
        assert lock.acquire()  # a new term: the restarted node holds it again and all is quiet
        assert lock.renew() > 0
        assert len(warnings_about(caplog, trio.urls[1])) == 1
    finally:
        lock.close()


def test_a_node_that_is_down_is_not_reported_as_empty(
        trio: RedisServers, caplog: pytest.LogCaptureFixture, unique_name: str) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    lock = RedisLeaderLock(unique_name, trio.urls, "leader", ttl=10.0)
    try:
        assert lock.acquire()
        trio.stop(2)
        for _ in range(3):
            assert lock.renew() > 0
        assert not warnings_about(caplog, trio.urls[2])
    finally:
        lock.close()
