"""Leader election: candidate -> leader -> (renewal fails before the deadline) -> candidate.

The elector is driven by ``tick()``, which does one step and says how long to wait before
the next; the daemon loops over it, tests drive it with a fake clock. Leadership starts
with a new fencing epoch from the store, so a paused ex-leader cannot write after waking.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from nightwatch.app.metrics import Metrics
from nightwatch.domain.errors import BackendUnavailableError, ConfigError, LeadershipLostError
from nightwatch.domain.model import Fence
from nightwatch.domain.ports import Clock, LeaderLock, TaskStore

logger = logging.getLogger(__name__)


class Role(enum.StrEnum):
    CANDIDATE = "candidate"
    LEADER = "leader"


class LeaderElector:
    def __init__(
        self,
        lock: LeaderLock,
        store: TaskStore,
        clock: Clock,
        *,
        identity: str,
        renew_interval: float = 2.0,
        renew_deadline: float = 7.0,
        retry_interval: float = 1.0,
        on_elected: Callable[[Fence], None] = lambda fence: None,
        on_stepped_down: Callable[[str], None] = lambda reason: None,
        metrics: Metrics | None = None,
    ) -> None:
        self.lock = lock
        self.identity = identity
        self._store = store
        self._clock = clock
        self._renew_interval = renew_interval
        self._renew_deadline = renew_deadline
        self._retry_interval = retry_interval
        self.on_elected = on_elected
        self.on_stepped_down = on_stepped_down
        self._metrics = metrics or Metrics()
        self.role = Role.CANDIDATE
        self.fence: Fence | None = None
        self.last_renewed = 0.0  # monotonic time of the last successful acquire/renew
        self._valid_until = 0.0  # the lease's own validity, on our clock
        self._next_renew = 0.0

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def deadline(self) -> float:
        """Monotonic time by which we must have renewed, or step down."""
        return min(self.last_renewed + self._renew_deadline, self._valid_until)

    def tick(self) -> float:
        """One step of the election. Seconds until the next step is due.

        Raises ConfigError, after stepping down, when the lock refuses our configuration
        (say, its password was rotated while we led): no retry can mend that."""
        if self.role is Role.CANDIDATE:
            return self._try_acquire()
        now = self._clock.monotonic()
        if now >= self._next_renew:
            self._renew(now)
        if self.role is Role.LEADER and self._clock.monotonic() >= self.deadline():
            self.step_down("deadline")
        if not self.is_leader:
            return self._retry_interval
        now = self._clock.monotonic()
        return max(0.0, min(self._next_renew, self.deadline()) - now)

    def step_down(self, reason: str, detail: str = "") -> None:
        """Stop leading (the callback stops the scheduler first), then release the lock.

        ``reason`` is one of lost, deadline, fenced, shutdown, error (a metric label);
        ``detail`` is for the log. The release is best-effort: a lease we cannot release
        expires by itself within its ttl."""
        if self.role is not Role.LEADER:
            return
        fence = self.fence
        log = logger.info if reason == "shutdown" else logger.warning
        log("%s: stepping down as leader (epoch %s): %s%s", self.identity, fence and fence.epoch, reason,
            f" ({detail})" if detail else "",
            extra={"epoch": fence and fence.epoch, "replica": self.identity})
        self.role = Role.CANDIDATE
        self.fence = None
        self._metrics.is_leader.set(0)
        self._metrics.tasks.clear()  # only the leader reports task counts: no stale copies to sum
        self._metrics.leader_transitions.labels(reason).inc()
        try:
            self.on_stepped_down(reason)
        finally:
            try:
                self.lock.release()
            except Exception as e:  # whatever the lock raises, we have stepped down already
                logger.warning("%s: could not release lock %r (%s: %s); it expires within its ttl",
                               self.identity, self.lock.name, type(e).__name__, e,
                               extra={"replica": self.identity})

    def _try_acquire(self) -> float:
        try:
            validity = self.lock.acquire()
        except BackendUnavailableError as e:
            self._warn(f"lock unavailable: {e}")
            return self._retry_interval
        if validity is None:
            return self._retry_interval
        started = self._clock.monotonic()
        try:
            epoch = self._store.begin_term(self.lock.name)
        except BackendUnavailableError as e:
            self._warn(f"took the lock but cannot start a term in the store: {e}")
            self.lock.release()
            return self._retry_interval
        except BaseException:
            self.lock.release()
            raise
        if self._clock.monotonic() >= min(started + validity, started + self._renew_deadline):
            self._warn("starting a term took longer than the lease allows; letting go")
            self.lock.release()
            return self._retry_interval
        self.role = Role.LEADER
        self.fence = Fence(self.lock.name, epoch, self.identity)
        self.last_renewed = started
        self._valid_until = started + validity
        self._next_renew = started + self._renew_interval
        self._metrics.is_leader.set(1)
        self._metrics.leader_epoch.set(epoch)
        self._metrics.leader_transitions.labels("acquired").inc()
        logger.info("%s: became leader with epoch %d", self.identity, epoch,
                    extra={"epoch": epoch, "replica": self.identity})
        self.on_elected(self.fence)
        return max(0.0, self._next_renew - self._clock.monotonic())

    def _renew(self, now: float) -> None:
        started = time.perf_counter()
        try:
            validity = self.lock.renew()
        except LeadershipLostError as e:
            self.step_down("lost", str(e))
            return
        except ConfigError as e:
            self.step_down("error", str(e))
            raise
        except Exception as e:  # an outage, or anything else the lock raised: a failed renew
            left = self.deadline() - self._clock.monotonic()
            what = str(e) if isinstance(e, BackendUnavailableError) else f"{type(e).__name__}: {e}"
            logger.warning("%s: lock renew failed (%s); stepping down in %.1fs unless one succeeds",
                           self.identity, what, left, extra={"replica": self.identity})
            self._next_renew = now + min(self._renew_interval, max(0.1, left / 2))
            return
        finally:
            self._metrics.lock_renew_seconds.observe(time.perf_counter() - started)
        self.last_renewed = now
        self._valid_until = now + validity
        self._next_renew = now + self._renew_interval

    def _warn(self, message: str) -> None:
        """One line per attempt (one per retry interval), never a traceback."""
        logger.warning("%s: %s; retrying in %.1fs", self.identity, message, self._retry_interval,
                       extra={"replica": self.identity})
