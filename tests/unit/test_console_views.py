"""What the console computes for its pages: durations, the timeline, attempts, the submit
form's fields, and that its templates and static files ship in the package."""

from __future__ import annotations

import fnmatch
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nightwatch.app import console_views as v
from nightwatch.domain.errors import InvalidTaskSpecError
from nightwatch.domain.model import Task, TaskEvent, job_name

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ev(attempt: int, when: float, old: str, new: str, message: str | None = None) -> TaskEvent:
    return TaskEvent(1, attempt, at(when), old, new, message, 1, "r")


@pytest.mark.parametrize(("seconds", "shown"), [
    (0.25, "250ms"), (4.21, "4.2s"), (184, "3m 04s"), (7500, "2h 05m"), (3 * 86400 + 4 * 3600, "3d 04h"),
    (-1, "0ms"), (None, ""),
])
def test_durations(seconds: float | None, shown: str) -> None:
    assert v.duration(seconds) == shown


def test_the_timeline_gives_each_status_its_time_and_the_last_runs_until_now() -> None:
    task = Task(1, "t", "default", "{}", "Running", created_at=at(0))
    rows = v.timeline([ev(1, 2, "Normal", "Pending"), ev(1, 5, "Pending", "Running")], at(15), task)
    assert [(r.event.to_status, r.seconds, r.ongoing) for r in rows] == [
        ("Normal", 2.0, False), ("Pending", 3.0, False), ("Running", 10.0, True)]
    finished = v.timeline([ev(1, 2, "Normal", "Pending"), ev(1, 3, "Pending", "Failed")], at(99))
    assert finished[-1].seconds is None and not finished[-1].ongoing


def test_attempts_newest_first_with_outcome_and_time_taken() -> None:
    events = [ev(1, 1, "Normal", "Pending"), ev(1, 2, "Pending", "Running"), ev(1, 6, "Running", "Failed", "exit 1"),
              ev(2, 10, "Failed", "Normal", "retry"), ev(2, 11, "Normal", "Pending"), ev(2, 12, "Pending", "Running")]
    task = Task(1, "job", "default", "{}", "Running", attempt=2, created_at=at(0))
    second, first = v.attempts(task, events, at(20))
    assert (first.number, first.job, first.outcome, first.message, first.seconds) == (1, "job", "Failed", "exit 1", 5.0)
    assert (second.number, second.job, second.outcome, second.finished, second.seconds) == (
        2, job_name("job", 2), "Running", None, 9.0)


def test_an_attempt_without_events_comes_from_the_task_row() -> None:
    task = Task(1, "job", "default", "{}", "Normal", created_at=at(0))
    (only,) = v.attempts(task, [], at(5))
    assert (only.number, only.started, only.outcome) == (1, at(0), "Normal")


def test_the_submit_form_fields() -> None:
    doc = v.submit_doc({"name": " n ", "namespace": "default", "image": "img", "command": "sh -c",
                        "args": "echo 'x y'\r\n\r\nz", "env": "A=1\r\nB==2", "user_id": ""})
    assert doc == {"name": "n", "namespace": "default", "image": "img", "command": ["sh", "-c"],
                   "args": ["echo 'x y'", "z"], "env": {"A": "1", "B": "=2"}, "user_id": 0}
    with pytest.raises(InvalidTaskSpecError, match="env line 2: expected KEY=VALUE"):
        v.submit_doc({"env": "A=1\n=2"})


def test_the_spec_is_pretty_when_it_is_json_and_as_stored_when_not() -> None:
    assert v.spec_text('{"image":"x"}') == '{\n  "image": "x"\n}'
    assert v.spec_text("not json <b>") == "not json <b>"


def test_templates_and_static_files_are_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["nightwatch"]
    app = ROOT / "nightwatch" / "app"
    shipped = [p for p in (app / "templates").rglob("*") if p.is_file()]
    shipped += [p for p in (app / "static").rglob("*") if p.is_file()]
    assert len(shipped) > 10
    for path in shipped:
        inside = path.relative_to(ROOT / "nightwatch").as_posix()
        assert any(fnmatch.fnmatch(inside, pattern) for pattern in patterns), f"{inside} is not package data"
