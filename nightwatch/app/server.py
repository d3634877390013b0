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
    now = time.monotonic()
    if now - daemon.heartbeat > LOOP_STALL and not daemon.stopping:
        return 500, f"daemon loop has not turned for {now - daemon.heartbeat:.0f}s"
    elector = daemon.elector
    if elector.is_leader and now - elector.last_renewed > lease:
        return 500, f"leader has not renewed its lease for {now - elector.last_renewed:.1f}s (lease {lease:g}s)"
    return 200, "ok"


def readiness(daemon: Daemon) -> tuple[int, str]:
    if daemon.stopping:
        return 503, "shutting down"
    if not daemon.migrated:
        return 503, "store not reachable yet"
    try:
        daemon.store.current_epoch(daemon.elector.lock.name)
    except NightwatchError as e:
        return 503, f"store not reachable: {e}"
    elector = daemon.elector
    if elector.is_leader:
        if time.monotonic() >= elector.deadline():
            return 503, "leader past its renew deadline"
        return 200, f"leader (epoch {elector.fence.epoch if elector.fence else '?'})"
    return 200, "standby"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        srv = self.server
        if self.path == "/healthz":
            self._reply(*health(srv.daemon, srv.lease))
        elif self.path == "/readyz":
            self._reply(*readiness(srv.daemon))
        elif self.path == "/metrics":
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
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    logger.info("serving /healthz /readyz /metrics on http://%s:%s", host, server.server_address[1])
    return server
