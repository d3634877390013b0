"""The HTTP server on ``server.listen``: the probes, the REST API under ``/api/v1``, the web
console and its static files, as one Starlette app served by uvicorn in a thread of the daemon.

The probes are ``async`` handlers: they run on the event loop itself and read only memory
(/healthz), the readiness monitor's last answer (/readyz) or the metrics registry, so they
answer at once while every worker thread is busy with API or console requests (those are
plain functions, which Starlette runs in its thread pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from uvicorn.protocols.http.h11_impl import H11Protocol

from nightwatch import __version__
from nightwatch.app.auth import AuthSettings
from nightwatch.app.config_rules import split_listen
from nightwatch.app.metrics import Metrics
from nightwatch.app.server import CLIENT_TIMEOUT, ReadinessMonitor, health
from nightwatch.app.web_middleware import BodyLimit, SecurityHeaders
from nightwatch.domain.errors import ConfigError
from nightwatch.domain.ports import Clock, JobGateway, TaskStore

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SESSION_COOKIE = "nightwatch_session"
SESSION_MAX_AGE = 12 * 3600  # seconds a console sign-in lasts
SHUTDOWN_WAIT = 5.0  # seconds shutdown() waits for the server thread


@dataclass
class WebContext:
    """What the API and the console read: the store, the gateway (for logs), this replica."""

    store: TaskStore
    gateway: JobGateway | None
    clock: Clock
    auth: AuthSettings
    identity: str
    daemon: Any = None  # nightwatch.app.daemon.Daemon, or None (a server without a daemon)
    metrics: Metrics | None = None
    lease: float = 10.0
    allowed_namespaces: tuple[str, ...] = ("default",)
    allowed_images: tuple[str, ...] = ()
    replicas: Any = None  # nightwatch.app.cluster.ReplicaRegistry, or None
    version: str = __version__
    readiness: ReadinessMonitor | None = field(default=None, repr=False)


def _plain(code: int, body: str, media_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(body if body.endswith("\n") else body + "\n", code, media_type=media_type)


def probe_routes(ctx: WebContext) -> list[BaseRoute]:
    async def healthz(request: Request) -> Response:
        if ctx.daemon is None:
            return _plain(200, "ok")
        return _plain(*health(ctx.daemon, ctx.lease))

    async def readyz(request: Request) -> Response:
        if ctx.readiness is None:
            return _plain(503, "no daemon")
        return _plain(*ctx.readiness.answer())

    async def metrics(request: Request) -> Response:
        if ctx.metrics is None:
            return _plain(404, "no metrics")
        return Response(generate_latest(ctx.metrics.registry), 200, media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if _is_api(request):
        from nightwatch.app.api import error_body  # the API's error shape

        detail = exc.detail
        if exc.status_code in (404, 405) and detail in ("Not Found", "Method Not Allowed"):
            detail = f"no {request.method} {request.url.path} in this API: see /api/v1/openapi.json"
        return JSONResponse(error_body(exc.status_code, detail), exc.status_code, headers=headers)
    return PlainTextResponse(f"{exc.detail}\n", exc.status_code, headers=headers)


def build_app(ctx: WebContext) -> Starlette:
    from nightwatch.app import api, console

    routes: list[BaseRoute] = [*probe_routes(ctx), Mount("/api/v1", routes=api.routes(ctx))]
    routes.extend(console.routes(ctx))
    if STATIC_DIR.is_dir():
        routes.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"))
    secret = ctx.auth.session_secret or secrets.token_urlsafe(32)  # per process: see README, "API"
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(BodyLimit, limit=ctx.auth.max_body),
        Middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE,
                   max_age=SESSION_MAX_AGE, same_site="lax", https_only=ctx.auth.secure_cookies),
    ]
    handlers: dict[Any, Any] = {HTTPException: _http_error, **api.exception_handlers()}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.ctx = ctx
    return app


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with TCP_NODELAY, and a client that connects and sends nothing is
    hung up on after the keep-alive timeout too (uvicorn times out only idle connections that
    had a request)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # asyncio sets TCP_NODELAY only on sockets made with proto IPPROTO_TCP, which
        # socket.create_server's are not: without it a keep-alive response waits ~40 ms for the
        # client's delayed ACK (Nagle), headers and body being two writes.
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)


class WebServer:
    """uvicorn serving ``build_app(ctx)`` on its own thread; ``shutdown()`` closes the port."""

    def __init__(self, ctx: WebContext, sock: socket.socket) -> None:
        self.ctx = ctx
        self._sock = sock
        self.server_address = sock.getsockname()
        config = uvicorn.Config(build_app(ctx), http=_Protocol, lifespan="off", log_config=None,
                                access_log=False, timeout_keep_alive=int(CLIENT_TIMEOUT),
                                timeout_graceful_shutdown=1, server_header=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="http",
                                        daemon=True)

    def start(self) -> WebServer:
        if self.ctx.readiness is not None:
            self.ctx.readiness.start()
        if self.ctx.replicas is not None:
            self.ctx.replicas.start()
        self._thread.start()
        return self

    def open_sockets(self) -> list[Any]:
        """The sockets of the connections open now (for tests)."""
        return [c.transport.get_extra_info("socket") for c in list(self._server.server_state.connections)]

    def shutdown(self) -> None:
        """Stop serving, stop the readiness checks and heartbeats, close the listening socket."""
        self._server.should_exit = True
        self._thread.join(SHUTDOWN_WAIT)
        if self.ctx.readiness is not None:
            self.ctx.readiness.stop()
        if self.ctx.replicas is not None:
            self.ctx.replicas.stop()
        with contextlib.suppress(OSError):
            self._sock.close()


def listen_socket(listen: str) -> socket.socket:
    host, port = split_listen("server.listen", listen)
    host = host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # an IPv6 literal ([::1]:9090)
    try:
        sock = socket.create_server((host, port), family=family, backlog=128, reuse_port=False)
    except (OSError, OverflowError) as e:
        raise ConfigError(f"server.listen: cannot listen on {listen}: {getattr(e, 'strerror', None) or e}") from None
    return sock


def start_web(listen: str, ctx: WebContext) -> WebServer:
    sock = listen_socket(listen)
    server = WebServer(ctx, sock).start()
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    logger.info("serving the console, /api/v1, /healthz /readyz /metrics on http://%s:%s", shown, port)
    return server


def web_settings(container: Any, config: dict[str, Any], daemon: Any) -> dict[str, Any]:
    """The ``WebContext`` fields a daemon's server takes from the container and the config."""
    from nightwatch.adapters.store.replicas import replica_store_for
    from nightwatch.app.cluster import ReplicaRegistry

    store, clock = container.store(), container.clock()
    return {
        "store": store, "gateway": container.gateway(), "clock": clock, "identity": container.identity(),
        "auth": AuthSettings.from_config(config["server"]),
        "allowed_namespaces": tuple(config["jobs"]["allowed_namespaces"]),
        "allowed_images": tuple(config["jobs"]["allowed_images"]),
        "replicas": ReplicaRegistry(replica_store_for(store), daemon, clock, __version__),
    }
