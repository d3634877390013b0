"""How long an automatic retry waits: exponential, capped, with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

_MAX_DOUBLINGS = 60  # far past any cap; a larger exponent only risks float overflow


@dataclass(frozen=True)
class RetryPolicy:
    """``base`` seconds before the second attempt, doubling per attempt up to ``cap``; then
    up to ``jitter`` of it (a fraction, 0..1) taken off at random, so tasks that failed
    together do not all come back together. ``random`` returns a float in [0, 1)."""

    base: float = 10.0
    cap: float = 600.0
    jitter: float = 0.1
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"retry delay: need 0 < base <= cap, got base {self.base:g}s, cap {self.cap:g}s")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"retry jitter: a fraction from 0 to 1, got {self.jitter:g}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt ``attempt`` (1 = the first run) failed."""
        doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
        capped = min(self.base * 2.0**doublings, self.cap)
        return capped * (1.0 - self.jitter * self.random())


def format_delay(seconds: float) -> str:
    """``20s``, ``2m30s``, ``1h5m``: whole seconds, for a task's message."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    return f"{secs}s"
