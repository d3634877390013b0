"""/healthz, /readyz and /metrics on ``server.listen`` (stdlib HTTP server, prometheus-client)."""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nightwatch.app.daemon import Daemon
from nightwatch.app.metrics import Metrics
from nightwatch.domain.errors import ConfigError, NightwatchError

logger = logging.getLogger(__name__)

LOOP_STALL = 10.0  # seconds without a turn of the daemon's loop before /healthz fails


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


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        srv = self.server
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._reply(*health(srv.daemon, srv.lease))
        elif path == "/readyz":
            try:
                answer = readiness(srv.daemon)
            except Exception as e:  # an adapter's untranslated error: not ready, and say why
                logger.warning("/readyz: check failed: %r", e)
                answer = 503, f"readiness check failed: {e!r}"
            self._reply(*answer)
        elif path == "/metrics":
            self._reply(200, generate_latest(srv.metrics.registry).decode(), CONTENT_TYPE_LATEST)
        else:
            self._reply(404, "not found: try /healthz, /readyz or /metrics")

    def _reply(self, code: int, body: str, ctype: str = "text/plain; charset=utf-8") -> None:
        data = (body if body.endswith("\n") else body + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], daemon: Daemon, metrics: Metrics, lease: float) -> None:
        super().__init__(address, _Handler)
        self.daemon = daemon
        self.metrics = metrics
        self.lease = lease


def start_server(listen: str, daemon: Daemon, metrics: Metrics, lease: float = 10.0) -> ThreadingHTTPServer:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        server = _Server((host, int(port)), daemon, metrics, lease)
    except OSError as e:
        raise ConfigError(f"server.listen: cannot listen on {listen}: {e.strerror or e}") from None
    threading.Thread(target=server.serve_forever, args=(0.1,), name="http", daemon=True).start()
    logger.info("serving /healthz /readyz /metrics on http://%s:%s", host, server.server_address[1])
    return server
