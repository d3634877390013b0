"""app/log_tails.py: the server's log tails, read once a second per task however many pages poll,
and at most MAX_BYTES of them kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from nightwatch.adapters.clock import FakeClock
from nightwatch.app.log_tails import LogTails
from nightwatch.domain.errors import JobNotFoundError
from nightwatch.domain.model import Task


class Counting:
    """A gateway's ``logs`` only, counting its calls."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.calls = 0
        self.missing = False

    def logs(self, task: Task, tail: int | None = 100, follow: bool = False,
             stop: threading.Event | None = None) -> Iterator[str]:
        self.calls += 1
        if self.missing:
            raise JobNotFoundError("no Job")
        return iter(self.lines[-tail:] if tail else self.lines)


TASK = Task(1, "t", "default", "{}", "Running")


def test_a_tail_is_read_once_a_second_per_task_and_attempt() -> None:
    clock = FakeClock()
    gateway = Counting(["a", "b", "c"])
    tails = LogTails(gateway, clock)  # type: ignore[arg-type]
    for _ in range(20):  # twenty pages polling within the second
        assert tails.tail(TASK, 2).lines == ("b", "c")
    assert gateway.calls == 1
    tails.tail(Task(1, "t", "default", "{}", "Running", attempt=2), 2)  # another attempt: its own
    assert gateway.calls == 2
    clock.advance(1.0)
    gateway.lines.append("d")
    assert tails.tail(TASK, 2).lines == ("c", "d")
    assert gateway.calls == 3


def test_errors_are_not_kept() -> None:
    gateway = Counting(["a"])
    gateway.missing = True
    tails = LogTails(gateway, FakeClock())  # type: ignore[arg-type]
    with pytest.raises(JobNotFoundError):
        tails.tail(TASK, 10)
    gateway.missing = False
    assert tails.tail(TASK, 10).lines == ("a",)


def test_only_the_last_max_bytes_of_a_tail_are_kept() -> None:
    gateway = Counting([f"{i:09d}" for i in range(1000)])  # 10 bytes a line with its newline
    got = LogTails(gateway, FakeClock(), max_bytes=100).tail(TASK, None)  # type: ignore[arg-type]
    assert got.truncated and got.lines == tuple(f"{i:09d}" for i in range(990, 1000))
