"""The local gateway wakes the sync when a Job's process exits: its own children, and Jobs
another replica started (seen through their exit file)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.local import LocalJobGateway
from nightwatch.domain.jobspec import JobSpec
from nightwatch.domain.model import JobPhase, Task

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")


def task(task_id: int, name: str) -> Task:
    return Task(id=task_id, name=name, namespace="default", info="{}", status="Pending")


def waiting_job(gate: Path) -> JobSpec:
    """A Job that runs until the test creates ``gate``."""
    return JobSpec(image="busybox", command=("sh", "-c", f'while [ ! -e "{gate}" ]; do sleep 0.02; done'))


def test_a_child_exiting_wakes_once(tmp_path):
    woken = threading.Semaphore(0)
    gw = LocalJobGateway(str(tmp_path / "state"), clock=FakeClock())
    gw.set_wake(woken.release)
    try:
        t = task(1, "exits")
        gw.launch(t, waiting_job(tmp_path / "go"))
        assert gw.observe([t])[1].phase in (JobPhase.PENDING, JobPhase.RUNNING)
        assert not woken.acquire(timeout=0.3)  # running: no wake
        (tmp_path / "go").touch()
        assert woken.acquire(timeout=10)  # it exited: woken
        assert not woken.acquire(timeout=0.3)  # once per exit, not per poll
        assert gw.observe([t])[1].phase is JobPhase.SUCCEEDED
    finally:
        gw.close()


def test_a_job_another_replica_started_wakes_when_its_exit_file_appears(tmp_path):
    state = str(tmp_path / "state")
    starter = LocalJobGateway(state, clock=FakeClock())  # the replica that led before
    follower = LocalJobGateway(state, clock=FakeClock())
    woken = threading.Semaphore(0)
    follower.set_wake(woken.release)
    try:
        t = task(2, "foreign")
        starter.launch(t, waiting_job(tmp_path / "go"))
        assert follower.observe([t])[2].phase in (JobPhase.PENDING, JobPhase.RUNNING)
        (tmp_path / "go").touch()
        assert woken.acquire(timeout=10)
        assert follower.observe([t])[2].phase is JobPhase.SUCCEEDED
    finally:
        starter.close()
        follower.close()


def test_without_set_wake_no_thread_is_started(tmp_path):
    before = {th.name for th in threading.enumerate()}
    gw = LocalJobGateway(str(tmp_path / "state"), clock=FakeClock())
    gw.close()
    assert "local-exits" not in before and all(th.name != "local-exits" for th in threading.enumerate())
