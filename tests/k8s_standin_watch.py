"""The stand-in's watches: an event log of Job changes and ``?watch=1`` streams over it.

- Every change of a Job (created, its status, its labels, deleted) gets the next
  resourceVersion and an entry in the log; a watch from resourceVersion R streams, as JSON
  lines, the entries after R in its namespace, each translated through its label selector as
  the real server does (an object that stops matching is ``DELETED``, one that starts matching
  ``ADDED``), with ``BOOKMARK`` events every ``bookmark_every`` s when asked for, until its
  ``timeoutSeconds``.
- ``expire()``: every resourceVersion up to now is compacted away: a watch from one of them
  gets ``410 Gone`` (an ``ERROR`` event carrying a ``Status``, or with ``expire_as="http"`` an
  HTTP 410 with a ``Status`` body); the log also forgets entries beyond ``window``.
- ``drop_streams()``: the open streams are cut (the socket closes mid-stream);
  ``stall_streams()``: the open streams stop sending, the connection stays open;
  ``drop_next_event(ns)``: the next change in ``ns`` is never sent to any watch (a resync
  must find it).
"""

from __future__ import annotations

import bisect
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from copy import deepcopy
from typing import Any

Selector = Callable[[dict[str, str]], bool]


class StreamCut(Exception):
    """Raised inside a stream: the handler closes the socket without ending the answer."""


class EventLog:
    def __init__(self, mutex: threading.RLock, window: int = 50_000) -> None:
        self._mutex = mutex
        self.window = window
        self._events: list[tuple[int, str, str, dict[str, Any], dict[str, str]]] = []  # rv, type, ns, obj, old labels
        self.oldest = 0  # a watch from a resourceVersion below this gets 410
        self.bookmark_every = 1.0
        self.expire_as = "event"  # or "http"
        self._drop_next: set[str] = set()
        self.dropped = 0
        self._ids = itertools.count(1)
        self.open: set[int] = set()
        self._cut: set[int] = set()
        self._stalled: set[int] = set()
        self.closed = threading.Event()

    # -- what tests drive -----------------------------------------------------------------

    def expire(self, rv: int) -> None:
        with self._mutex:
            self.oldest = rv + 1
            self._events.clear()

    def drop_streams(self) -> None:
        with self._mutex:
            self._cut |= self.open

    def stall_streams(self) -> None:
        with self._mutex:
            self._stalled |= self.open

    def drop_next_event(self, namespace: str) -> None:
        with self._mutex:
            self._drop_next.add(namespace)

    # -- the log --------------------------------------------------------------------------

    def record(self, rv: int, kind: str, namespace: str, job: dict[str, Any], old_labels: dict[str, str]) -> None:
        """Under the stand-in's mutex: one change, at resourceVersion ``rv``."""
        if namespace in self._drop_next:
            self._drop_next.discard(namespace)
            self.dropped += 1
            return
        self._events.append((rv, kind, namespace, deepcopy(job), dict(old_labels)))
        if len(self._events) > 2 * self.window:
            del self._events[: len(self._events) - self.window]
            self.oldest = self._events[0][0] - 1

    def check(self, rv: int, current: int) -> bool:
        """Whether a watch may start from ``rv`` (else: 410); the newest one always may."""
        with self._mutex:
            return rv >= self.oldest or rv >= current

    def stream(self, namespace: str, selector: Selector, rv: int, timeout: float, bookmarks: bool,
               current: Callable[[], int]) -> Iterator[bytes]:
        """JSON lines: the changes after ``rv`` in ``namespace`` until ``timeout`` s have passed."""
        if not self.check(rv, current()):
            yield _line("ERROR", gone(rv))
            return
        me = next(self._ids)
        with self._mutex:
            self.open.add(me)
        deadline = time.monotonic() + timeout
        last_bookmark = time.monotonic()
        try:
            while not self.closed.is_set():
                with self._mutex:
                    if me in self._cut:
                        raise StreamCut
                    stalled = me in self._stalled
                    lines = [] if stalled else list(self._after(me, namespace, selector, rv))
                    if not stalled:
                        rv = max(rv, self._events[-1][0] if self._events else rv)
                        now_rv = current()
                if stalled:
                    if time.monotonic() > deadline:
                        return
                    time.sleep(0.05)
                    continue
                yield from lines
                now = time.monotonic()
                if bookmarks and (now - last_bookmark >= self.bookmark_every or now >= deadline):
                    last_bookmark = now
                    rv = max(rv, now_rv)
                    yield _line("BOOKMARK", {"kind": "Job", "apiVersion": "batch/v1",
                                             "metadata": {"resourceVersion": str(rv)}})
                if now >= deadline:
                    return
                time.sleep(0.01)
        finally:
            with self._mutex:
                self.open.discard(me)
                self._cut.discard(me)
                self._stalled.discard(me)

    def _after(self, me: int, namespace: str, selector: Selector, rv: int) -> Iterator[bytes]:
        start = bisect.bisect_right(self._events, rv, key=lambda e: e[0])
        for _, kind, ns, job, old_labels in self._events[start:]:
            if ns != namespace:
                continue
            was, now = selector(old_labels), selector(job["metadata"].get("labels") or {})
            if kind == "DELETED":
                sent = "DELETED" if was else None
            elif kind == "ADDED":
                sent = "ADDED" if now else None
            else:
                sent = ("MODIFIED" if now else "DELETED") if was else ("ADDED" if now else None)
            if sent:
                yield _line(sent, job)


def gone(rv: int) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": f"too old resource version: {rv}", "reason": "Expired", "code": 410}


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    body = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} if kind != "ERROR" else obj
    if kind not in ("ERROR", "BOOKMARK"):
        body = {"kind": "Job", "apiVersion": "batch/v1", **body}
    elif kind == "BOOKMARK":
        body = obj
    return (json.dumps({"type": kind, "object": body}) + "\n").encode()


def json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    """Apply an RFC 6902 JSON Patch (add, replace, remove, test) to ``doc`` in place; ValueError
    on a failed test or a path that does not exist."""
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
        parent: Any = doc
        for part in parts[:-1]:
            if not isinstance(parent, dict) or part not in parent:
                raise ValueError(f"the path {op['path']!r} does not exist")
            parent = parent[part]
        last = parts[-1]
        if op["op"] == "test":
            if parent.get(last) != op.get("value"):
                raise ValueError(f"testing value {op['path']} failed")
        elif op["op"] in ("add", "replace"):
            parent[last] = op["value"]
        elif op["op"] == "remove":
            parent.pop(last, None)
        else:
            raise ValueError(f"unsupported operation {op['op']!r}")


def merge_patch(doc: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 merge patch (strategic merge is the same for maps such as labels), in place."""
    for key, value in patch.items():
        if value is None:
            doc.pop(key, None)
        elif isinstance(value, dict) and isinstance(doc.get(key), dict):
            merge_patch(doc[key], value)
        else:
            doc[key] = deepcopy(value)
