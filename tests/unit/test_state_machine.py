"""The state machine as a table over every (status, observed job state) pair."""

import itertools

import pytest

from nightwatch.domain.errors import IllegalTransitionError, UnknownStatusError
from nightwatch.domain.model import (
    ALLOWED_TRANSITIONS,
    JobPhase,
    JobState,
    TaskStatus,
    can_requeue,
    check_requeue,
    check_transition,
    next_status,
)

N, P, R, S, F, C = (TaskStatus.NORMAL, TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.SUCCEEDED,
                    TaskStatus.FAILED, TaskStatus.CANCELLED)
U = JobPhase.UNKNOWN  # the backend could not be asked: never a reason to change a status
EXPECTED = {
    # status    job Pending  job Running  job Succeeded  job Failed
    N: {U: None, JobPhase.PENDING: None, JobPhase.RUNNING: None, JobPhase.SUCCEEDED: None, JobPhase.FAILED: None},
    P: {U: None, JobPhase.PENDING: None, JobPhase.RUNNING: R, JobPhase.SUCCEEDED: S, JobPhase.FAILED: F},
    R: {U: None, JobPhase.PENDING: None, JobPhase.RUNNING: None, JobPhase.SUCCEEDED: S, JobPhase.FAILED: F},
    S: {U: None, JobPhase.PENDING: None, JobPhase.RUNNING: None, JobPhase.SUCCEEDED: None, JobPhase.FAILED: None},
    F: {U: None, JobPhase.PENDING: None, JobPhase.RUNNING: None, JobPhase.SUCCEEDED: None, JobPhase.FAILED: None},
    C: {U: None, JobPhase.PENDING: None, JobPhase.RUNNING: None, JobPhase.SUCCEEDED: None, JobPhase.FAILED: None},
}


@pytest.mark.parametrize(("status", "phase"), list(itertools.product(TaskStatus, JobPhase)))
def test_next_status_table(status, phase):
    assert next_status(status, JobState(phase, "why")) == EXPECTED[status][phase]


def test_status_strings_are_the_tables():
    assert [s.value for s in TaskStatus] == ["Normal", "Pending", "Running", "Succeeded", "Failed",
                                             "Cancelled"]


ORDER = [N, P, R, S]


@pytest.mark.parametrize(("old", "new"), list(itertools.product(TaskStatus, TaskStatus)))
def test_transitions_never_go_backwards_and_terminal_never_changes(old, new):
    allowed = new in ALLOWED_TRANSITIONS[old]
    if old in (S, F, C) or old == new or new in ORDER and old in ORDER and ORDER.index(new) < ORDER.index(old):
        assert not allowed
    if allowed:
        check_transition(old, new)
    else:
        with pytest.raises(IllegalTransitionError):
            check_transition(old, new)


def test_every_in_flight_status_can_fail_or_be_cancelled():
    assert all({F, C} <= ALLOWED_TRANSITIONS[s] for s in (N, P, R))


# The next-attempt move, by the status it starts from: (without --force, with --force).
REQUEUE = {N: (True, True), P: (True, True), R: (True, True), S: (False, True), F: (True, True), C: (True, True)}


@pytest.mark.parametrize("status", list(TaskStatus))
def test_next_attempt_table(status):
    assert (can_requeue(status), can_requeue(status, force=True)) == REQUEUE[status]


def test_a_succeeded_task_needs_force_to_run_again():
    with pytest.raises(IllegalTransitionError, match="from Succeeded to Normal"):
        check_requeue("Succeeded")
    check_requeue("Succeeded", force=True)


def test_unknown_status_is_refused_by_name():
    with pytest.raises(UnknownStatusError, match="'Paused'"):
        check_transition("Paused", "Pending")
    with pytest.raises(UnknownStatusError, match="'Paused'"):
        check_requeue("Paused")
