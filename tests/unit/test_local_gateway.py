"""What only the local job gateway promises: Jobs outlive the daemon, output is kept, a Job is
started exactly once even after a crash between creating it and starting it, deadlines kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs.local import DEADLINE_EXCEEDED, VANISHED, LocalJobGateway
from nightwatch.domain.errors import ConfigError, JobRejectedError
from nightwatch.domain.jobspec import JobDefaults, JobSpec
from nightwatch.domain.model import JobPhase, JobState, Task, job_name
from nightwatch.domain.ports import LaunchOutcome

T = TypeVar("T")
FINISHED = (JobPhase.SUCCEEDED, JobPhase.FAILED)
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")


def eventually(probe: Callable[[], T | None], timeout: float = 5.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last: {value!r})")
        time.sleep(0.02)


def finished(gateway: LocalJobGateway, tasks: Sequence[Task], timeout: float = 5.0) -> dict[int, JobState]:
    def probe() -> dict[int, JobState] | None:
        seen = gateway.observe(tasks)
        return dict(seen) if all(t.id in seen and seen[t.id].phase in FINISHED for t in tasks) else None
    return eventually(probe, timeout, "every Job finished")


def task(task_id: int, name: str, namespace: str = "default") -> Task:
    return Task(id=task_id, name=name, namespace=namespace, info="{}", status="Pending")


def sh(script: str, **env: str) -> JobSpec:
    return JobSpec(image="busybox", command=("sh", "-c", script), env=env)


def group_alive(pgid: int) -> bool:
    """Any process of the group that is not a zombie."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    cleaner = LocalJobGateway(str(path))  # kill whatever a test left running
    for ns_dir in (path / "jobs").glob("*"):
        for job in ns_dir.iterdir():
            if not job.name.startswith("."):
                cleaner.delete(ns_dir.name, job.name)


def job_dir(state_dir: Path, t: Task) -> Path:
    return state_dir / "jobs" / t.namespace / t.name


def test_a_job_that_finishes_while_the_daemon_is_down_is_observed_after_restart(state_dir: Path) -> None:
    t = task(1, "outlives")
    spec = sh('sleep 0.3; echo ran >> "$HOME/runs"')
    daemon = LocalJobGateway(str(state_dir))
    assert daemon.launch(t, spec) == LaunchOutcome.CREATED
    assert daemon.observe([t])[t.id].phase in (JobPhase.PENDING, JobPhase.RUNNING)
    daemon.close()
    del daemon  # the daemon is gone; its Job is not

    eventually(lambda: (job_dir(state_dir, t) / "exit").exists(), what="the Job finished on its own")
    restarted = LocalJobGateway(str(state_dir))

    assert restarted.observe([t])[t.id] == JobState(JobPhase.SUCCEEDED)
    assert restarted.launch(t, spec) == LaunchOutcome.ADOPTED
    assert (job_dir(state_dir, t) / "runs").read_text() == "ran\n"


def test_stdout_and_stderr_are_kept_and_the_last_error_line_is_the_message(state_dir: Path) -> None:
    t = task(1, "noisy")
    gateway = LocalJobGateway(str(state_dir))
    gateway.launch(t, sh("echo to-stdout; echo first >&2; echo 'it broke' >&2; exit 3"))

    state = finished(gateway, [t])[t.id]

    assert state == JobState(JobPhase.FAILED, "exit code 3: it broke")
    assert (job_dir(state_dir, t) / "stdout.log").read_text() == "to-stdout\n"
    assert (job_dir(state_dir, t) / "stderr.log").read_text() == "first\nit broke\n"


def test_a_long_error_line_is_trimmed(state_dir: Path) -> None:
    t = task(1, "verbose")
    gateway = LocalJobGateway(str(state_dir))
    gateway.launch(t, sh("printf '%0500d\\n' 0 >&2; exit 1"))

    message = finished(gateway, [t])[t.id].message

    assert message.startswith("exit code 1: 000")
    assert len(message) <= 220


def test_a_crash_between_creating_and_starting_the_job_starts_it_exactly_once(tmp_path: Path) -> None:
    # The on-disk state after such a crash: the job directory with its job.json, nothing else.
    # Make the real job.json with one gateway, and copy only that into a fresh state_dir.
    t = task(7, "half-made")
    spec = sh('echo ran >> "$HOME/runs"; sleep 0.2')
    first = tmp_path / "first"
    LocalJobGateway(str(first)).launch(t, spec)
    crashed = tmp_path / "crashed"
    job_dir(crashed, t).mkdir(parents=True)
    shutil.copy(job_dir(first, t) / "job.json", job_dir(crashed, t) / "job.json")
    record = tmp_path / "launches"
    replicas = [LocalJobGateway(str(crashed), record_path=str(record)) for _ in range(4)]
    assert replicas[0].observe([t])[t.id].phase == JobPhase.PENDING  # not started yet
    outcomes: list[LaunchOutcome] = []
    start = threading.Barrier(len(replicas))

    def relaunch(gateway: LocalJobGateway) -> None:
        start.wait()
        outcomes.append(gateway.launch(t, spec))

    threads = [threading.Thread(target=relaunch, args=(g,)) for g in replicas]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    assert outcomes == [LaunchOutcome.ADOPTED] * 4
    assert finished(replicas[1], [t])[t.id].phase == JobPhase.SUCCEEDED
    assert (job_dir(crashed, t) / "runs").read_text() == "ran\n"
    assert not record.exists()  # adoptions are not launches
    eventually(lambda: (job_dir(first, t) / "exit").exists(), what="the first copy finished")


def test_active_deadline_kills_the_job(state_dir: Path) -> None:
    t = task(1, "too-slow")
    gateway = LocalJobGateway(str(state_dir), defaults=JobDefaults(active_deadline_seconds=1))
    gateway.launch(t, JobSpec(image="busybox", command=("sleep",), args=("30",)))
    pid = eventually(lambda: (job_dir(state_dir, t) / "pid").read_text().strip()
                     if (job_dir(state_dir, t) / "pid").exists() else None, what="a pid")
    assert gateway.observe([t])[t.id].phase == JobPhase.RUNNING

    state = finished(gateway, [t], timeout=5)[t.id]

    assert state == JobState(JobPhase.FAILED, DEADLINE_EXCEEDED)
    eventually(lambda: gateway.observe([t]) and not group_alive(int(pid)), what="the process group gone")
    assert LocalJobGateway(str(state_dir)).observe([t])[t.id] == state  # every observer agrees


def test_a_process_that_vanished_fails_its_job(state_dir: Path) -> None:
    t = task(1, "vanishing")
    gateway = LocalJobGateway(str(state_dir))
    gateway.launch(t, JobSpec(image="busybox", command=("sleep",), args=("30",)))
    pid_file = job_dir(state_dir, t) / "pid"
    eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), what="a pid")

    os.killpg(int(pid_file.read_text()), signal.SIGKILL)  # as a host restart would

    state = finished(gateway, [t])[t.id]
    assert state == JobState(JobPhase.FAILED, VANISHED)

    pid_file.write_text(f"{os.getpid()}\n")  # after a reboot the pid belongs to someone else
    assert LocalJobGateway(str(state_dir)).observe([t])[t.id] == JobState(JobPhase.FAILED, VANISHED)


def test_the_environment_is_fresh_plus_the_specs(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIGHTWATCH_MYSQL_PASSWORD", "secret")
    t = task(1, "env")
    gateway = LocalJobGateway(str(state_dir))
    gateway.launch(t, sh('env > "$HOME/env.txt"', LANG="en_US.UTF-8", FOO="bar baz"))
    finished(gateway, [t])

    env = dict(line.split("=", 1) for line in (job_dir(state_dir, t) / "env.txt").read_text().splitlines())

    assert "NIGHTWATCH_MYSQL_PASSWORD" not in env
    assert env["FOO"] == "bar baz"
    assert env["LANG"] == "en_US.UTF-8"  # the spec wins over the base environment
    assert env["HOME"] == str(job_dir(state_dir, t))
    assert "/usr/bin" in env["PATH"].split(":")


def test_a_job_whose_path_lacks_the_wrapper_tools_still_runs(state_dir: Path) -> None:
    t = task(1, "no-path")
    gateway = LocalJobGateway(str(state_dir))
    gateway.launch(t, JobSpec(image="busybox", command=("/bin/echo",), args=("hi",), env={"PATH": "/nonexistent"}))

    assert finished(gateway, [t])[t.id] == JobState(JobPhase.SUCCEEDED)
    assert (job_dir(state_dir, t) / "stdout.log").read_text() == "hi\n"


def test_a_wrapper_tool_missing_from_the_system_stops_start_up_in_one_line(state_dir: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    os.symlink(shutil.which("sh"), bare / "sh")
    os.symlink(shutil.which("mv"), bare / "mv")

    with pytest.raises(ConfigError) as e:
        LocalJobGateway(str(state_dir), tool_path=str(bare))
    assert str(e.value) == (f"jobs.backend local: the job wrapper needs mkdir, which is not in {bare}")


def test_a_failing_job_is_retried_backoff_limit_times(state_dir: Path) -> None:
    t = task(1, "flaky")
    gateway = LocalJobGateway(str(state_dir), defaults=JobDefaults(backoff_limit=2))
    gateway.launch(t, sh('echo try >> "$HOME/tries"; exit 1'))

    assert finished(gateway, [t])[t.id].phase == JobPhase.FAILED
    assert (job_dir(state_dir, t) / "tries").read_text() == "try\n" * 3


def test_a_command_named_like_a_shell_builtin_does_not_break_the_wrapper(state_dir: Path) -> None:
    t = task(1, "builtin")
    gateway = LocalJobGateway(str(state_dir))
    gateway.launch(t, JobSpec(image="busybox", command=("exit",), args=("4",)))

    assert finished(gateway, [t])[t.id] == JobState(JobPhase.FAILED, "exit code 4")


def test_nothing_to_run_is_rejected(state_dir: Path) -> None:
    gateway = LocalJobGateway(str(state_dir))

    with pytest.raises(JobRejectedError, match="nothing to run"):
        gateway.launch(task(1, "empty"), JobSpec(image="busybox"))


@pytest.mark.parametrize("namespace", ["../escape", "a/b", "", "UPPER"])
def test_a_namespace_that_is_no_dns_label_is_rejected(state_dir: Path, namespace: str) -> None:
    gateway = LocalJobGateway(str(state_dir))

    with pytest.raises(JobRejectedError, match="namespace"):
        gateway.launch(task(1, "x", namespace), JobSpec(image="busybox", command=("true",)))
    assert not (state_dir.parent / "escape").exists()


def test_record_path_gets_one_line_per_real_create(state_dir: Path, tmp_path: Path) -> None:
    record = tmp_path / "launches"
    gateway = LocalJobGateway(str(state_dir), record_path=str(record))
    spec = JobSpec(image="busybox", command=("true",))
    gateway.launch(task(1, "a"), spec)
    gateway.launch(task(1, "a"), spec)
    gateway.launch(task(2, "b", "other"), spec)

    assert record.read_text() == "1 default/a\n2 other/b\n"


def test_finished_jobs_are_removed_after_their_ttl(state_dir: Path) -> None:
    clock = FakeClock(start=datetime.now(UTC))
    gateway = LocalJobGateway(str(state_dir), clock=clock,
                              defaults=JobDefaults(ttl_seconds_after_finished=60))
    done, running = task(1, "done"), task(2, "running")
    gateway.launch(done, JobSpec(image="busybox", command=("true",)))
    gateway.launch(running, JobSpec(image="busybox", command=("sleep",), args=("30",)))
    finished(gateway, [done])

    clock.advance(30)  # within the TTL
    assert set(gateway.observe([done, running])) == {1, 2}
    clock.advance(40)  # past it, for the finished Job only

    assert set(gateway.observe([done, running])) == {2}
    assert not job_dir(state_dir, done).exists()
    assert job_dir(state_dir, running).exists()


def test_a_new_job_may_take_the_name_of_a_deleted_one(state_dir: Path) -> None:
    gateway = LocalJobGateway(str(state_dir))
    old, new = task(1, "reused"), task(2, "reused")
    gateway.launch(old, sh("exit 0"))
    finished(gateway, [old])
    gateway.delete(old.namespace, old.name)

    assert gateway.launch(new, sh("exit 0")) == LaunchOutcome.CREATED
    assert set(gateway.observe([old, new])) == {2}
    doc = json.loads((job_dir(state_dir, new) / "job.json").read_text())
    assert doc["task_id"] == 2


def test_delete_right_after_launch_kills_the_job(state_dir: Path) -> None:
    t = task(1, "short-lived")
    spec = sh('sleep 0.3; echo ran > "$MARK"', MARK=str(state_dir.parent / "ran"))
    gateway = LocalJobGateway(str(state_dir))
    other_replica = LocalJobGateway(str(state_dir))
    gateway.launch(t, spec)

    other_replica.delete(t.namespace, t.name)  # it never saw the pid: it must wait for it

    assert gateway.observe([t]) == {}
    time.sleep(0.5)
    assert not (state_dir.parent / "ran").exists()


# -- attempts, cancel, logs (issue 10) -------------------------------------------------------


def test_each_attempt_gets_its_own_directory_and_an_old_job_without_attempt_is_attempt_1(state_dir: Path) -> None:
    gateway = LocalJobGateway(str(state_dir))
    first = task(1, "again")
    gateway.launch(first, sh("exit 0"))
    finished(gateway, [first])
    doc_path = job_dir(state_dir, first) / "job.json"
    doc = json.loads(doc_path.read_text())
    assert doc["attempt"] == 1
    del doc["attempt"]  # as nightwatch < 0.3 wrote it
    doc_path.write_text(json.dumps(doc))
    second = replace(first, attempt=2)

    assert gateway.launch(second, sh("exit 0")) == LaunchOutcome.CREATED
    assert json.loads((state_dir / "jobs" / "default" / job_name("again", 2) / "job.json").read_text())["attempt"] == 2
    assert LocalJobGateway(str(state_dir)).launch(first, sh("exit 0")) == LaunchOutcome.ADOPTED


def test_cancel_leaves_no_process_of_the_job_alive(state_dir: Path) -> None:
    gateway = LocalJobGateway(str(state_dir), cancel_grace=0.5)
    polite, stubborn = task(1, "polite"), task(2, "stubborn")
    gateway.launch(polite, sh("sleep 30 & sleep 30; wait"))
    gateway.launch(stubborn, sh("trap '' TERM; sleep 30 & sleep 30; wait"))  # SIGTERM is ignored
    pgids = {t.id: int(eventually(lambda t=t: read_pid(state_dir, t), what="a pid")) for t in (polite, stubborn)}
    eventually(lambda: all(len(group_members(p)) >= 3 for p in pgids.values()), what="the sleeps started")

    gateway.cancel(polite)
    gateway.cancel(stubborn)

    assert gateway.observe([polite, stubborn]) == {}  # gone at once, as after a DELETE
    for pgid in pgids.values():
        eventually(lambda pgid=pgid: not group_alive(pgid), what=f"process group {pgid} gone")
        eventually(lambda pgid=pgid: not killpg_finds(pgid), timeout=15,  # init reaps the orphans
                   what=f"process group {pgid} reaped")
    eventually(lambda: not job_dir(state_dir, polite).exists() and not job_dir(state_dir, stubborn).exists(),
               what="the Jobs removed")


def test_cancel_returns_before_the_grace_and_another_replica_finishes_the_kill(state_dir: Path) -> None:
    cancelling = LocalJobGateway(str(state_dir), cancel_grace=3600)
    t = task(1, "stubborn")
    cancelling.launch(t, sh("trap '' TERM; sleep 30"))
    pgid = int(eventually(lambda: read_pid(state_dir, t), what="a pid"))
    eventually(lambda: len(group_members(pgid)) >= 2, what="the sleep started")

    cancelling.cancel(t)  # SIGTERM, ignored; SIGKILL is an hour away: the call did not wait for it

    assert group_alive(pgid)
    assert cancelling.observe([t]) == {}
    later = FakeClock(start=datetime.fromtimestamp(time.time() + 3602, UTC))  # past the grace
    successor = LocalJobGateway(str(state_dir), clock=later, cancel_grace=3600)
    successor.observe([t])  # sees the cancelled Job still alive past its grace: SIGKILL
    eventually(lambda: not group_alive(pgid), what="the process group killed")
    successor.observe([t])
    assert not job_dir(state_dir, t).exists()


def test_logs_are_stdout_then_stderr_tail_counted_from_the_end(state_dir: Path) -> None:
    gateway = LocalJobGateway(str(state_dir))
    t = task(1, "both")
    gateway.launch(t, sh("echo out-1; echo out-2; echo err-1 >&2; echo err-2 >&2"))
    finished(gateway, [t])

    assert list(gateway.logs(t, tail=None)) == ["out-1", "out-2", "err-1", "err-2"]
    assert list(gateway.logs(t, tail=3)) == ["out-2", "err-1", "err-2"]
    assert list(gateway.logs(t, tail=1)) == ["err-2"]


def test_logs_of_a_large_file_stay_bounded(state_dir: Path) -> None:
    import tracemalloc

    gateway = LocalJobGateway(str(state_dir))
    t = task(1, "chatty")
    gateway.launch(t, sh("echo first"))
    finished(gateway, [t])
    line = b"y" * 99 + b"\n"
    with open(job_dir(state_dir, t) / "stdout.log", "ab") as f:
        for _ in range(40):
            f.write(line * 10_000)  # 40 MB in all
        f.write(b"z" * 5_000_000 + b"\nlast\n")  # and a 5 MB line
    size = (job_dir(state_dir, t) / "stdout.log").stat().st_size

    tracemalloc.start()
    try:
        tail = list(gateway.logs(t, tail=3))
        _, peak_tail = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        count = sum(1 for _ in gateway.logs(t, tail=None))
        _, peak_all = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"logs of a {size / 1e6:.0f} MB file: peak {peak_tail / 1024:.0f} KiB (tail 3), "
          f"{peak_all / 1024:.0f} KiB (all {count} lines)")
    assert tail[0] == "y" * 99 and tail[1].startswith("zzz") and tail[1].endswith("…") and tail[2] == "last"
    assert len(tail[1]) <= 64 * 1024 + 1
    assert count == 1 + 400_000 + 2
    assert peak_tail < 1024 * 1024 and peak_all < 1024 * 1024


def killpg_finds(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def read_pid(state_dir: Path, t: Task) -> str | None:
    pid_file = job_dir(state_dir, t) / "pid"
    return pid_file.read_text().strip() or None if pid_file.exists() else None


def group_members(pgid: int) -> list[int]:
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(pid))
    return members
