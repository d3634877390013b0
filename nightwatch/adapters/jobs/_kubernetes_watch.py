"""The Kubernetes gateway's view of nightwatch's Jobs: one LIST + WATCH per namespace with work
in flight, kept in a small cache that ``observe()`` reads without any API call.

Per namespace, a daemon thread: a paged LIST (selector ``WORKING_SELECTOR``: nightwatch's Jobs
not retired yet) for a resourceVersion, then WATCHes from it through the official client's
``kubernetes.watch.Watch`` (``allowWatchBookmarks``, a server ``timeoutSeconds`` of at most 5
minutes and never past the next resync, a client read timeout ``read_timeout`` so a connection
that silently stops sending is noticed). The resourceVersion comes from every event, bookmarks
included. 410 Gone (expired resourceVersion) → LIST again at once; a dropped or stalled
connection → reconnect from the last resourceVersion, with backoff if that fails; a full LIST
every ``resync`` as a safety net. The cache keeps, per Job, only what ``manifest.job_state`` and
the pod code read. Not synced yet, or its LIST or reconnect failing: the namespace is broken and
``jobs()`` raises BackendUnavailableError (its tasks are then reported Unknown). A namespace not
asked about for ``idle_after`` is no longer watched. Every wait is interruptible by ``close()``.

The request given to ``Watch.stream`` is a closure without a docstring, so on every client
release of the supported range (31-37) the events come back as plain dicts (no model decoding),
and this module keeps the resourceVersion itself, bookmarks included: it does not depend on the
client's own tracking (which ignored BOOKMARK events before 32) nor on its retry after a 410
(off, since ``timeout_seconds`` is given), so no narrower version pin is needed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from nightwatch.adapters.jobs._kubernetes_api import ApiException, k8s, status_of, urllib3
from nightwatch.adapters.jobs.manifest import job_state
from nightwatch.domain.constants import ATTEMPT_LABEL, TASK_ID_LABEL, WORKING_SELECTOR
from nightwatch.domain.errors import BackendUnavailableError

try:
    from kubernetes import watch as k8s_watch
except ImportError as e:  # pragma: no cover - the package is a declared dependency
    raise ImportError("jobs.backend: kubernetes needs the official client: pip install 'kubernetes>=31,<38'") from e

logger = logging.getLogger(__name__)

SERVER_TIMEOUT = 300  # seconds: the API server ends a watch after this (kube's default is 30-60 min)
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 30.0  # seconds between failed reconnects (doubling, jittered)
MIN_STREAM = 1.0  # seconds a watch request must last to count as working (else its retries back off)
_KEEP_LABELS = (TASK_ID_LABEL, ATTEMPT_LABEL)

Call = Callable[..., dict[str, Any]]  # the gateway's counted, rate-limited request
Connect = Callable[[str], None]  # the gateway's bookkeeping for one watch request (token, count)


def slim(job: dict[str, Any]) -> dict[str, Any]:
    """Only what ``job_state``, ``not_ready``, ``belongs_to`` and ``pods_of`` read of a Job, and
    its ``job_state`` under ``"state"`` (worked out once per change, not once per cycle)."""
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    status = job.get("status") or {}
    small: dict[str, Any] = {
        "metadata": {"name": meta.get("name", ""), "uid": meta.get("uid", ""),
                     "labels": {k: labels[k] for k in _KEEP_LABELS if k in labels}},
        "spec": {"suspend": bool((job.get("spec") or {}).get("suspend"))},
        "status": {"active": status.get("active"), "ready": status.get("ready"),
                   "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                                  for c in status.get("conditions") or []]},
    }
    small["state"] = job_state(small)
    return small


class NamespaceWatch:
    """LIST + WATCH of one namespace's working Jobs in a daemon thread; see the module."""

    def __init__(self, namespace: str, *, api: Callable[[], k8s.BatchV1Api], call: Call, connect: Connect,
                 page_size: int, connect_timeout: float, read_timeout: float, resync: float, idle_after: float,
                 wake: Callable[[], None]) -> None:
        self.namespace = namespace
        self._api, self._call, self._connect = api, call, connect
        self._page_size = page_size
        self._timeouts = (connect_timeout, read_timeout)
        self._resync, self._idle_after = resync, idle_after
        self._wake = wake
        self._jobs: dict[str, dict[str, Any]] = {}
        self._rv: str | None = None
        self._error: str | None = "not synced yet"
        self.settled = threading.Event()  # the first LIST answered (or failed)
        self._stopped = threading.Event()
        self._mutex = threading.Lock()
        self._watch = k8s_watch.Watch()  # type: ignore[no-untyped-call]  # one for every stream
        self.used = time.monotonic()
        self.lists = self.streams = 0  # LISTs done, watch requests made (for tests and figures)
        self.streaming = False  # a watch request is connected
        self._thread = threading.Thread(target=self._run, name=f"k8s-watch-{namespace}", daemon=True)
        self._thread.start()

    # -- read by observe() ----------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        """The namespace's working Jobs as last seen; BackendUnavailableError if broken."""
        self.used = time.monotonic()
        with self._mutex:
            if self._error is not None:
                raise BackendUnavailableError(f"watch of Jobs in namespace {self.namespace}: {self._error}")
            return list(self._jobs.values())

    @property
    def resource_version(self) -> str | None:
        return self._rv

    @property
    def healthy(self) -> bool:
        return self._error is None

    def put(self, job: dict[str, Any]) -> None:
        """A Job just created by this replica: in the cache at once, unless a newer event was."""
        small = slim(job)
        with self._mutex:
            self._jobs.setdefault(small["metadata"]["name"], small)

    def forget(self, name: str) -> None:
        """A Job just deleted by this replica: out of the cache at once."""
        with self._mutex:
            self._jobs.pop(name, None)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def idle(self) -> bool:
        return time.monotonic() - self.used > self._idle_after

    def stop(self, wait: float = 0.0) -> None:
        self._stopped.set()
        self._watch.stop()  # type: ignore[no-untyped-call]  # shuts the socket: a blocked read returns
        if wait:
            self._thread.join(wait)

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        delay = BACKOFF_FIRST
        resync_at = 0.0
        while not self._stopped.is_set():
            if self.idle:
                logger.info("kubernetes job gateway: no task in flight in namespace %s; not watching it",
                            self.namespace)
                return
            started = time.monotonic()
            try:
                if self._rv is None or time.monotonic() >= resync_at:
                    self._relist()
                    resync_at = time.monotonic() + self._resync
                started = time.monotonic()
                self._stream(max(1, min(SERVER_TIMEOUT, int(resync_at - time.monotonic()) + 1)))
                if time.monotonic() - started >= MIN_STREAM:  # a watch that did its job: again at once
                    delay = BACKOFF_FIRST
                    continue
                # ended as soon as it began (a proxy that closes streams?): back off, growing
            except ApiException as e:
                if e.status == 410:  # our resourceVersion is too old: LIST again, at once
                    logger.info("kubernetes job gateway: watch of namespace %s expired (410); listing again",
                                self.namespace)
                    self._rv = None
                    continue
                message = status_of(e).get("message") or f"HTTP {e.status} {e.reason or ''}".strip()
                self._broken(f"answered {e.status}: {message}")
            except BackendUnavailableError as e:
                self._broken(str(e))
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                # a dropped or stalled stream: reconnect from the last resourceVersion, at once
                if self._stopped.is_set():
                    return
                logger.info("kubernetes job gateway: watch of namespace %s broke (%s); reconnecting",
                            self.namespace, e)
                if time.monotonic() - started >= MIN_STREAM:  # it had been working: reconnect soon
                    delay = BACKOFF_FIRST
                    if self._stopped.wait(BACKOFF_FIRST):
                        return
                    continue
            except Exception:  # a bug: logged, and the namespace reads Unknown until it recovers
                logger.exception("kubernetes job gateway: watch of namespace %s failed", self.namespace)
                self._broken("unexpected error (logged)")
            if self._stopped.wait(delay * random.uniform(0.8, 1.2)):  # noqa: S311 - jitter, not crypto
                return
            delay = min(BACKOFF_MAX, delay * 2)

    def _broken(self, message: str) -> None:
        if self._stopped.is_set():
            return
        with self._mutex:
            first = self._error is None or not self.settled.is_set()
            self._error = message
        self.settled.set()
        if first:
            logger.warning("kubernetes job gateway: watch of Jobs in namespace %s broken: %s; its tasks are "
                           "reported Unknown until it recovers", self.namespace, message)

    def _relist(self) -> None:
        """Every working Job of the namespace (paged) → the cache, and its resourceVersion."""
        jobs: dict[str, dict[str, Any]] = {}
        token: str | None = None
        rv = ""
        while True:
            try:
                page = self._call("list", self._api().list_namespaced_job, self.namespace,
                                  label_selector=WORKING_SELECTOR, limit=self._page_size, _continue=token)
            except ApiException as e:
                if e.status == 410:  # the continue token expired mid-list: start over
                    token, jobs = None, {}
                    continue
                raise
            for job in page.get("items") or []:
                small = slim(job)
                jobs[small["metadata"]["name"]] = small
            meta = page.get("metadata") or {}
            rv = rv or meta.get("resourceVersion") or ""  # the first page's: the list's snapshot
            token = meta.get("continue") or None
            if token is None:
                break
        self.lists += 1
        with self._mutex:
            changed = jobs != self._jobs
            self._jobs, self._rv = jobs, rv
            recovered, self._error = self._error is not None and self.settled.is_set(), None
        self.settled.set()
        if recovered:
            logger.info("kubernetes job gateway: watch of Jobs in namespace %s recovered", self.namespace)
        if changed:
            self._wake()

    def _stream(self, server_timeout: int) -> None:
        """One watch request, events into the cache until the server ends it (normal) or it breaks."""
        batch = self._api()
        connected = False

        def request(*args: Any, **kwargs: Any) -> Any:  # no docstring: Watch yields plain dicts
            nonlocal connected
            if self._stopped.is_set():  # closed while reconnecting
                raise BackendUnavailableError("the Kubernetes job gateway is closed")
            self._connect("watch")
            response = batch.list_namespaced_job(*args, **kwargs)
            connected = self.streaming = True
            with self._mutex:
                self._error = None
            return response

        watch = self._watch
        self.streams += 1
        try:
            events = watch.stream(  # type: ignore[no-untyped-call]
                request, self.namespace, label_selector=WORKING_SELECTOR, resource_version=self._rv,
                allow_watch_bookmarks=True, timeout_seconds=server_timeout, _request_timeout=self._timeouts)
            for event in events:
                if self._stopped.is_set() or self.idle:  # (bookmarks come even when nothing changes)
                    break
                self._apply(event)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if not connected:  # could not even reconnect: broken until it can
                raise BackendUnavailableError(f"cannot watch: {e}") from e
            raise
        finally:
            self.streaming = False

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("raw_object") or event.get("object") or {}
        meta = obj.get("metadata") or {}
        with self._mutex:
            if meta.get("resourceVersion"):
                self._rv = meta["resourceVersion"]
            if kind in ("ADDED", "MODIFIED"):
                small = slim(obj)
                self._jobs[small["metadata"]["name"]] = small
            elif kind == "DELETED":  # gone, or retired (no longer matches the selector)
                self._jobs.pop(meta.get("name", ""), None)
            else:  # BOOKMARK: only the resourceVersion
                return
        self._wake()


class JobWatches:
    """The namespaces' watches: started on the first ``jobs(namespace)``, stopped when idle."""

    def __init__(self, make: Callable[[str], NamespaceWatch], first_sync: float) -> None:
        self._make = make
        self._first_sync = first_sync
        self._watches: dict[str, NamespaceWatch] = {}
        self._mutex = threading.Lock()

    def start(self, namespaces: Iterable[str]) -> None:
        """Watch these namespaces (already watched: nothing to do); forget the idle ones."""
        with self._mutex:
            for name, watch in list(self._watches.items()):
                if watch.idle or not watch.alive:
                    watch.stop()
                    del self._watches[name]
            for namespace in namespaces:
                if namespace not in self._watches:
                    self._watches[namespace] = self._make(namespace)

    def jobs(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's working Jobs from its watch: a new watch is waited for (its first LIST,
        at most ``first_sync`` s); BackendUnavailableError when it is broken."""
        self.start([namespace])
        with self._mutex:
            watch = self._watches[namespace]
        watch.settled.wait(self._first_sync)
        return watch.jobs()

    def get(self, namespace: str) -> NamespaceWatch | None:
        with self._mutex:
            return self._watches.get(namespace)

    def all(self) -> list[NamespaceWatch]:
        with self._mutex:
            return list(self._watches.values())

    def put(self, namespace: str, job: dict[str, Any]) -> None:
        if (watch := self.get(namespace)) is not None:
            watch.put(job)

    def forget(self, namespace: str, name: str) -> None:
        if (watch := self.get(namespace)) is not None:
            watch.forget(name)

    def close(self, wait: float = 1.0) -> None:
        with self._mutex:
            watches, self._watches = list(self._watches.values()), {}
        for watch in watches:
            watch.stop()
        for watch in watches:
            watch.stop(wait)
