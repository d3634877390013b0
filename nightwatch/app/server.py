"""/healthz, /readyz and /metrics: what they answer (``app/web.py`` serves them on ``server.listen``).

No probe waits on a backend: /healthz reads only the daemon's memory, and /readyz serves the
last result of a check that one background thread repeats (``ReadinessMonitor``), so both answer
in milliseconds even when the store or the lock hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from nightwatch.app.daemon import Daemon
from nightwatch.app.metrics import Metrics
from nightwatch.domain.errors import NightwatchError

if TYPE_CHECKING:
    from nightwatch.app.web import WebServer

logger = logging.getLogger(__name__)

LOOP_STALL = 10.0  # seconds without a turn of the daemon's loop before /healthz fails
CLIENT_TIMEOUT = 5.0  # seconds a client may take over each read and write: an idle one is hung up on
READY_INTERVAL = 1.0  # seconds between two readiness checks of the store and the lock
READY_STALE = 3.0  # a check that has not answered for this long (a backend hangs): not ready


def health(daemon: Daemon, lease: float) -> tuple[int, str]:
    """Liveness: 500 (restart me) when a leader has not renewed for longer than its lease,
    or when the daemon's loop has stopped turning."""
    now = time.monotonic()
    elector = daemon.elector
    if elector.is_leader and now - elector.last_renewed > lease:
        return 500, (f"leader {elector.identity} has not renewed its lease for "
                     f"{now - elector.last_renewed:.1f}s (lease {lease:g}s): wedged")
    if now - daemon.heartbeat > LOOP_STALL and not daemon.stopping:
        return 500, f"daemon loop has not turned for {now - daemon.heartbeat:.0f}s"
    return 200, "ok"


def readiness(daemon: Daemon) -> tuple[int, str]:
    """Readiness: the store answers, and this replica leads in time or could take over."""
    if daemon.stopping:
        return 503, "shutting down"
    if daemon.migrating:
        return 503, "migrating: the schema is being upgraded (or another replica's upgrade awaited)"
    if not daemon.migrated:
        return 503, "store not reachable yet"
    elector = daemon.elector
    try:
        daemon.store.current_epoch(elector.lock.name)
    except NightwatchError as e:
        return 503, f"store not reachable: {e}"
    if elector.is_leader:
        if time.monotonic() >= elector.deadline():
            return 503, "leader past its renew deadline"
        return 200, f"leader (epoch {elector.fence.epoch if elector.fence else '?'})"
    try:
        holder = elector.lock.holder()
    except NightwatchError as e:
        return 503, f"standby cannot reach the lock: {e}"
    return 200, f"standby (leader: {holder or 'none'})"


def _checked(daemon: Daemon, previous: tuple[int, str] | None) -> tuple[int, str]:
    try:
        return readiness(daemon)
    except Exception as e:  # an adapter's untranslated error: not ready, and say why (once)
        answer = 503, f"readiness check failed: {e!r}"
        if answer != previous:
            logger.warning("/readyz: check failed: %r", e)
        return answer


class ReadinessMonitor:
    """Runs ``readiness`` every ``interval`` in one background thread; ``answer()`` never blocks.

    It answers the last result with its age, or 503 once the check in flight has not answered
    for ``stale_after`` (a store or lock that accepts connections and never replies). One thread
    does every check, so a hanging backend holds one thread, not one per probe.
    """

    def __init__(self, daemon: Daemon, interval: float = READY_INTERVAL, stale_after: float = READY_STALE) -> None:
        self._daemon = daemon
        self._interval = interval
        self._stale_after = stale_after
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._result: tuple[int, str] | None = None
        self._checked_at = 0.0
        self._running_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name="readiness", daemon=True)

    def start(self) -> ReadinessMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._mutex:
                self._running_since = time.monotonic()
            result = _checked(self._daemon, self._result)
            with self._mutex:
                self._result, self._checked_at, self._running_since = result, time.monotonic(), None
            self._stop.wait(self._interval)

    def answer(self) -> tuple[int, str]:
        if self._daemon.stopping:
            return 503, "shutting down"
        elector = self._daemon.elector  # what memory tells is told at once, not a check late
        if elector.is_leader and time.monotonic() >= elector.deadline():
            return 503, "leader past its renew deadline"
        with self._mutex:
            result, checked_at, running_since = self._result, self._checked_at, self._running_since
        now = time.monotonic()
        last = f"; last answer {now - checked_at:.1f}s ago: {result[1]}" if result is not None else ""
        if running_since is not None and now - running_since > self._stale_after:
            return 503, (f"readiness check has not answered for {now - running_since:.1f}s "
                         f"(store or lock hanging){last}")
        if result is None:
            return 503, "readiness not checked yet"
        code, body = result
        return code, f"{body} (checked {now - checked_at:.1f}s ago)"


def start_server(listen: str, daemon: Daemon, metrics: Metrics, lease: float = 10.0, **web: Any) -> WebServer:
    """Serve the probes (and the API and console: ``web`` holds the rest of ``WebContext``,
    see ``web.web_settings``) on ``listen`` from a thread; ``shutdown()`` it when done."""
    from nightwatch.adapters.clock import SystemClock
    from nightwatch.app.auth import AuthSettings
    from nightwatch.app.web import WebContext, start_web

    ctx = WebContext(**{"store": daemon.store, "gateway": None, "clock": SystemClock(),
                        "auth": AuthSettings(), "identity": daemon.elector.identity, **web},
                     daemon=daemon, metrics=metrics, lease=lease, readiness=ReadinessMonitor(daemon))
    return start_web(listen, ctx)
