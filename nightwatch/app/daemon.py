"""The daemon: one loop that runs the election and, while leading, the scheduler."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING

from nightwatch.app.elector import LeaderElector
from nightwatch.app.scheduler import Scheduler
from nightwatch.domain.errors import BackendUnavailableError, ConfigError, FencedError, LockTimeoutError
from nightwatch.domain.model import Fence
from nightwatch.domain.ports import TaskStore

if TYPE_CHECKING:
    from nightwatch.adapters.store.notify import Notifier

logger = logging.getLogger(__name__)

MIGRATE_BACKOFF, MIGRATE_BACKOFF_CAP = 5.0, 60.0  # seconds after a migration's lock timeout, doubling
STANDBY_POLL = 0.25  # a standby checks for shutdown at least this often while it waits
CANCELLED_RUN_GRACE = 1.0  # how long `run --once` lets a cancelled run wind down before closing


class Daemon:
    """Candidate, then leader; steps down on a lost lease, a missed deadline or a fenced write.

    The daemon knows nothing of the container: it is handed its collaborators.
    """

    def __init__(
        self,
        store: TaskStore,
        elector: LeaderElector,
        scheduler: Scheduler,
        *,
        shutdown_timeout: float = 5.0,
        retry_interval: float = 1.0,
        step_down_timeout: float = 1.0,
        migrate: str = "auto",
        notifier: Notifier | None = None,
    ) -> None:
        self.store = store
        self.elector = elector
        self.scheduler = scheduler
        self._shutdown_timeout = shutdown_timeout
        self._retry_interval = retry_interval
        self._step_down_timeout = step_down_timeout
        self._notifier = notifier  # the store's new-row events, while leading (adapters/store/notify.py)
        self._migrate_mode = migrate  # auto: upgrade the schema before leading; off: refuse while behind
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._fenced: FencedError | None = None
        self.fatal: ConfigError | None = None  # a config problem met at run time: stop, say it in one line
        self._schedule = True
        self.migrated = False  # the schema is at the revision this nightwatch needs
        self.migrating = False  # a schema upgrade (or the wait for another replica's) is under way
        self.heartbeat = time.monotonic()  # the loop's last turn: /healthz reads it
        self.stopping = False
        elector.on_elected = self._elected
        elector.on_stepped_down = self._stepped_down
        scheduler.on_fenced = self.fenced
        scheduler.on_fatal = self.fail
        scheduler.on_wake = self._wake.set  # an event asked for a run: tick now

    # -- control from other threads (signal handlers, the HTTP server) -----------------------

    def request_stop(self) -> None:
        self.stopping = True
        self._stop.set()
        self._wake.set()

    def fenced(self, error: FencedError) -> None:
        """A watcher's write was refused by the epoch check: a newer leader exists."""
        fence = self.elector.fence
        if fence is None or error.epoch != fence.epoch:
            # a late run of a term we already left: the current term is not concerned
            logger.debug("ignoring a fenced write of epoch %s (current: %s)", error.epoch, fence)
            return
        self._fenced = error
        self._wake.set()

    def fail(self, error: ConfigError) -> None:
        """A configuration problem found only at run time (say, an unreadable kubeconfig)."""
        self.fatal = self.fatal or error
        self.request_stop()

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> int:
        """Until stopped. Raises ConfigError when the config turned out wrong at run time."""
        try:
            self._prepare_schema()
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                try:
                    self._turn()
                except ConfigError:
                    raise
                except Exception:  # a bug or an untranslated driver error: never lead through it
                    logger.exception("daemon loop: unexpected error; stepping down and retrying")
                    self.elector.step_down("error")
                    self._stop.wait(self._retry_interval)
        finally:
            self._shutdown()
        if self.fatal is not None:
            raise self.fatal
        return 0

    def run_once(self, wait: float) -> int:
        """Become leader (waiting up to ``wait`` seconds), run every watcher once, hand over."""
        self._schedule = False
        deadline = time.monotonic() + wait
        self._prepare_schema(deadline)
        if not self.migrated:
            logger.error("the schema could not be checked or upgraded within %.0fs", wait)
            return 1
        while not self.elector.is_leader and not self._stop.is_set():
            if (delay := self.elector.tick()) and not self.elector.is_leader:
                self.elector.lock.wait(min(delay, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline and not self.elector.is_leader:
                holder = self.elector.lock.holder()
                logger.error("could not become leader within %.0fs (lock %r held by %s)",
                             wait, self.elector.lock.name, holder or "nobody")
                return 1
        if not self.elector.is_leader:
            return 1
        done = self.scheduler.start_once(self.elector.fence)
        done.add_done_callback(lambda _: self._wake.set())
        try:
            # Renew the lease while the watchers run: a cycle may outlast the ttl.
            while not done.done() and self.elector.is_leader and not self._stop.is_set():
                delay = self.elector.tick()
                self._wake.wait(min(delay, 1.0))
                self._wake.clear()
            if not done.done() and self.elector.is_leader:  # stopped by a signal: as `run` does
                logger.info("shutting down: finishing the run in flight (up to %.1fs), then releasing the lock",
                            self._shutdown_timeout)
                self._drain()
        except ConfigError as e:  # the elector stepped down already
            self.fatal = self.fatal or e
        finally:
            self.elector.step_down("shutdown")  # cancels what is left of the run
            wait_futures([done], CANCELLED_RUN_GRACE)
            self.scheduler.close()
        return 0 if done.done() and not done.exception() and done.result() else 1

    # -- the schema, before the first election ---------------------------------------------

    def _prepare_schema(self, deadline: float = math.inf) -> None:
        """Bring the schema to the revision this nightwatch needs (``auto``) or check it is
        there (``off``), retrying while the store is away, until done or stopped. The upgrade
        runs on a thread of its own so the loop keeps its heartbeat (``/healthz``) through a
        long index build or a wait for another replica's migration; a stop ends the wait."""
        lock_timeouts = 0
        while not self._stop.is_set() and not self.migrated and time.monotonic() < deadline:
            self.heartbeat = time.monotonic()
            try:
                if self._migrate_mode == "off":
                    self._check_schema()
                else:
                    self._upgrade_schema(deadline)
            except BackendUnavailableError as e:
                if self._stop.is_set():
                    break
                delay = self._retry_interval
                if isinstance(e, LockTimeoutError):  # each attempt queues the user's writes: back off
                    lock_timeouts += 1
                    delay = min(MIGRATE_BACKOFF_CAP, MIGRATE_BACKOFF * 2 ** (lock_timeouts - 1))
                    delay *= random.uniform(0.75, 1.25)  # replicas that failed together retry apart
                logger.warning("store unavailable, staying a standby: %s; retrying in %.1fs", e, delay)
                self._stop.wait(min(delay, max(0.0, deadline - time.monotonic())))

    def _check_schema(self) -> None:
        found, needed = self.store.schema_status()
        if found != needed:
            raise ConfigError(f"store.migrate is off and the schema is at {found or 'none'}, nightwatch needs "
                              f"{needed}: run nightwatch db migrate")
        self.migrated = True

    def _upgrade_schema(self, deadline: float = math.inf) -> None:
        outcome: list[BaseException | None] = []

        def upgrade() -> None:
            try:
                self.store.migrate(stop=self._stop)
                outcome.append(None)
            except BaseException as e:  # handed to the loop's thread, which decides
                outcome.append(e)

        worker = threading.Thread(target=upgrade, name="migrate", daemon=True)
        self.migrating = True
        try:
            worker.start()
            while worker.is_alive() and not self._stop.is_set() and time.monotonic() < deadline:
                self.heartbeat = time.monotonic()
                worker.join(STANDBY_POLL)
        finally:
            self.migrating = False
        if not outcome and not self._stop.is_set():  # past the deadline: the caller says so
            return
        if not outcome:  # stopped while it ran: the process exits without waiting for the DDL
            logger.info("shutdown during the schema migration: not waiting for it")
            return
        if outcome[0] is not None:
            raise outcome[0]
        self.migrated = True

    def _turn(self) -> None:
        self._wake.clear()  # before the tick: a wake that comes during it is not lost
        if self._fenced is not None:
            error, self._fenced = self._fenced, None
            self.elector.step_down("fenced", str(error))
        delay = self.elector.tick()
        if self.elector.is_leader:
            delay = min(delay, self.scheduler.tick())
            self._wake.wait(min(delay, 1.0))
        else:
            self._standby_wait(delay)

    def _standby_wait(self, delay: float) -> None:
        """Wait ``delay`` for the next attempt, at once when the leader releases, or on stop."""
        end = time.monotonic() + delay
        while not self._stop.is_set():
            chunk = min(STANDBY_POLL, end - time.monotonic())
            if chunk <= 0:
                return
            try:
                if self.elector.lock.wait(chunk):  # woken by a release: try now
                    return
            except BackendUnavailableError:
                self._stop.wait(chunk)

    def _elected(self, fence: Fence) -> None:
        if self._schedule:
            self.scheduler.start(fence)
            if self._notifier is not None:
                self._notifier.resume()

    def _stepped_down(self, reason: str) -> None:
        if self._notifier is not None:
            self._notifier.pause()
        # On shutdown the run already had its time (see _drain): cancel it and let go at once.
        self.scheduler.stop(0 if reason == "shutdown" else self._step_down_timeout, cancel_at_once=True)

    def _shutdown(self) -> None:
        if self.elector.is_leader:
            logger.info("shutting down: finishing the run in flight (up to %.1fs), then releasing the lock",
                        self._shutdown_timeout)
            self._drain()
        if self.elector.is_leader:
            self.elector.step_down("shutdown")
            logger.info("%s: released lock %r for a standby to take over", self.elector.identity,
                        self.elector.lock.name, extra={"replica": self.elector.identity})
        self.scheduler.close()
        if self._notifier is not None:
            self._notifier.close()
        logger.info("%s: stopped", self.elector.identity, extra={"replica": self.elector.identity})


    def _drain(self) -> None:
        """Schedule nothing new and give the run in flight ``shutdown_timeout`` to finish,
        renewing the lease meanwhile so it cannot lapse under that run (then step-down
        cancels whatever is left). A renewal that fails steps down as it always does."""
        self.scheduler.pause()
        deadline = time.monotonic() + self._shutdown_timeout
        while self.scheduler.busy and self.elector.is_leader:
            left = deadline - time.monotonic()
            if left <= 0:
                logger.warning("shutdown: the run in flight did not finish within %.1fs; cancelling it",
                               self._shutdown_timeout)
                return
            try:
                delay = self.elector.tick()
            except ConfigError as e:  # stepped down already; stop with it once shut down
                self.fatal = self.fatal or e
                return
            time.sleep(max(0.01, min(delay, left, 0.05)))


def install_signal_handlers(daemon: Daemon, hard_exit: Callable[[int], None]) -> None:
    """First SIGTERM/SIGINT: graceful stop. Second: exit at once."""
    import signal

    def handle(signum: int, frame: object) -> None:
        if daemon.stopping:
            logger.warning("second signal: exiting now")
            hard_exit(128 + signum)
        logger.info("received %s: shutting down", signal.Signals(signum).name)
        daemon.request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
