"""The local gateway's exit watcher: wakes the sync when a Job's process exits.

The gateway's own children are polled (``Popen.poll``, one ``waitpid(WNOHANG)`` each) every
``CHILD_POLL``; Jobs it did not spawn (started by another replica, or before a restart) are
seen through their ``exit`` file, looked at every ``FOREIGN_POLL``. Each exit wakes once.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)

CHILD_POLL = 0.05  # seconds
FOREIGN_POLL = 1.0  # seconds


class ExitWatcher:
    def __init__(self, children: dict[str, subprocess.Popen[bytes]], mutex: threading.Lock, *,
                 child_poll: float = CHILD_POLL, foreign_poll: float = FOREIGN_POLL) -> None:
        self._children, self._mutex = children, mutex  # the gateway's, shared
        self._child_poll, self._foreign_poll = child_poll, foreign_poll
        self._wake: Callable[[], None] | None = None
        self._foreign: set[str] = set()  # job dirs seen running that are not our children
        self._woke_for: set[str] = set()  # children whose exit woke already (until reaped)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.wakes = 0

    def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="local-exits", daemon=True)
            self._thread.start()

    def running_elsewhere(self, job_dirs: Iterable[str]) -> None:
        """The running Jobs the last observe saw that this process did not spawn."""
        with self._mutex:
            self._foreign = {d for d in job_dirs if d not in self._children}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def _loop(self) -> None:
        next_foreign = 0.0
        clock = 0.0
        while not self._stop.wait(self._child_poll):
            clock += self._child_poll
            try:
                exited = self._exited_children()
                if clock >= next_foreign:
                    next_foreign = clock + self._foreign_poll
                    exited += self._exited_foreign()
                if exited and self._wake is not None:
                    self.wakes += 1
                    self._wake()
            except Exception:  # never end the thread: the tick is the backstop
                logger.exception("local jobs: the exit watcher met an unexpected error")

    def _exited_children(self) -> int:
        with self._mutex:
            items = list(self._children.items())
            self._woke_for &= set(self._children)
        exited = 0
        for job_dir, proc in items:
            if job_dir not in self._woke_for and proc.poll() is not None:
                with self._mutex:
                    self._woke_for.add(job_dir)
                exited += 1
        return exited

    def _exited_foreign(self) -> int:
        with self._mutex:
            foreign = list(self._foreign)
        done = [d for d in foreign if os.path.exists(os.path.join(d, "exit"))]
        if done:
            with self._mutex:
                self._foreign.difference_update(done)
        return len(done)
