"""Pieces of the Kubernetes job gateway that need no gateway: the client-side rate limiter, the
reading of the API server's error answers, and the lines of a streamed answer."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from nightwatch.adapters.jobs._log_lines import LINE_LIMIT, lines
from nightwatch.domain.errors import BackendUnavailableError, ConfigError, JobRejectedError
from nightwatch.domain.model import Task
from nightwatch.domain.ports import Clock

try:
    import urllib3
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.client.exceptions import ApiException
except ImportError as e:  # pragma: no cover - the package is a declared dependency
    raise ImportError(
        "jobs.backend: kubernetes needs the official client: pip install 'kubernetes>=31,<38'"
    ) from e

__all__ = ["ApiException", "TokenBucket", "configuration", "is_forbidden", "is_refusal", "k8s", "k8s_config",
           "retry_after", "status_of", "stream_lines", "translate", "urllib3"]

logger = logging.getLogger("nightwatch.adapters.jobs.kubernetes")
CHUNK = 16 * 1024  # bytes read at a time from a streamed log
STOP_POLL = 0.5  # seconds between two looks at a followed log's stop event
# Refusals that are the task's own fault: fail it with the API server's message.
# 401 (bad credentials), 408, 409 other than AlreadyExists, 429 and 5xx are transient; a 403
# quota refusal is transient, and an RBAC one (reason Forbidden) waits out forbidden_grace.
_PERMANENT = frozenset({400, 403, 404, 405, 406, 413, 415, 422})


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; like Go's ``rate.Limiter.Wait``.

    Written here rather than imported: it is twenty lines, in-process and synchronous, and
    the maintained libraries (pyrate-limiter, limits) bring storage backends and async
    machinery it does not need -- not worth a new runtime dependency.
    """

    def __init__(self, rate: float, burst: int, clock: Clock, closed: threading.Event) -> None:
        self._rate = rate
        self._burst = max(1, burst)
        self._clock = clock
        self._closed = closed
        self._tokens = float(self._burst)
        self._stamp = clock.monotonic()
        self._mutex = threading.Lock()

    def acquire(self, timeout: float) -> None:
        """Take one token, waiting at most ``timeout`` s; else BackendUnavailableError."""
        if self._rate <= 0:  # qps 0 = no client-side limit
            return
        with self._mutex:
            now = self._clock.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            wait = (1 - self._tokens) / self._rate if self._tokens < 1 else 0.0
            if wait > timeout:
                raise BackendUnavailableError(
                    f"client-side rate limit (jobs.kubernetes.qps {self._rate:g}): no request slot "
                    f"within {timeout:g}s", retry_after=wait,
                )
            self._tokens -= 1  # a reservation: later callers queue behind this one
        if wait > 0 and self._closed.wait(wait):
            raise BackendUnavailableError("the Kubernetes job gateway is closed")


def stream_lines(response: Any, limit: int = LINE_LIMIT, stop: threading.Event | None = None) -> Iterator[str]:
    """The lines of a streamed answer; the connection goes back to the pool when done (or when
    the caller stops reading). With ``stop``: a small thread shuts the socket down within
    ``STOP_POLL`` s of it being set, so a reader blocked waiting for the next line returns."""
    done = threading.Event()
    shut = threading.Lock()  # a shutdown never hits a connection already back in the pool
    if stop is not None:
        def watch() -> None:
            while not done.wait(STOP_POLL):
                if stop.is_set():
                    with shut:
                        if not done.is_set():
                            response.shutdown()  # urllib3 2.3+: unblocks a read in another thread
                    return

        threading.Thread(target=watch, name="log-stop", daemon=True).start()
    try:
        yield from lines(response.stream(CHUNK), limit)
    except (urllib3.exceptions.HTTPError, OSError) as e:
        if stop is not None and stop.is_set():
            return
        raise BackendUnavailableError(f"Kubernetes API logs: the stream broke: {e}") from e
    finally:
        with shut:
            done.set()
        if stop is not None and stop.is_set():
            response.close()  # shut down: the connection is not reused
        response.release_conn()


def is_refusal(e: ApiException, status: dict[str, Any], message: str) -> bool:
    """Whether the API server itself refused, for good. A 404 or 403 without a ``Status``
    body came from something in front of it (a proxy, a wrong path); a quota refusal
    passes once other Jobs finish. Both are retried instead of failing the task."""
    if status.get("kind") != "Status":
        return False
    return not (e.status == 403 and "exceeded quota" in message)


def is_forbidden(e: ApiException, status: dict[str, Any], message: str) -> bool:
    """A 403 ``Forbidden`` from the API server itself (RBAC), other than a quota refusal."""
    return (e.status == 403 and status.get("kind") == "Status" and status.get("reason") == "Forbidden"
            and "exceeded quota" not in message)


def status_of(e: ApiException) -> dict[str, Any]:
    """The ``Status`` object the API server sent with an error, or {}."""
    try:
        body = json.loads(e.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def retry_after(e: ApiException) -> float | None:
    value = (e.headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def configuration(kubeconfig: str | None, context: str | None) -> k8s.Configuration:
    """The client configuration (never the client's global default): in-cluster, or a kubeconfig."""
    cfg = k8s.Configuration()
    in_cluster = kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    source = "the in-cluster service account" if in_cluster else (
        kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    )
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                # the client splits a $KUBECONFIG list on ":" and expands each path itself
                config_file=source, context=context,
                client_configuration=cfg, persist_config=False,
            )
    except (k8s_config.ConfigException, OSError, ValueError) as e:
        raise ConfigError(
            f"jobs.kubernetes: cannot load the client configuration from {source}"
            f"{f' (context {context!r})' if context else ''}: {e}"
        ) from e
    # No urllib3 retries (not even its default 3): never block a cycle retrying.
    cfg.retries = urllib3.Retry(total=0, redirect=0, raise_on_status=False)
    cfg.connection_pool_maxsize = 32  # the task watcher's workers share the pool
    logger.info("kubernetes job gateway: API server %s (config from %s)", cfg.host, source)
    return cfg


def translate(verb: str, task: Task | None, e: ApiException, *, permanent: bool, namespace: str = "") -> Exception:
    """An API error as nightwatch's: JobRejectedError for a refusal that is the task's own fault
    (``permanent`` calls only), else BackendUnavailableError (with Retry-After on a 429)."""
    status = status_of(e)
    message = status.get("message") or f"HTTP {e.status} {e.reason or ''}".strip()
    if permanent and e.status in _PERMANENT and is_refusal(e, status, message):
        return JobRejectedError(message)
    where = f"{task.namespace}/{task.job_name}" if task else f"namespace {namespace}"
    return BackendUnavailableError(
        f"Kubernetes API {verb} ({where}) answered {e.status}: {message}",
        retry_after=retry_after(e) if e.status == 429 else None,
    )
