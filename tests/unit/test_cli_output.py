"""What ``task get`` computes from the events: each attempt's waiting, pending and running time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nightwatch.app.cli_output import attempts, duration, timeline
from nightwatch.domain.model import Task, TaskEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(attempt: int, t: float, old: str, new: str, message: str | None = None) -> TaskEvent:
    return TaskEvent(task_id=1, attempt=attempt, at=at(t), from_status=old, to_status=new, message=message,
                     epoch=3, replica="r1")


def task(status: str, attempt: int, message: str | None = None) -> Task:
    return Task(id=1, name="t", namespace="default", info="{}", status=status, attempt=attempt,
                message=message, created_at=T0)


def test_a_failed_attempt_then_a_manual_retry_still_running() -> None:
    events = [ev(1, 2, "Normal", "Pending"), ev(1, 5, "Pending", "Running"),
              ev(1, 65, "Running", "Failed", "exit code 3: oops"),
              ev(2, 100, "Failed", "Normal"), ev(2, 110, "Normal", "Pending"), ev(2, 111, "Pending", "Running")]
    first, second = attempts(task("Running", 2), events, now=at(131))
    assert (first.attempt, first.status, first.message) == (1, "Failed", "exit code 3: oops")
    assert (first.waiting, first.pending, first.running) == (2, 3, 60)
    assert (second.attempt, second.status, second.started) == (2, "Running", at(100))
    assert (second.waiting, second.pending, second.running) == (10, 1, 20)  # running counted up to now


def test_an_automatic_retry_closes_the_attempt_as_failed_with_its_message() -> None:
    events = [ev(1, 0, "Normal", "Pending"), ev(1, 1, "Pending", "Running"),
              ev(2, 31, "Running", "Normal", "attempt 1 failed: exit code 1: x; retrying in 20s"),
              ev(2, 51, "Normal", "Pending"), ev(2, 52, "Pending", "Running"), ev(2, 62, "Running", "Succeeded")]
    first, second = attempts(task("Succeeded", 2), events, now=at(1000))
    assert (first.status, first.running) == ("Failed", 30)
    assert first.message is not None and first.message.startswith("attempt 1 failed")
    assert (second.status, second.waiting, second.pending, second.running) == ("Succeeded", 20, 1, 10)


def test_a_task_cancelled_before_launch_and_one_without_events() -> None:
    (only,) = attempts(task("Cancelled", 1), [ev(1, 7, "Normal", "Cancelled", "cancelled")], now=at(99))
    assert (only.status, only.waiting, only.pending, only.running) == ("Cancelled", 7, 0, 0)
    (fresh,) = attempts(task("Normal", 1), [], now=at(42))
    assert (fresh.status, fresh.waiting) == ("Normal", 42)


def test_timeline_says_how_long_each_status_lasted() -> None:
    events = [ev(1, 0, "Normal", "Pending"), ev(1, 4, "Pending", "Running"), ev(1, 94, "Running", "Succeeded")]
    lines = timeline(events, at(500), task("Succeeded", 1)).splitlines()
    assert [line.split()[5] for line in lines[1:3]] == ["4s", "1m30s"]
    assert "Running → Succeeded" in lines[3] and "so far" not in lines[3]
    running = timeline(events[:2], at(10), task("Running", 1)).splitlines()
    assert "6s so far" in running[2]


def test_durations_read_short() -> None:
    assert [duration(s) for s in (0, 59.6, 61, 3600 + 120, 3 * 86400 + 4 * 3600)] == \
        ["0s", "1m00s", "1m01s", "1h02m", "3d4h"]


def test_a_reset_by_the_users_update_keeps_the_old_outcome_and_pruned_events_start_late() -> None:
    events = [ev(1, 0, "Normal", "Pending"), ev(1, 1, "Pending", "Running"), ev(1, 9, "Running", "Succeeded"),
              ev(2, 50, "Normal", "Normal")]  # the user's UPDATE ... SET status='Normal', then the requeue
    first, second = attempts(task("Normal", 2), events, now=at(60))
    assert (first.status, first.running) == ("Succeeded", 8) and second.waiting == 10
    (only,) = attempts(task("Running", 3), [ev(3, 70, "Pending", "Running")], now=at(80))
    assert (only.attempt, only.status, only.running, only.waiting) == (3, "Running", 10, 0)
    (none,) = attempts(task("Failed", 4, "exit code 1"), [], now=at(80))
    assert (none.attempt, none.status, none.message, none.started) == (4, "Failed", "exit code 1", None)
