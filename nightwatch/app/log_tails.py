"""The end of a task's log for the HTTP server, read through the server's own gateway and kept
for ``TTL`` seconds per replica: pages polling a task's log (the console asks every 1.5 s per
open page) cost one gateway call per task and second, however many are open. At most
``MAX_BYTES`` of a tail is kept and served (the last lines of it)."""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

from nightwatch.domain.model import Task
from nightwatch.domain.ports import Clock, JobGateway

TTL = 1.0  # seconds a tail is served from memory
MAX_BYTES = 1024 * 1024  # bytes of a tail kept and served: its last lines, the earlier ones dropped
MAX_ENTRIES = 64  # tails kept at once


@dataclass(frozen=True)
class Tail:
    lines: tuple[str, ...]
    truncated: bool  # earlier lines of the tail were dropped to keep it under MAX_BYTES


class LogTails:
    def __init__(self, gateway: JobGateway, clock: Clock, ttl: float = TTL, max_bytes: int = MAX_BYTES) -> None:
        self._gateway = gateway
        self._clock = clock
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._mutex = threading.Lock()
        self._kept: OrderedDict[tuple[int, int, int | None], tuple[float, Tail]] = OrderedDict()
        self._reading: dict[tuple[int, int, int | None], threading.Lock] = {}

    def tail(self, task: Task, lines: int | None) -> Tail:
        """The last ``lines`` lines of the current attempt's log (JobNotFoundError,
        BackendUnavailableError as the gateway raises them; errors are not kept)."""
        key = (task.id, task.attempt, lines)
        with self._mutex:
            reading = self._reading.setdefault(key, threading.Lock())
        with reading:  # one read per key at a time: the others wait for it and take its answer
            with self._mutex:
                kept = self._kept.get(key)
                if kept is not None and self._clock.monotonic() - kept[0] < self._ttl:
                    return kept[1]
            try:
                tail = self._read(task, lines)
            finally:
                with self._mutex:
                    self._reading.pop(key, None)
            with self._mutex:
                self._kept[key] = (self._clock.monotonic(), tail)
                self._kept.move_to_end(key)
                while len(self._kept) > MAX_ENTRIES:
                    self._kept.popitem(last=False)
        return tail

    def _read(self, task: Task, lines: int | None) -> Tail:
        kept: deque[str] = deque()
        size, truncated = 0, False
        source = self._gateway.logs(task, tail=lines, follow=False)
        try:
            for line in source:
                kept.append(line)
                size += len(line.encode()) + 1
                while size > self._max_bytes and kept:
                    size -= len(kept.popleft().encode()) + 1
                    truncated = True
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        return Tail(tuple(kept), truncated)
