"""The TaskStore contract: every adapter (memory, sqlite, mysql, postgres) passes the same tests.

Written against the Protocol only; the fixtures in conftest.py give each test a
database of its own, and ``backend.make()`` opens another replica on it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from unfenced import UnfencedStore

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.fake import FakeJobGateway
from nightwatch.app.task_watcher import TaskWatcher
from nightwatch.domain.errors import (
    DuplicateTaskError,
    FencedError,
    IllegalTransitionError,
    TaskIdConflictError,
    TaskNotFoundError,
    TaskValueError,
)
from nightwatch.domain.model import Fence, NewTask, TaskStatus
from nightwatch.domain.ports import RunContext, TaskStore

if TYPE_CHECKING:
    from conftest import StoreBackend  # tests/contract/conftest.py

pytestmark = pytest.mark.timeout(120)

N, P, R, S, F = (
    TaskStatus.NORMAL, TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED, TaskStatus.FAILED,
)
INFO = '{"image":"alpine","command":["sleep"],"args":["1"]}'
LEADER = "nightwatch"


def new(name: str, status: str = N, namespace: str = "default", user_id: int = 0) -> NewTask:
    return NewTask(name=name, namespace=namespace, info=INFO, user_id=user_id, status=status)


def all_pages(store: TaskStore, statuses: list[str] | None, limit: int) -> list[list[int]]:
    pages, after = [], 0
    while page := store.page(statuses, after, limit):
        pages.append([t.id for t in page])
        after = page[-1].id
    return pages


def concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """Start every call at the same instant, each on its own thread; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait(timeout=10)
        try:
            return call()
        except Exception as e:  # returned, so the test can say which call failed and how
            return e

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def is_utc_now(value: datetime | None) -> bool:
    return (
        value is not None
        and value.utcoffset() == timedelta(0)
        and abs(datetime.now(UTC) - value) < timedelta(minutes=5)
    )


# -- add / get ---------------------------------------------------------------------------


def test_add_returns_the_stored_task(store: TaskStore) -> None:
    task = store.add(new("a", user_id=7))
    assert (task.name, task.namespace, task.info, task.status, task.user_id, task.message) == (
        "a", "default", INFO, "Normal", 7, None,
    )
    assert is_utc_now(task.created_at) and is_utc_now(task.updated_at)
    assert store.get(task.id) == task


def test_ids_increase_in_insertion_order(store: TaskStore) -> None:
    ids = [store.add(new(f"t{i}")).id for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5


def test_same_name_in_same_namespace_is_a_duplicate(store: TaskStore) -> None:
    store.add(new("twin"))
    with pytest.raises(DuplicateTaskError):
        store.add(new("twin"))
    store.add(new("twin", namespace="other"))  # another namespace is another task
    assert store.count_by_status() == {"Normal": 2}


def test_get_of_a_missing_task_raises_not_found(store: TaskStore) -> None:
    with pytest.raises(TaskNotFoundError) as e:
        store.get(424242)
    assert e.value.task_id == 424242


# -- page / count ------------------------------------------------------------------------


def test_paging_reaches_every_task_oldest_first(store: TaskStore) -> None:
    # 1,200 waiting tasks among others, paged by 500: none starves, none repeats.
    expected = []
    for i in range(1400):
        task = store.add(new(f"t{i}", R if i % 7 == 3 else N))
        if task.status == N:
            expected.append(task.id)
    assert len(expected) == 1200

    pages = all_pages(store, [N], 500)

    assert [len(p) for p in pages] == [500, 500, 200]
    assert [i for p in pages for i in p] == expected


def test_paging_goes_on_while_tasks_leave_the_filter(store: TaskStore) -> None:
    ids = [store.add(new(f"t{i}")).id for i in range(25)]
    seen, after = [], 0
    while page := store.page([N], after, 10):  # as the launcher does: page, move each on
        for task in page:
            assert store.transition(task.id, N, P)
            seen.append(task.id)
        after = page[-1].id
    assert seen == ids
    assert store.count_by_status() == {"Pending": 25}


def test_page_filters_by_status_and_respects_after_id_and_limit(store: TaskStore) -> None:
    statuses = [N, P, R, S, F, N, R]
    ids = [store.add(new(f"t{i}", s)).id for i, s in enumerate(statuses)]
    by_status = {s: [i for i, st in zip(ids, statuses, strict=True) if st == s] for s in set(statuses)}

    assert [t.id for t in store.page([P, R], 0, 100)] == sorted(by_status[P] + by_status[R])
    assert [t.id for t in store.page(None, 0, 100)] == ids
    assert [t.id for t in store.page(None, ids[2], 3)] == ids[3:6]
    assert [t.id for t in store.page([N], ids[0], 100)] == [ids[5]]
    assert store.page([], 0, 100) == []
    assert store.page([N], ids[-1], 100) == []


def test_count_by_status_includes_statuses_nightwatch_does_not_know(store: TaskStore) -> None:
    for i, status in enumerate([N, N, N, P, F, "Archived"]):  # "Archived": written by the user's system
        store.add(new(f"t{i}", status))
    assert store.count_by_status() == {"Normal": 3, "Pending": 1, "Failed": 1, "Archived": 1}
    assert [t.status for t in store.page(["Archived"], 0, 10)] == ["Archived"]


# -- transition --------------------------------------------------------------------------


def test_transition_is_a_compare_and_set(store: TaskStore) -> None:
    task = store.add(new("cas"))
    assert store.transition(task.id, N, P) is True
    assert store.transition(task.id, N, P) is False  # the status moved on: nothing written
    assert store.transition(task.id, N, F, "too late") is False
    assert store.get(task.id).status == "Pending" and store.get(task.id).message is None
    assert store.transition(task.id, P, R) is True
    assert store.transition(task.id, R, F, "BackoffLimitExceeded: job failed") is True
    done = store.get(task.id)
    assert (done.status, done.message) == ("Failed", "BackoffLimitExceeded: job failed")
    assert is_utc_now(done.updated_at) and done.updated_at >= task.updated_at  # type: ignore[operator]


def test_transition_of_a_missing_task_is_false(store: TaskStore) -> None:
    assert store.transition(424242, N, P) is False


def test_an_illegal_transition_raises_and_writes_nothing(store: TaskStore) -> None:
    for i, (old, target) in enumerate([(N, R), (N, S), (P, N), (R, P), (R, N)]):  # skips and backwards
        task = store.add(new(f"t{i}", old))
        with pytest.raises(IllegalTransitionError):
            store.transition(task.id, old, target)
        assert store.get(task.id) == task


def test_a_terminal_status_never_changes(store: TaskStore) -> None:
    for terminal in (S, F):
        task = store.add(new(f"done-{terminal}", terminal))
        for target in TaskStatus:
            with pytest.raises(IllegalTransitionError):
                store.transition(task.id, terminal, target, "again")
        assert store.get(task.id) == task


# -- fencing -----------------------------------------------------------------------------


def test_begin_term_is_strictly_increasing_across_replicas(backend: StoreBackend) -> None:
    a, b = backend.make(), backend.make()
    a.migrate()
    assert a.current_epoch(LEADER) == 0
    epochs = [a.begin_term(LEADER), b.begin_term(LEADER), a.begin_term(LEADER)]
    assert epochs[0] < epochs[1] < epochs[2]
    assert a.current_epoch(LEADER) == b.current_epoch(LEADER) == epochs[2]
    assert a.current_epoch("another-lock") == 0


def test_concurrent_terms_never_share_an_epoch(backend: StoreBackend) -> None:
    a, b = backend.make(), backend.make()
    a.migrate()

    def terms(store: TaskStore) -> list[int]:
        return [store.begin_term(LEADER) for _ in range(25)]

    first, second = concurrently(lambda: terms(a), lambda: terms(b))
    assert sorted(first + second) == list(range(1, 51))
    assert first == sorted(first) and second == sorted(second)


def test_a_stale_fence_is_refused_and_writes_nothing(backend: StoreBackend) -> None:
    old_leader, new_leader = backend.make(), backend.make()
    old_leader.migrate()
    task = old_leader.add(new("contested"))
    stale = Fence(LEADER, old_leader.begin_term(LEADER))
    current = Fence(LEADER, new_leader.begin_term(LEADER))  # a successor took over

    with pytest.raises(FencedError) as e:
        old_leader.transition(task.id, N, P, fence=stale)
    assert (e.value.name, e.value.epoch) == (LEADER, stale.epoch)
    assert new_leader.get(task.id) == task  # nothing written

    assert new_leader.transition(task.id, N, P, fence=current) is True
    assert old_leader.get(task.id).status == "Pending"


def test_without_the_epoch_check_the_stale_write_goes_through(backend: StoreBackend) -> None:
    """Positive control: the fencing test above fails with a store that drops the epoch check."""
    unchecked, new_leader = UnfencedStore(backend.make()), backend.make()
    unchecked.migrate()
    task = unchecked.add(new("contested"))
    stale = Fence(LEADER, unchecked.begin_term(LEADER))
    new_leader.begin_term(LEADER)

    assert unchecked.transition(task.id, N, P, fence=stale) is True
    assert new_leader.get(task.id).status == "Pending"


def test_a_fence_of_a_term_that_never_began_is_refused(store: TaskStore) -> None:
    task = store.add(new("t"))
    with pytest.raises(FencedError):
        store.transition(task.id, N, P, fence=Fence("never-begun", 1))
    assert store.get(task.id).status == "Normal"


def test_a_lost_race_under_the_current_fence_is_false_not_fenced(store: TaskStore) -> None:
    fence = Fence(LEADER, store.begin_term(LEADER))
    task = store.add(new("t"))
    assert store.transition(task.id, N, P, fence=fence) is True
    assert store.transition(task.id, N, F, "nope", fence=fence) is False
    assert store.transition(task.id, P, F, "failed for good", fence=fence) is True
    assert store.get(task.id).message == "failed for good"


def test_two_replicas_racing_on_the_same_task_exactly_one_wins(backend: StoreBackend) -> None:
    a, b = backend.make(), backend.make()
    a.migrate()
    fence = Fence(LEADER, a.begin_term(LEADER))
    for i in range(30):
        task = a.add(new(f"race{i}"))
        won_a, won_b = concurrently(
            lambda t=task: a.transition(t.id, N, P, fence=fence),
            lambda t=task: b.transition(t.id, N, F, "rejected", fence=fence),
        )
        assert {won_a, won_b} == {True, False}, (won_a, won_b)
        assert a.get(task.id).status == ("Pending" if won_a else "Failed")


# -- migrate -----------------------------------------------------------------------------


def test_migrate_is_idempotent_and_keeps_the_data(backend: StoreBackend) -> None:
    store = backend.make()
    store.migrate()
    task = store.add(new("kept"))
    store.migrate()
    store.migrate()
    assert store.get(task.id) == task
    assert store.add(new("next")).id > task.id


def test_replicas_migrating_a_fresh_database_at_once(backend: StoreBackend) -> None:
    replicas = [backend.make() for _ in range(4)]
    results = concurrently(*(r.migrate for r in replicas))
    assert results == [None] * 4
    task = replicas[0].add(new("after"))
    assert replicas[3].get(task.id) == task


def test_the_seed_table_and_its_rows_work_after_migrate(backend: StoreBackend) -> None:
    backend.load_seed()  # the table exactly as the user's system creates it, with its two rows
    store = backend.make()
    store.migrate()
    store.migrate()

    rows = store.page([N], 0, 500)
    assert [(t.id, t.name, t.namespace, t.user_id, t.status) for t in rows] == [
        (1, "demo-task-1", "default", 1, "Normal"),
        (2, "demo-task-2", "demo", 2, "Normal"),
    ]
    assert rows[0].info == '{"image":"alpine","command":["sleep"],"args":["60"]}'
    assert rows[1].info == '{"image":"busybox","command":["sleep"],"args":["3600"]}'
    assert all(t.message is None and is_utc_now(t.created_at) for t in rows)

    fence = Fence(LEADER, store.begin_term(LEADER))
    assert store.transition(1, N, P, fence=fence) is True
    assert store.transition(2, N, F, 'namespace "demo" is not allowed', fence=fence) is True
    assert store.get(2).message == 'namespace "demo" is not allowed'
    assert store.add(new("demo-task-3")).id == 3  # the user's auto-increment carries on
    assert store.count_by_status() == {"Pending": 1, "Failed": 1, "Normal": 1}


# -- values that do not fit, and clashes -------------------------------------------------------

@pytest.mark.parametrize(("task", "message"), [
    (new("x" * 46), "task.name: 46 characters, at most 45 fit"),
    (new("ok", namespace="n" * 46), "task.namespace: 46 characters, at most 45 fit"),
    (new("ok", status="S" * 46), "task.status: 46 characters, at most 45 fit"),
    (new("ok", user_id=2**63), f"task.user_id: {2**63} is out of range ({-2**63} to {2**63 - 1})"),
    (NewTask("ok", "default", "é" * 32768, 0, N), "task.info: 65536 bytes, at most 65535 fit"),
], ids=["name", "namespace", "status", "user_id", "info"])
def test_a_value_that_does_not_fit_is_refused_with_the_same_message_everywhere(
        store: TaskStore, task: NewTask, message: str) -> None:
    with pytest.raises(TaskValueError) as e:
        store.add(task)
    assert str(e.value) == message
    assert store.count_by_status() == {}
    assert store.add(new("x" * 45)).name == "x" * 45  # what fits is kept whole


def test_an_id_out_of_range_is_refused_with_the_same_message_everywhere(store: TaskStore) -> None:
    too_big = f"task.id: {2**63} is out of range ({-2**63} to {2**63 - 1})"
    with pytest.raises(TaskValueError, match=re.escape(too_big)):
        store.get(2**63)
    with pytest.raises(TaskValueError, match=re.escape(too_big)):
        store.page([N], 2**63, 10)
    with pytest.raises(TaskNotFoundError):
        store.get(2**63 - 1)


def test_an_id_clash_is_told_apart_from_a_name_clash(backend: StoreBackend) -> None:
    store = backend.make()
    store.migrate()
    store.add(new("taken"))
    with pytest.raises(DuplicateTaskError, match="a task named 'taken' already exists in 'default'"):
        store.add(new("taken"))
    hand = backend.insert_behind_the_sequence("by-hand")  # as the seed's SQL does: an explicit id
    if hand is None:
        pytest.skip(f"{backend.id} moves its id counter past explicit ids: an id cannot clash")
    with pytest.raises(TaskIdConflictError, match="is already taken: the id sequence is behind") as e:
        store.add(new("hello"))
    assert "already exists" not in str(e.value)
    assert sorted(t.name for t in store.page(None, 0, 10)) == ["by-hand", "taken"]


# -- exact statuses -------------------------------------------------------------------------------

LOOKALIKES = ("normal", "NORMAL", "Normal ", "pending", "Running ")


def test_statuses_match_byte_for_byte(store: TaskStore) -> None:
    real = store.add(new("real"))
    running = store.add(new("running", status=R))
    lookalikes = {s: store.add(new(f"look{i}", status=s)) for i, s in enumerate(LOOKALIKES)}

    assert [t.id for t in store.page([N], 0, 100)] == [real.id]
    assert [t.id for t in store.page([P, R], 0, 100)] == [running.id]
    assert store.count_by_status() == {"Normal": 1, "Running": 1, **{s: 1 for s in LOOKALIKES}}
    fence = Fence(LEADER, store.begin_term(LEADER))
    for status, task in lookalikes.items():
        assert store.transition(task.id, N, P, fence=fence) is False
        assert store.transition(task.id, P, R) is False
        assert store.get(task.id).status == status  # left untouched


def test_the_task_watcher_leaves_lookalike_statuses_untouched_and_logs_each_once(
        store: TaskStore, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    gateway = FakeJobGateway(clock)
    watcher = TaskWatcher(store, gateway, clock, allowed_namespaces=["default"], count_interval=0.001)
    real = store.add(new("real"))
    lookalikes = {s: store.add(new(f"look{i}", status=s)) for i, s in enumerate(LOOKALIKES)}
    fence = Fence(LEADER, store.begin_term(LEADER))
    with caplog.at_level(logging.WARNING, logger="nightwatch.app.task_watcher"):
        for _ in range(3):
            watcher.run(RunContext(fence))
            clock.advance(1)
    assert store.get(real.id).status != "Normal"
    assert [name for _, name, _ in gateway.created] == ["real"]
    assert {s: store.get(t.id).status for s, t in lookalikes.items()} == {s: s for s in LOOKALIKES}
    warned = [r.getMessage() for r in caplog.records if "does not know" in r.getMessage()]
    assert sorted(warned) == sorted(
        f"1 task(s) have status {s!r}, which nightwatch does not know; leaving them untouched" for s in LOOKALIKES
    )
