"""Clocks: the system's, and a manual one for deterministic tests."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from nightwatch.domain.ports import Clock


class SystemClock(Clock):
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock(Clock):
    """Time moves only when a test calls ``advance``."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._mono = 1000.0
        self._wall = start or datetime(2026, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def now(self) -> datetime:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._mono += seconds
            self._wall += timedelta(seconds=seconds)

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock alone (an NTP correction, a VM resumed); monotonic time stays."""
        with self._lock:
            self._wall += timedelta(seconds=seconds)
