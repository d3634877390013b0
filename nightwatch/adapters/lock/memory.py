"""InMemoryLeaderLock: the reference LeaderLock, for tests and ``lock.backend: memory``.

Leases live in a ``MemoryLockHub``; every lock built without a hub shares one module-level
hub, so two instances with the same name in one process contend. Expiry follows the
injected clock (a ``FakeClock`` makes it deterministic), ``wait`` blocks on a condition
that ``release`` notifies.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass

from nightwatch.domain.errors import BackendUnavailableError, LeadershipLostError
from nightwatch.domain.ports import Clock, LeaderLock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    identity: str
    token: int
    expires_at: float  # on the holder's clock.monotonic()


class MemoryLockHub:
    """Where in-memory leases live. Tests read ``leases`` and flip ``unavailable``."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.leases: dict[str, Lease] = {}
        self.releases: dict[str, int] = {}  # graceful releases per name; wait() watches it
        self.unavailable = False  # test-only: acquire/renew/holder raise BackendUnavailableError
        self._tokens = itertools.count(1)

    def next_token(self) -> int:
        return next(self._tokens)

    def check_available(self, name: str) -> None:
        if self.unavailable:
            raise BackendUnavailableError(f"in-memory lock {name!r}: backend marked unavailable")


DEFAULT_HUB = MemoryLockHub()


class InMemoryLeaderLock(LeaderLock):
    def __init__(
        self, name: str, identity: str, ttl: float, clock: Clock, hub: MemoryLockHub | None = None
    ) -> None:
        self.name = name
        self.identity = identity
        self.ttl = ttl
        self.hub = hub if hub is not None else DEFAULT_HUB
        self._clock = clock
        self.token: int | None = None  # our term's token while we believe we hold the lease
        self.acquisitions = 0
        self.renewals = 0

    def _live(self) -> Lease | None:
        """The current unexpired lease (caller holds ``hub.cond``)."""
        lease = self.hub.leases.get(self.name)
        if lease is not None and lease.expires_at <= self._clock.monotonic():
            del self.hub.leases[self.name]
            return None
        return lease

    def acquire(self) -> float | None:
        with self.hub.cond:
            self.hub.check_available(self.name)
            lease = self._live()
            if lease is not None and lease.token != self.token:
                return None
            if lease is None:  # a new term (re-acquiring a lease we hold keeps the term)
                self.token = self.hub.next_token()
                self.acquisitions += 1
            assert self.token is not None
            self.hub.leases[self.name] = Lease(self.identity, self.token, self._clock.monotonic() + self.ttl)
            return self.ttl

    def renew(self) -> float:
        with self.hub.cond:
            self.hub.check_available(self.name)
            lease = self._live()
            if self.token is None or lease is None or lease.token != self.token:
                self.token = None
                raise LeadershipLostError(
                    f"in-memory lock {self.name!r}: lease of {self.identity!r} is gone"
                    + (f" (held by {lease.identity!r})" if lease else "")
                )
            self.hub.leases[self.name] = Lease(self.identity, lease.token, self._clock.monotonic() + self.ttl)
            self.renewals += 1
            return self.ttl

    def release(self) -> None:
        with self.hub.cond:
            token, self.token = self.token, None
            if self.hub.unavailable:
                logger.warning("in-memory lock %r: cannot release, backend marked unavailable", self.name)
                return
            lease = self._live()
            if token is None or lease is None or lease.token != token:
                return
            del self.hub.leases[self.name]
            self.hub.releases[self.name] = self.hub.releases.get(self.name, 0) + 1
            self.hub.cond.notify_all()

    def wait(self, timeout: float) -> bool:
        # Real time, not the injected clock: this is how long the caller's thread blocks.
        with self.hub.cond:
            seen = self.hub.releases.get(self.name, 0)
            return self.hub.cond.wait_for(
                lambda: self.hub.releases.get(self.name, 0) != seen, max(0.0, timeout)
            )

    def holder(self) -> str | None:
        with self.hub.cond:
            self.hub.check_available(self.name)
            lease = self._live()
            return lease.identity if lease else None

    def close(self) -> None:
        pass
