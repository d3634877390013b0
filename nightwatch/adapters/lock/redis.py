"""RedisLeaderLock: a lease in Redis; one URL = one node, 3 or 5 URLs = Redlock quorum.

Each term gets a fresh value ``<identity>:<random token>``. Acquire is ``SET NX PX``;
renew is a compare-and-``PEXPIRE`` that resets the lease to its full TTL; release is a
compare-and-delete that also pushes to a wake-up list which waiting standbys ``BLPOP``,
so a graceful hand-over takes milliseconds. With several nodes, every round needs a
majority and the lease is only trusted for ``ttl - elapsed - drift``. Each node has its
own client with short socket timeouts and no retries, so no call can outlast the renew
deadline.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.commands.core import Script
    from redis.retry import Retry
except ImportError as e:  # pragma: no cover - redis is a declared dependency
    raise ImportError("lock.backend: redis needs the 'redis' package (pip install redis)") from e

from nightwatch.domain.constants import REDIS_KEY_PREFIX, redis_lock_key, redis_wake_key
from nightwatch.domain.errors import BackendUnavailableError, ConfigError, LeadershipLostError
from nightwatch.domain.ports import Clock, LeaderLock

logger = logging.getLogger(__name__)

T = TypeVar("T")

WAKE_TTL_MS = 2000  # how long an unconsumed release signal lingers
WAIT_CHUNK = 1.0  # longest single BLPOP; its socket timeout is this plus socket_timeout

# KEYS[1] lock key; ARGV[1] our value, ARGV[2] ttl in ms. 1 renewed, 0 another's, -1 no key at all
RENEW = """
local value = redis.call('get', KEYS[1])
if value == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if not value then
  return -1
end
return 0
"""
MISSING = -1  # RENEW's answer on a node that has no lock key: restarted empty, or evicted

# KEYS[1] lock key, KEYS[2] wake list; ARGV[1] our value, ARGV[2] wake ttl ms, ARGV[3] '1' = wake
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  if ARGV[3] == '1' then
    redis.call('lpush', KEYS[2], ARGV[1])
    redis.call('pexpire', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
"""


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


@dataclass
class _Node:
    url: str  # redacted, for messages
    client: redis.Redis  # short timeouts, every command but BLPOP
    waiter: redis.Redis  # socket timeout long enough for one BLPOP chunk
    renew: Script
    release: Script


class RedisLeaderLock(LeaderLock):
    def __init__(
        self,
        name: str,
        urls: list[str],
        identity: str,
        ttl: float = 10.0,
        *,
        key_prefix: str = REDIS_KEY_PREFIX,
        socket_timeout: float = 0.5,
        drift_factor: float = 0.01,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(urls, str):
            urls = [urls]
        if not urls or (len(urls) > 1 and len(urls) % 2 == 0):
            raise ConfigError(
                f"lock.redis.urls: {len(urls)} URLs given; needs 1 (single node) "
                "or an odd number >= 3 (Redlock quorum)"
            )
        if ttl <= 0.002:
            raise ConfigError(f"lock.ttl: must be a positive duration, got {ttl}")
        self.name = name
        self.identity = identity
        self.ttl = ttl
        self.key = redis_lock_key(key_prefix, name)
        self.wake_key = redis_wake_key(key_prefix, name)
        self.quorum = len(urls) // 2 + 1
        self.drift = ttl * drift_factor + 0.002
        self._monotonic: Callable[[], float] = clock.monotonic if clock is not None else time.monotonic
        self._nodes = [self._node(url, socket_timeout) for url in urls]
        self._pool: ThreadPoolExecutor | None = None
        self._mutex = threading.Lock()
        self.value: str | None = None  # "<identity>:<token>" while we believe we hold the lease
        self._reported_empty: set[str] = set()  # nodes found without our key during this term

    @staticmethod
    def _node(url: str, socket_timeout: float) -> _Node:
        def client(read_timeout: float) -> redis.Redis:
            return redis.Redis.from_url(
                url,
                socket_timeout=read_timeout,
                socket_connect_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 0),  # a retry could outlast the renew deadline
                decode_responses=True,
            )

        try:
            if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
                raise ValueError("the scheme must be redis://, rediss:// or unix://")
            cmd, waiter = client(socket_timeout), client(socket_timeout + WAIT_CHUNK)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"lock.redis.urls: invalid Redis URL {_redacted(url)!r}: {e}") from e
        return _Node(_redacted(url), cmd, waiter, cmd.register_script(RENEW), cmd.register_script(RELEASE))

    # -- one round over every node --------------------------------------------------------

    def _on_all(self, op: Callable[[_Node], T]) -> list[T | Exception]:
        """``op`` on every node (in parallel when there are several); errors returned, not raised.

        Refused credentials are a ConfigError; any other exception, redis-py's or not, is that
        node failing this round, so one odd answer can never abort a whole round."""

        def call(node: _Node) -> T | Exception:
            try:
                return op(node)
            except redis.AuthenticationError as e:
                raise ConfigError(f"lock.redis.urls: Redis at {node.url} refused our credentials: {e}") from e
            except redis.RedisError as e:
                if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
                    raise ConfigError(f"lock.redis.urls: Redis at {node.url} needs a password: {e}") from e
                logger.debug("redis lock %r: %s failed: %s", self.name, node.url, e)
                return e
            except Exception as e:  # not a Redis error (say, a value that is not UTF-8)
                logger.debug("redis lock %r: %s failed: %s: %s", self.name, node.url, type(e).__name__, e)
                return e

        if len(self._nodes) == 1:
            return [call(self._nodes[0])]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self._nodes), thread_name_prefix=f"redislock-{self.name}")
        return list(self._pool.map(call, self._nodes))

    def _unavailable(self, what: str, results: list[Any]) -> BackendUnavailableError:
        errors = [(n.url, r) for n, r in zip(self._nodes, results, strict=True) if isinstance(r, Exception)]
        url, first = errors[0]
        why = str(first) if isinstance(first, redis.RedisError) else f"{type(first).__name__}: {first}"
        return BackendUnavailableError(
            f"redis lock {self.name!r}: cannot {what}: {len(errors)} of {len(self._nodes)} Redis nodes "
            f"unreachable (need {self.quorum}); {url}: {why}"
        )

    def _validity(self, started: float) -> float:
        return self.ttl - (self._monotonic() - started) - self.drift

    def _delete(self, value: str, wake: bool) -> list[Any]:
        args: list[str | int] = [value, WAKE_TTL_MS, "1" if wake else "0"]
        return self._on_all(lambda n: n.release(keys=[self.key, self.wake_key], args=args))

    # -- the port -------------------------------------------------------------------------

    def acquire(self) -> float | None:
        with self._mutex:
            if self.value is not None:  # we believe we hold it: keep the term if we still do
                try:
                    return self._renew_locked()
                except LeadershipLostError:
                    pass
            value = f"{self.identity}:{secrets.token_hex(16)}"
            ttl_ms = int(self.ttl * 1000)
            started = self._monotonic()
            results = self._on_all(lambda n: n.client.set(self.key, value, nx=True, px=ttl_ms))
            won = sum(r is True for r in results)
            validity = self._validity(started)
            if won >= self.quorum and validity > 0:
                self.value = value
                self._reported_empty = set()
                return validity
            answered = sum(not isinstance(r, Exception) for r in results)
            if won or answered < len(results):  # undo a partial (or unknown) round on every node
                self._delete(value, wake=False)
            if answered < self.quorum:
                raise self._unavailable("acquire", results)
            if won >= self.quorum:
                raise BackendUnavailableError(
                    f"redis lock {self.name!r}: acquire round took longer than the ttl ({self.ttl}s)"
                )
            return None

    def renew(self) -> float:
        with self._mutex:
            return self._renew_locked()

    def _renew_locked(self) -> float:
        value = self.value
        if value is None:
            raise LeadershipLostError(f"redis lock {self.name!r}: not held by {self.identity!r}")
        started = self._monotonic()
        ttl_ms = int(self.ttl * 1000)
        results = self._on_all(lambda n: n.renew(keys=[self.key], args=[value, ttl_ms]))
        ok = sum(r == 1 for r in results)
        failed = sum(isinstance(r, Exception) for r in results)
        if ok >= self.quorum:
            self._report_empty_nodes(results, ok)
            validity = self._validity(started)
            if validity > 0:
                return validity
            raise BackendUnavailableError(
                f"redis lock {self.name!r}: renew round took longer than the ttl ({self.ttl}s)"
            )
        if ok + failed >= self.quorum:  # the unreachable nodes might still be ours
            raise self._unavailable("renew", results)
        self.value = None
        if ok:
            self._delete(value, wake=False)
        raise LeadershipLostError(
            f"redis lock {self.name!r}: lease of {self.identity!r} is gone or taken over "
            f"(still ours on {ok} of {len(self._nodes)} nodes, need {self.quorum})"
        )

    def _report_empty_nodes(self, results: list[Any], ok: int) -> None:
        """A node that answers without any lock key while a quorum still holds ours has lost
        its data (a restart without persistence, or an eviction). Redlock stays safe only if
        such a node rejoins after the lease it forgot has expired: say so, once per node and term."""
        for node, result in zip(self._nodes, results, strict=True):
            if result == MISSING and node.url not in self._reported_empty:
                self._reported_empty.add(node.url)
                logger.warning(
                    "redis lock %r: the lease of %s is missing on %s while %d of %d nodes still hold it: "
                    "that node came back empty (restarted without persistence, or evicted the key); one more "
                    "such node and another replica could lead too. A Redis node without persistence must "
                    "stay down for the lock's TTL (%ss) before it restarts",
                    self.name, self.identity, node.url, ok, len(self._nodes), f"{self.ttl:g}",
                )

    def release(self) -> None:
        with self._mutex:
            value, self.value = self.value, None
            if value is None:
                return
            try:
                results = self._delete(value, wake=True)
            except ConfigError as e:
                logger.warning("redis lock %r: release failed: %s", self.name, e)
                return
            released = [r == 1 for r in results]
            if any(released) and not all(released) and len(self._nodes) > 1:
                self._wake_all(value)  # standbys may be blocked on a node where the key had gone
            errors = [r for r in results if isinstance(r, Exception)]
            if errors:
                logger.warning(
                    "redis lock %r: release failed on %d of %d nodes (the lease will expire within %ss): %s",
                    self.name, len(errors), len(self._nodes), self.ttl, errors[0],
                )

    def _wake_all(self, value: str) -> None:
        def push(node: _Node) -> Any:
            pipe = node.client.pipeline(transaction=False)
            pipe.lpush(self.wake_key, value)
            pipe.pexpire(self.wake_key, WAKE_TTL_MS)
            return pipe.execute()

        self._on_all(push)

    def wait(self, timeout: float) -> bool:
        """BLPOP the wake-up list on the first reachable node, in chunks, up to ``timeout``.

        Only a node that does not answer at all can stretch it, by at most the connect timeout.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        while (left := deadline - time.monotonic()) > 0.01:  # BLPOP 0 would block forever
            for node in self._nodes:
                left = deadline - time.monotonic()
                if left <= 0.01:
                    return False
                try:
                    if node.waiter.blpop([self.wake_key], timeout=min(left, WAIT_CHUNK)) is not None:
                        return True
                    break  # a quiet chunk on a live node: start again from the first node
                except Exception as e:  # redis-py's errors or any other: try the next node
                    logger.debug("redis lock %r: wait on %s failed: %s", self.name, node.url, e)
            else:  # no node answered: poll
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return False

    def holder(self) -> str | None:
        results = self._on_all(lambda n: n.client.get(self.key))
        answered = [r for r in results if not isinstance(r, Exception)]
        if len(answered) < self.quorum:
            raise self._unavailable("read the holder", results)
        for value in set(answered):
            if value is not None and answered.count(value) >= self.quorum:
                return str(value).rsplit(":", 1)[0]
        return None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        for node in self._nodes:
            node.client.close()
            node.waiter.close()
