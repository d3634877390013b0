"""The TaskStore contract, part two: the lifecycle (attempts, requeue, cancel requests), the
task_event history written with each applied status write, and the listings.

Every adapter (memory, sqlite, mysql, postgres) passes the same tests; the fixtures are
conftest.py's. The event-atomicity tests at the end are SQL only: they crash a write between
its compare-and-set and its event.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from test_task_store import INFO, LEADER, concurrently, is_utc_now, new

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.store.sql import SQLTaskStore
from nightwatch.domain.errors import FencedError, IllegalTransitionError, TaskNotFoundError
from nightwatch.domain.model import Fence, NewTask, TaskEvent, TaskQuery, TaskStatus
from nightwatch.domain.ports import TaskStore

if TYPE_CHECKING:
    from conftest import StoreBackend  # tests/contract/conftest.py

pytestmark = pytest.mark.timeout(120)

N, P, R, S, F, C = (TaskStatus.NORMAL, TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED,
                    TaskStatus.FAILED, TaskStatus.CANCELLED)


def moves(store: TaskStore, task_id: int) -> list[tuple[Any, ...]]:
    return [(e.attempt, e.from_status, e.to_status, e.message, e.epoch, e.replica) for e in store.events(task_id)]


# -- the new columns ---------------------------------------------------------------------------

def test_a_new_task_is_at_attempt_1_with_nothing_pending(store: TaskStore) -> None:
    task = store.add(new("fresh"))
    assert (task.attempt, task.cancel_requested_at, task.cancel_reason, task.retry_at, task.finished_at) == (
        1, None, None, None, None)
    assert store.events(task.id) == []


def test_the_seed_rows_are_at_attempt_1_after_migrate(backend: StoreBackend) -> None:
    backend.load_seed()
    store = backend.make()
    store.migrate()
    assert [(t.name, t.attempt, t.finished_at, t.cancel_requested_at) for t in store.page(None, 0, 10)] == [
        ("demo-task-1", 1, None, None), ("demo-task-2", 1, None, None)]


# -- events of transitions -------------------------------------------------------------------------

def test_each_applied_transition_writes_one_event_with_its_term_and_replica(store: TaskStore) -> None:
    fence = Fence(LEADER, store.begin_term(LEADER), replica="replica-a")
    task = store.add(new("t"))
    assert store.transition(task.id, N, P, fence=fence)
    assert store.transition(task.id, P, R, fence=fence)
    assert store.transition(task.id, R, F, "exit code 3: oops", fence=fence)
    assert moves(store, task.id) == [
        (1, "Normal", "Pending", None, fence.epoch, "replica-a"),
        (1, "Pending", "Running", None, fence.epoch, "replica-a"),
        (1, "Running", "Failed", "exit code 3: oops", fence.epoch, "replica-a"),
    ]
    events = store.events(task.id)
    assert all(e.task_id == task.id and is_utc_now(e.at) for e in events)
    assert [e.id for e in events] == sorted(e.id for e in events)


def test_an_unfenced_transition_records_the_replica_given_and_no_epoch(store: TaskStore) -> None:
    task = store.add(new("t"))
    assert store.transition(task.id, N, C, "cancelled by alice", replica="cli")
    assert moves(store, task.id) == [(1, "Normal", "Cancelled", "cancelled by alice", None, "cli")]


def test_a_terminal_status_sets_finished_at_and_others_do_not(store: TaskStore) -> None:
    task = store.add(new("t"))
    assert store.transition(task.id, N, P)
    assert store.get(task.id).finished_at is None
    assert store.transition(task.id, P, S)
    done = store.get(task.id)
    assert is_utc_now(done.finished_at) and done.status == "Succeeded"


def test_a_lost_compare_and_set_writes_no_event(store: TaskStore) -> None:
    fence = Fence(LEADER, store.begin_term(LEADER), "a")
    task = store.add(new("t"))
    assert store.transition(task.id, N, P, fence=fence)
    assert store.transition(task.id, N, F, "late", fence=fence) is False
    assert store.transition(task.id, P, R, fence=fence, attempt=2) is False  # another attempt's write
    assert store.transition(424242, N, P, fence=fence) is False
    assert moves(store, task.id) == [(1, "Normal", "Pending", None, fence.epoch, "a")]
    assert store.transition(task.id, P, R, fence=fence, attempt=1) is True


def test_a_fenced_write_writes_no_event(backend: StoreBackend) -> None:
    old_leader, new_leader = backend.make(), backend.make()
    old_leader.migrate()
    task = old_leader.add(new("contested"))
    stale = Fence(LEADER, old_leader.begin_term(LEADER), "old")
    new_leader.begin_term(LEADER)
    with pytest.raises(FencedError):
        old_leader.transition(task.id, N, P, fence=stale)
    with pytest.raises(FencedError):
        old_leader.requeue(task.id, N, 1, fence=stale)
    assert new_leader.get(task.id) == task and new_leader.events(task.id) == []


def test_two_replicas_racing_write_exactly_one_event(backend: StoreBackend) -> None:
    a, b = backend.make(), backend.make()
    a.migrate()
    fence = Fence(LEADER, a.begin_term(LEADER))
    for i in range(10):
        task = a.add(new(f"race{i}", F))
        won = concurrently(lambda t=task: a.requeue(t.id, F, 1, replica="cli"),
                           lambda t=task: b.requeue(t.id, F, 1, fence=fence))
        assert sorted(won) == [False, True], won
        assert len(a.events(task.id)) == 1 and a.get(task.id).attempt == 2


# -- requeue ---------------------------------------------------------------------------------------

def test_requeue_starts_the_next_attempt_and_clears_the_last_ones_traces(store: TaskStore) -> None:
    task = store.add(new("t"))
    store.request_cancel(task.id, "by alice")
    assert store.transition(task.id, N, C, "cancelled")
    retry_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert store.requeue(task.id, C, 1, "retried by bob", retry_at=retry_at, replica="api")
    again = store.get(task.id)
    assert (again.status, again.attempt, again.message, again.retry_at) == ("Normal", 2, "retried by bob", retry_at)
    assert (again.finished_at, again.cancel_requested_at, again.cancel_reason) == (None, None, None)
    assert moves(store, task.id)[-1] == (2, "Cancelled", "Normal", "retried by bob", None, "api")
    # the next attempt's writes carry its number
    fence = Fence(LEADER, store.begin_term(LEADER), "r")
    assert store.transition(task.id, N, P, fence=fence, attempt=1) is False
    assert store.transition(task.id, N, P, fence=fence, attempt=2) is True
    assert moves(store, task.id)[-1] == (2, "Normal", "Pending", None, fence.epoch, "r")


def test_requeue_is_a_compare_and_set_on_status_and_attempt(store: TaskStore) -> None:
    task = store.add(new("t", F))
    assert store.requeue(task.id, F, 2) is False  # not its attempt
    assert store.requeue(task.id, C, 1) is False  # not its status
    assert store.requeue(424242, F, 1) is False
    assert store.events(task.id) == [] and store.get(task.id) == task
    assert store.requeue(task.id, F, 1) is True
    assert store.requeue(task.id, F, 1) is False  # done once
    assert store.get(task.id).attempt == 2 and len(store.events(task.id)) == 1


def test_requeue_of_a_success_needs_force(store: TaskStore) -> None:
    task = store.add(new("t", S))
    with pytest.raises(IllegalTransitionError):
        store.requeue(task.id, S, 1)
    assert store.get(task.id) == task and store.events(task.id) == []
    assert store.requeue(task.id, S, 1, force=True, replica="cli") is True
    assert store.get(task.id).attempt == 2


def test_requeue_from_in_flight_under_the_fence_for_an_automatic_retry(store: TaskStore) -> None:
    fence = Fence(LEADER, store.begin_term(LEADER), "a")
    task = store.add(new("t", R))
    message = "attempt 1 failed: exit code 3: oops; retrying in 20s"
    assert store.requeue(task.id, R, 1, message, retry_at=datetime.now(UTC) + timedelta(seconds=20), fence=fence)
    assert moves(store, task.id) == [(2, "Running", "Normal", message, fence.epoch, "a")]


def test_an_automatic_retry_never_erases_a_cancel_requested_since_the_row_was_read(store: TaskStore) -> None:
    fence = Fence(LEADER, store.begin_term(LEADER), "a")
    task = store.add(new("t", R))  # the watcher read it, then saw its Job fail
    store.request_cancel(task.id, "stop it", replica="cli")  # ... meanwhile the user asked to cancel
    assert store.requeue(task.id, R, 1, "attempt 1 failed; retrying in 10s", fence=fence,
                         unless_cancelled=True) is False
    got = store.get(task.id)
    assert (got.status, got.attempt, got.cancel_reason) == ("Running", 1, "stop it") and store.events(task.id) == []
    assert store.transition(task.id, R, C, "cancelled: stop it", fence=fence, attempt=1)  # the next run's
    # no cancel pending: the same retry applies; a manual retry (the default) clears a request as before
    other = store.add(new("u", R))
    assert store.requeue(other.id, R, 1, fence=fence, unless_cancelled=True) is True
    store.request_cancel(other.id, "later")
    assert store.transition(other.id, N, C, fence=fence)
    assert store.requeue(other.id, C, 2, replica="cli") is True
    assert store.get(other.id).cancel_requested_at is None


# -- cancel requests -------------------------------------------------------------------------------

def test_request_cancel_sets_only_the_cancel_columns(store: TaskStore) -> None:
    task = store.add(new("t", R))
    asked = store.request_cancel(task.id, "by alice", replica="cli")
    assert asked.requested is True
    assert is_utc_now(asked.task.cancel_requested_at) and asked.task.cancel_reason == "by alice"
    after = store.get(task.id)
    assert after == asked.task
    assert (after.status, after.attempt, after.message, after.finished_at) == ("Running", 1, None, None)
    assert store.events(task.id) == []


def test_a_second_cancel_request_or_one_on_a_finished_task_changes_nothing(store: TaskStore) -> None:
    task = store.add(new("t"))
    first = store.request_cancel(task.id, "first")
    again = store.request_cancel(task.id, "second")
    assert again.requested is False and again.task == first.task and again.task.cancel_reason == "first"
    for i, status in enumerate((S, F, C)):
        done = store.add(new(f"done{i}", status))
        answer = store.request_cancel(done.id, "too late")
        assert answer.requested is False and answer.task == done == store.get(done.id)


def test_request_cancel_of_a_missing_task_raises_not_found(store: TaskStore) -> None:
    with pytest.raises(TaskNotFoundError):
        store.request_cancel(424242)


def test_a_lookalike_terminal_status_is_not_terminal(store: TaskStore) -> None:
    task = store.add(new("t", "failed"))  # the user's system wrote it; nightwatch does not know it
    assert store.request_cancel(task.id, "x").requested is True


# -- find ------------------------------------------------------------------------------------------

def test_find_is_by_name_and_namespace_byte_for_byte(store: TaskStore) -> None:
    task = store.add(new("Hello", namespace="demo"))
    store.add(new("Hello", namespace="other"))
    assert store.find("Hello", "demo") == task
    for name, namespace in (("hello", "demo"), ("Hello ", "demo"), ("Hello", "Demo"), ("Hello", "nowhere")):
        with pytest.raises(TaskNotFoundError, match=f"{name!r} in namespace {namespace!r}"):
            store.find(name, namespace)


# -- query / count ---------------------------------------------------------------------------------

def filled(store: TaskStore) -> list[Any]:
    rows = [("a", "default", N, 1), ("b", "demo", P, 2), ("c", "default", F, 1), ("d", "demo", F, 1),
            ("e", "default", "Failed ", 2), ("f", "default", N, 2), ("g", "demo", R, 1)]
    return [store.add(NewTask(name, ns, INFO, user, status)) for name, ns, status, user in rows]


def names(tasks: list[Any]) -> list[str]:
    return [t.name for t in tasks]


def test_query_lists_newest_first_with_every_filter(store: TaskStore) -> None:
    filled(store)
    assert names(store.query(TaskQuery())) == ["g", "f", "e", "d", "c", "b", "a"]
    assert names(store.query(TaskQuery(namespace="demo"))) == ["g", "d", "b"]
    assert names(store.query(TaskQuery(statuses=("Failed",)))) == ["d", "c"]  # not "Failed "
    assert names(store.query(TaskQuery(statuses=("Normal", "Running", "Normal")))) == ["g", "f", "a"]
    assert names(store.query(TaskQuery(statuses=("Failed",), namespace="default"))) == ["c"]
    assert names(store.query(TaskQuery(name="b"))) == ["b"]
    assert names(store.query(TaskQuery(user_id=2))) == ["f", "e", "b"]
    assert names(store.query(TaskQuery(namespace="DEMO"))) == []
    assert names(store.query(TaskQuery(since=datetime.now(UTC) - timedelta(hours=1)))) == list("gfedcba")
    assert store.query(TaskQuery(since=datetime.now(UTC) + timedelta(hours=1))) == []


def test_query_pages_by_before_id_and_count_says_how_many_are_left(store: TaskStore) -> None:
    tasks = filled(store)
    seen, before = [], None
    while page := store.query(TaskQuery(namespace="default", before_id=before, limit=2)):
        seen.append(names(page))
        before = page[-1].id
    assert seen == [["f", "e"], ["c", "a"]]
    assert store.count(TaskQuery()) == 7
    assert store.count(TaskQuery(namespace="default")) == 4
    assert store.count(TaskQuery(namespace="default", before_id=tasks[4].id, limit=1)) == 2
    assert store.count(TaskQuery(statuses=("Failed", "Pending"))) == 3
    assert store.count(TaskQuery(statuses=("Failed",), user_id=2)) == 0
    assert store.query(TaskQuery(limit=0)) == []


def test_query_sees_the_new_columns(store: TaskStore) -> None:
    task = store.add(new("t", F))
    store.requeue(task.id, F, 1, "again")
    [listed] = store.query(TaskQuery(name="t"))
    assert listed == store.get(task.id) and listed.attempt == 2


# -- events and their pruning ------------------------------------------------------------------------

def test_events_are_oldest_first_and_limited_to_the_newest(store: TaskStore) -> None:
    task = store.add(new("t", F))
    for attempt in range(1, 6):
        assert store.requeue(task.id, N if attempt > 1 else F, attempt, f"retry {attempt}")
    assert [e.attempt for e in store.events(task.id)] == [2, 3, 4, 5, 6]
    assert [e.attempt for e in store.events(task.id, limit=2)] == [5, 6]
    assert store.events(424242) == []


class Backwards:
    """A wall clock stepped back a minute at each reading (NTP, a VM resumed): events are still
    listed in the order they were written."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC) + timedelta(hours=1)

    def now(self) -> datetime:
        self.at -= timedelta(minutes=1)
        return self.at

    def monotonic(self) -> float:
        return 0.0


def test_events_are_in_the_order_written_even_when_the_clock_steps_back(store: TaskStore) -> None:
    task = store.add(new("t", F))
    store._clock = Backwards()  # type: ignore[attr-defined]  # both stores read their clock there
    for attempt in range(1, 5):
        assert store.requeue(task.id, N if attempt > 1 else F, attempt, f"retry {attempt}")
    events = store.events(task.id)
    assert [e.attempt for e in events] == [2, 3, 4, 5] and events[0].at > events[-1].at
    assert [e.attempt for e in store.events(task.id, limit=2)] == [4, 5]


def test_prune_deletes_old_events_in_batches_and_never_a_task(store: TaskStore) -> None:
    tasks = [store.add(new(f"t{i}", F)) for i in range(3)]
    for t in tasks:
        store.requeue(t.id, F, 1)
        store.transition(t.id, N, P)
    assert store.prune_events(datetime.now(UTC) - timedelta(hours=1)) == 0
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert store.prune_events(later, limit=4) == 4
    assert sum(len(store.events(t.id)) for t in tasks) == 2
    assert store.prune_events(later, limit=4) == 2
    assert store.prune_events(later) == 0
    assert [store.get(t.id).status for t in tasks] == ["Pending"] * 3


# -- atomicity of a write and its event (SQL) ------------------------------------------------------

class SeparateStatements(SQLTaskStore):
    """The protection switched off, on the test side: the compare-and-set commits on its own and
    the event follows in a statement of its own (no transaction or single statement for both)."""

    def _apply(self, update: sa.Update, task_id: int, event: dict[str, Any], params: dict[str, Any]) -> bool:
        with self._db() as conn:
            written = conn.execute(update, params).rowcount == 1
            if written:
                conn.execute(self._event(task_id, event))
        return written


class Crash(Exception):
    pass


@contextmanager
def crash_at_the_event(store: TaskStore) -> Iterator[None]:
    """The process dies (here: the statement fails) when it is about to write the event."""
    def crash(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if "INSERT INTO TASK_EVENT" in statement.upper():  # PostgreSQL's one statement too
            raise Crash("killed between the status write and its event")

    assert isinstance(store, SQLTaskStore)
    sa.event.listen(store.engine, "before_cursor_execute", crash)
    try:
        yield
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", crash)


def crashed_write(backend: StoreBackend, protected: bool) -> tuple[TaskStore, int]:
    if backend.id == "memory":
        pytest.skip("the memory store writes under one mutex: nothing to crash between")
    store = backend.make()
    store.migrate()
    if not protected:
        assert isinstance(store, SQLTaskStore)
        store = SeparateStatements(store.engine, SystemClock(), store.where)
    fence = Fence(LEADER, store.begin_term(LEADER), "a")
    task = store.add(new("t"))
    with crash_at_the_event(store), pytest.raises(Exception, match="killed between"):
        store.transition(task.id, N, P, fence=fence)
    return store, task.id


def test_a_crash_before_the_event_leaves_no_transition_without_its_event(backend: StoreBackend) -> None:
    store, task_id = crashed_write(backend, protected=True)  # PostgreSQL: before its one statement
    assert (store.get(task_id).status, store.events(task_id)) == ("Normal", [])
    assert store.requeue(task_id, N, 1) is True  # the row is not left locked
    assert [e.to_status for e in store.events(task_id)] == ["Normal"]


def test_without_the_transaction_the_crash_leaves_a_transition_without_its_event(backend: StoreBackend) -> None:
    """Positive control: the test above fails with a store that writes the event separately."""
    store, task_id = crashed_write(backend, protected=False)
    assert (store.get(task_id).status, store.events(task_id)) == ("Pending", [])


def test_event_type_is_the_domain_one(store: TaskStore) -> None:
    task = store.add(new("t"))
    store.transition(task.id, N, P, replica="x")
    [event] = store.events(task.id)
    assert isinstance(event, TaskEvent) and event.replica == "x"
