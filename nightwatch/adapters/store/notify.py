"""The store tells the leader about new work, so a new row is launched at once rather than
at the task watcher's next tick (which stays as the backstop).

- PostgreSQL: ``LISTEN nightwatch_task`` on a dedicated connection of its own thread; revision
  0007's trigger NOTIFYs on an insert of a ``Normal`` row, a reset to ``Normal`` and a cancel
  request. A lost connection is reported once (the watchers poll on their schedule meanwhile)
  and reconnected with backoff; the first wake after it catches up with what was missed.
- MariaDB/MySQL and SQLite: no notifications a client can receive, so a probe every
  ``watchers.task.probe_interval``: ``SELECT MAX(id) FROM task WHERE status = 'Normal'`` is one
  descent of the (status, id) index (revision 0004), whatever the table's size or the backlog
  (measured in benchmarks/README.md). It sees new ``Normal`` rows; resets of older rows and
  cancel requests (no index covers them: a probe for them would scan) wait for the tick.
  A Redis wake-up was not chosen: rows are inserted by the user's own system, which does not
  publish to nightwatch's Redis.

Both run only while resumed (the daemon resumes them while it leads) and call ``wake()``,
which must be cheap and thread-safe (``Scheduler.wake``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

logger = logging.getLogger(__name__)

CHANNEL = "nightwatch_task"  # revision 0007's trigger
PROBE = sa.text("SELECT MAX(id) FROM task WHERE status = 'Normal'")
WAIT = 1.0  # seconds a LISTEN waits for a notification before it checks it should go on
BACKOFF, BACKOFF_MAX = 0.5, 30.0  # seconds before reconnecting a lost LISTEN, doubling


class Notifier:
    """A daemon thread running ``_serve`` while resumed; ``pause`` ends its connection soon."""

    name = "notifier"

    def __init__(self, wake: Callable[[], None], *, on_lost: Callable[[], None] | None = None) -> None:
        self._wake = wake
        self._on_lost = on_lost
        self._active = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.lost = False  # the events are not coming: the schedule alone runs the watchers

    def resume(self) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._active.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()

    def pause(self) -> None:
        self._active.clear()

    def close(self) -> None:
        self._closed.set()
        self._active.set()  # let the thread see it
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(WAIT + 1.0)

    @property
    def running(self) -> bool:
        return self._active.is_set() and not self._closed.is_set()

    def _loop(self) -> None:
        while not self._closed.is_set():
            if not self._active.wait(WAIT) or self._closed.is_set():
                continue
            try:
                self._serve()
            except Exception:  # never let a bug end the thread: the tick is the backstop anyway
                logger.exception("%s: unexpected error; the watchers poll on their schedule", self.name)
                self._closed.wait(BACKOFF_MAX)

    def _serve(self) -> None:
        raise NotImplementedError

    def _lose(self, error: BaseException) -> None:
        if not self.lost:
            self.lost = True
            if self._on_lost is not None:
                self._on_lost()
            logger.warning("%s: %s; new tasks are picked up on the task watcher's schedule until it is back",
                           self.name, _one_line(error))

    def _recover(self) -> None:
        if self.lost:
            self.lost = False
            logger.info("%s: back; new tasks are picked up at once again", self.name)


class PostgresListener(Notifier):
    """``connect()`` returns a new autocommit psycopg connection (not one of the pool's)."""

    name = "postgres listen"

    def __init__(self, connect: Callable[[], Any], wake: Callable[[], None], *,
                 on_lost: Callable[[], None] | None = None, wait: float = WAIT) -> None:
        super().__init__(wake, on_lost=on_lost)
        self._connect = connect
        self._wait = wait
        self.connection: Any = None  # the LISTEN connection (tests terminate its backend)
        self.listening = threading.Event()

    def _serve(self) -> None:
        backoff = BACKOFF
        while self.running:
            try:
                self._listen()
                backoff = BACKOFF
            except Exception as e:  # psycopg.Error, OSError: the server or the network went away
                self.listening.clear()
                self._lose(e)
                self._closed.wait(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
            finally:
                self._disconnect()

    def _listen(self) -> None:
        conn = self.connection = self._connect()
        conn.execute(f"LISTEN {CHANNEL}")
        self.listening.set()
        self._recover()
        self._wake()  # catch up with what came while not listening (or before this term)
        while self.running:
            for _ in conn.notifies(timeout=self._wait):
                self._wake()  # Scheduler.wake collapses a burst into one run

    def _disconnect(self) -> None:
        conn, self.connection = self.connection, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                conn.close()


class Probe(Notifier):
    """Wakes when the newest ``Normal`` task's id grows."""

    name = "store probe"

    def __init__(self, engine: sa.Engine, wake: Callable[[], None], interval: float, *,
                 on_lost: Callable[[], None] | None = None) -> None:
        super().__init__(wake, on_lost=on_lost)
        self._engine = engine
        self._interval = interval
        self.probes = 0

    def _serve(self) -> None:
        newest: int | None = None
        while self.running:
            try:
                with self._engine.connect() as conn:
                    found = conn.execute(PROBE).scalar()
                self.probes += 1
                self._recover()
            except Exception as e:  # sqlalchemy.exc.DBAPIError and pool timeouts: the tick goes on
                self._lose(e)
                newest = None
            else:
                if found is not None and newest is not None and found > newest:
                    self._wake()
                newest = found if found is not None else 0
            self._closed.wait(self._interval)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
