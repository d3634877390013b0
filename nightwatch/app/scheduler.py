"""The watcher scheduler: cron with seconds or ``@every``, skip-if-running, survive errors.

Cron expressions are parsed by croniter (six fields, seconds first, as robfig/cron with
seconds); ``@every <duration>`` is ours because croniter has no interval form.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from croniter import croniter

from nightwatch.app.durations import parse_duration
from nightwatch.app.metrics import Metrics
from nightwatch.domain.errors import BackendUnavailableError, ConfigError, FencedError
from nightwatch.domain.model import Fence
from nightwatch.domain.ports import Clock, RunContext, Watcher

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """When a run is due: a monotonic time, and for cron the wall-clock time it stands for."""

    due: float
    wall: datetime | None = None


class Schedule:
    def first(self, mono: float, wall: datetime) -> Slot:
        """The first run."""
        raise NotImplementedError

    def following(self, slot: Slot, mono: float, wall: datetime) -> Slot:
        """The run after ``slot`` (never in the past, never ``slot`` again)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Every(Schedule):
    interval: float

    def first(self, mono: float, wall: datetime) -> Slot:
        return Slot(mono)  # a new leader runs at once

    def following(self, slot: Slot, mono: float, wall: datetime) -> Slot:
        nxt = slot.due + self.interval
        if nxt <= mono:  # fell behind (a long run, a pause): skip to the next slot
            nxt += ((mono - nxt) // self.interval + 1) * self.interval
        return Slot(nxt)


@dataclass(frozen=True)
class Cron(Schedule):
    """Slots are wall-clock times. The next slot is computed after the later of now and the
    last slot, so a wall clock stepped back (NTP, a resumed VM) cannot run a slot twice."""

    expression: str

    def _after(self, base: datetime, mono: float, wall: datetime) -> Slot:
        nxt: datetime = croniter(self.expression, base, second_at_beginning=True).get_next(datetime)
        return Slot(mono + (nxt - wall).total_seconds(), nxt)

    def first(self, mono: float, wall: datetime) -> Slot:
        return self._after(wall, mono, wall)

    def following(self, slot: Slot, mono: float, wall: datetime) -> Slot:
        return self._after(wall if slot.wall is None else max(wall, slot.wall), mono, wall)


def parse_schedule(spec: str, key: str = "spec") -> Schedule:
    """``@every 2s`` / ``@every 500ms``, or six-field cron with seconds first."""
    text = spec.strip() if isinstance(spec, str) else ""
    if text.startswith("@every"):
        try:
            interval = parse_duration(text[len("@every"):])
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
        if interval <= 0:
            raise ConfigError(f"{key}: @every needs a positive duration, got {spec!r}")
        return Every(interval)
    fields = text.split()
    if len(fields) != 6 or not croniter.is_valid(text, second_at_beginning=True):
        raise ConfigError(
            f"{key}: {spec!r} is not a schedule; use six-field cron with seconds first "
            "('*/5 * * * * *') or '@every 2s' / '@every 500ms'"
        )
    return Cron(text)


@dataclass
class _Entry:
    watcher: Watcher
    schedule: Schedule
    slot: Slot = Slot(0.0)
    running: Future[bool] | None = None
    ctx: RunContext | None = field(default=None)
    woken: bool = False  # a wake is pending: run as soon as no run of this watcher is going


class Scheduler:
    """Runs each watcher on its schedule while this replica leads.

    ``tick()`` starts what is due and says how long until the next thing is; the daemon
    calls it from its loop, tests call it with a fake clock. Runs execute on a pool with
    one thread per watcher (``inline=True`` runs them in ``tick`` for deterministic tests).
    """

    def __init__(
        self,
        watchers: Sequence[Watcher],
        clock: Clock,
        *,
        metrics: Metrics | None = None,
        on_fenced: Callable[[FencedError], None] | None = None,
        inline: bool = False,
    ) -> None:
        self._entries = [_Entry(w, parse_schedule(w.spec, f"watchers.{w.name}.spec")) for w in watchers]
        self._clock = clock
        self._metrics = metrics or Metrics()
        self.on_fenced = on_fenced  # the daemon sets it: a fenced write means step down
        self.on_fatal: Callable[[ConfigError], None] | None = None  # the daemon sets it: stop
        self._inline = inline
        self._pool = None if inline else ThreadPoolExecutor(
            max(1, len(self._entries)), thread_name_prefix="watcher"
        )
        self._fence: Fence | None = None
        self._active = False
        self._once: Future[bool] | None = None
        self._mutex = threading.Lock()
        self.on_wake: Callable[[], None] | None = None  # the daemon sets it: tick now, do not sleep

    @property
    def active(self) -> bool:
        return self._active

    @property
    def watchers(self) -> list[Watcher]:
        return [e.watcher for e in self._entries]

    def start(self, fence: Fence | None) -> None:
        """Begin scheduling for a leadership term."""
        mono, wall = self._clock.monotonic(), self._clock.now()
        with self._mutex:
            self._fence = fence
            for e in self._entries:
                e.slot = e.schedule.first(mono, wall)
                e.woken = False
            self._active = True

    def wake(self, name: str) -> None:
        """Run watcher ``name`` as soon as possible: now if it is idle, else once more right
        after the run in flight. Wakes before that run starts collapse into one. Thread-safe and
        never blocking (gateways and listeners call it from their own threads); while this
        replica does not lead it does nothing. The periodic schedule is left as it is."""
        with self._mutex:
            if not self._active:
                return
            entry = next((e for e in self._entries if e.watcher.name == name), None)
            if entry is None or entry.woken:
                return
            entry.woken = True
        self._metrics.watcher_wakes.labels(name).inc()
        if self.on_wake is not None:
            self.on_wake()

    def _woken_run_ended(self, entry: _Entry) -> None:
        if entry.woken and self.on_wake is not None:  # woken while it ran: the next run is due now
            self.on_wake()

    def tick(self) -> float:
        """Start every due or woken run; seconds until the next one is due."""
        if not self._active:
            return 3600.0
        mono, wall = self._clock.monotonic(), self._clock.now()
        for e in self._entries:
            if e.woken and (e.running is None or e.running.done()):
                with self._mutex:
                    e.woken = False
                self._start(e)
                continue
            if e.slot.due > mono:
                continue
            if e.slot.wall is not None and wall < e.slot.wall:  # the wall clock stepped back since
                e.slot = Slot(mono + (e.slot.wall - wall).total_seconds(), e.slot.wall)  # planned
                continue
            e.slot = e.schedule.following(e.slot, mono, wall)
            if e.running is not None and not e.running.done():
                logger.info("watcher %s: previous run still going; skipping this one", e.watcher.name)
                self._metrics.watcher_runs.labels(e.watcher.name, "skipped").inc()
                continue
            self._start(e)
        if any(e.woken and (e.running is None or e.running.done()) for e in self._entries):
            return 0.0
        return max(0.0, min((e.slot.due for e in self._entries), default=3600.0) - self._clock.monotonic())

    def _start(self, e: _Entry) -> None:
        e.ctx = RunContext(fence=self._fence)
        if self._pool is None:
            self._run(e.watcher, e.ctx)
            self._after_run(e)
        else:
            e.running = self._pool.submit(self._run, e.watcher, e.ctx)
            e.running.add_done_callback(lambda _: self._after_run(e))

    def _after_run(self, e: _Entry) -> None:
        """A watcher with more work than one run does (a launch backlog) asks for the next at
        once; a wake that came during the run is due now."""
        if getattr(e.watcher, "backlog", False) and not (e.ctx is not None and e.ctx.cancelled.is_set()):
            self.wake(e.watcher.name)
        self._woken_run_ended(e)

    def run_all_once(self, fence: Fence | None, ctx: RunContext | None = None) -> bool:
        """Run every watcher once, one after the other (``nightwatch run --once``), each whatever
        the others did, all with one context: once it is cancelled the rest do not start.
        True if every watcher ran and none failed; the failed ones are named in one line."""
        ctx = ctx or RunContext(fence=fence)
        with self._mutex:
            for e in self._entries:
                e.ctx = ctx  # so that stop() cancels this run too
        failed, skipped = [], []
        for e in self._entries:
            if ctx.cancelled.is_set():
                skipped.append(e.watcher.name)
            elif not self._run(e.watcher, ctx):
                failed.append(e.watcher.name)
        if failed:
            logger.error("run --once: %d of %d watcher run(s) failed: %s", len(failed), len(self._entries),
                         ", ".join(failed))
        if ctx.cancelled.is_set():
            logger.warning("run --once: cancelled%s", f"; not started: {', '.join(skipped)}" if skipped else "")
        return not failed and not ctx.cancelled.is_set()

    def start_once(self, fence: Fence | None) -> Future[bool]:
        """``run_all_once`` on the pool, so the caller can renew the lease meanwhile; ``busy``
        until it ends, ``stop()`` cancels it."""
        if self._pool is None:
            done: Future[bool] = Future()
            done.set_result(self.run_all_once(fence))
            return done
        self._once = self._pool.submit(self.run_all_once, fence, RunContext(fence=fence))
        return self._once

    def pause(self) -> None:
        """Start nothing new; runs in flight go on."""
        self._active = False

    @property
    def busy(self) -> bool:
        """Whether a run is in flight."""
        return (self._once is not None and not self._once.done()) or any(
            e.running is not None and not e.running.done() for e in self._entries)

    def stop(self, timeout: float, *, cancel_at_once: bool = True) -> bool:
        """Stop scheduling. Runs in flight are cancelled at once, or (on shutdown) given
        ``timeout`` to finish and cancelled after that. True if none is left running."""
        with self._mutex:
            self._active = False
            for e in self._entries:
                e.woken = False
            running = [(e.watcher.name, e.running) for e in self._entries
                       if e.running is not None and not e.running.done()]
            if self._once is not None and not self._once.done():
                running.append(("run --once", self._once))
        if cancel_at_once:
            self._cancel_all()
        deadline = time.monotonic() + timeout
        late = []
        for name, future in running:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                late.append(name)
            except Exception:  # noqa: S110 - already logged by _run
                pass
        self._cancel_all()
        if late:
            logger.warning("watcher run(s) of %s still going after %.1fs: cancelled",
                           ", ".join(late), timeout)
        return not late

    def _cancel_all(self) -> None:
        for e in self._entries:
            if e.ctx is not None:
                e.ctx.cancelled.set()

    def close(self) -> None:
        self.stop(0)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for e in self._entries:
            closer = getattr(e.watcher, "close", None)
            if callable(closer):
                closer()

    def _run(self, watcher: Watcher, ctx: RunContext) -> bool:
        started = time.perf_counter()
        result = "ok"
        try:
            watcher.run(ctx)
            return True
        except FencedError as e:
            result = "error"
            logger.error("watcher %s: %s; stepping down", watcher.name, e)
            if self.on_fenced is not None:
                self.on_fenced(e)
            return False
        except BackendUnavailableError as e:
            result = "error"
            logger.warning("watcher %s: run failed, backend unavailable: %s", watcher.name, e)
            return False
        except ConfigError as e:
            result = "error"
            logger.error("watcher %s: %s", watcher.name, e)
            if self.on_fatal is None:
                raise
            self.on_fatal(e)
            return False
        except Exception:
            result = "error"
            logger.exception("watcher %s: run failed; the scheduler goes on", watcher.name)
            return False
        finally:
            self._metrics.watcher_runs.labels(watcher.name, result).inc()
            self._metrics.watcher_run_seconds.labels(watcher.name).observe(time.perf_counter() - started)
