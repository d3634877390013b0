"""The history watcher: delete task events older than ``history.retention``, in batches.

Only events go: task rows are the user's and are never deleted. Pruning is not fenced (an
event that old is nobody's to keep); a cancelled run stops between batches.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from nightwatch.domain.ports import Clock, RunContext, TaskStore, Watcher

logger = logging.getLogger(__name__)

DEFAULT_RETENTION = 30 * 86400.0  # seconds
DEFAULT_BATCH = 10_000


class HistoryWatcher(Watcher):
    def __init__(self, store: TaskStore, clock: Clock, *, retention: float = DEFAULT_RETENTION,
                 batch_size: int = DEFAULT_BATCH, spec: str = "@every 10m", name: str = "history") -> None:
        if retention <= 0 or batch_size < 1:
            raise ValueError(f"history watcher: retention {retention:g}s and batch size {batch_size} must be > 0")
        self.name = name
        self.spec = spec
        self._store = store
        self._clock = clock
        self._retention = retention
        self._batch_size = batch_size

    def run(self, ctx: RunContext) -> None:
        self.prune(ctx)

    def prune(self, ctx: RunContext) -> int:
        """Events older than the retention, batch after batch until a batch comes back short
        or the run is cancelled; how many went."""
        before = self._clock.now() - timedelta(seconds=self._retention)
        total = 0
        while not ctx.cancelled.is_set():
            gone = self._store.prune_events(before, self._batch_size)
            total += gone
            if gone < self._batch_size:
                break
        if total:
            logger.info("%s watcher: deleted %d task event(s) older than %s", self.name, total,
                        before.isoformat(timespec="seconds"))
        return total
