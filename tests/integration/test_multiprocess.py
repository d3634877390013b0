"""Several real ``nightwatch run`` processes on a real database and a real Redis.

Each test has its own database (created on the shared server, dropped after) and its own
Redis lock name and key prefix. Jobs are local processes sharing one state directory and one
launch record (a line per Job actually created), so launches are counted across processes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from daemons import SqlTasks, cluster, fast_config, launching, mysql_store, postgres_store, wait_until
from sql_databases import mysql_database, postgres_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TASKS = 500
LEASE = 3.0  # lock.ttl in fast_config


@pytest.fixture(params=[pytest.param("mysql", marks=pytest.mark.mysql),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request):
    """(store config, the user's view of the task table) on a fresh database."""
    if request.param == "mysql":
        url = request.getfixturevalue("mysql_url")
        with mysql_database(url) as (server, name):
            yield mysql_store(url, name), SqlTasks.mysql(server, name)
    else:
        with postgres_database(request.getfixturevalue("postgres_dsn")) as dsn:
            yield postgres_store(dsn), SqlTasks.postgres(dsn)


def following(tasks, c):
    """True when every task is launched and some Jobs still run: the leader is following them."""
    counts = tasks.counts()
    return counts["Normal"] == 0 and counts["Pending"] + counts["Running"] > 0


def adopted(c):
    return [e for r in c.replicas for e in r.matching("adopted") if "task_id" in e]


def assert_exactly_once(c, tasks, ids):
    launches = c.launches()
    # A leader SIGKILLed between creating a Job and appending its line to the launch record
    # leaves a Job without a line: its successor adopts that Job (and says so in its log).
    unrecorded = set(ids) - set(launches)
    adopted_ids = {int(e["task_id"]) for e in adopted(c)}
    assert unrecorded <= adopted_ids, f"tasks never launched: {sorted(unrecorded - adopted_ids)}"
    assert set(launches) <= set(ids), "nothing else launched"
    twice = {i: n for i, n in launches.items() if n != 1}
    assert not twice, f"tasks launched more than once: {twice}"


@pytest.mark.redis
def test_sigkilled_leaders_are_replaced_and_every_task_runs_exactly_once(database, redis_url, unique_name,
                                                                         tmp_path):
    store, tasks = database
    tasks.create_table()  # the user's own table; the daemons add their parts by migration
    with cluster(tmp_path, fast_config(store, redis_url, unique_name, tmp_path)) as c:
        c.start_many(3)
        first = c.leader(timeout=20)
        started = time.monotonic()
        tasks.insert(200)
        killed = []
        # The user's system submits in three waves; the leader is killed at about 1/3 and 2/3 done.
        # The first kill lands between creating Jobs and writing their status, the second while
        # Jobs run and are being followed.
        for done, wave, moment in ((TASKS // 3, range(201, 351), launching),
                                   (2 * TASKS // 3, range(351, 501), following)):
            wait_until(lambda d=done: tasks.terminal() >= d, 40, lambda d=done: f"{d} tasks done\n{c.tails()}")
            leader = c.leader(timeout=1)
            tasks.insert(len(wave), start=wave[0])
            wait_until(lambda m=moment: m(tasks, c), 10, f"the leader {moment.__name__} the new wave",
                       interval=0.005)
            leader.kill()  # SIGKILL: no release, the lease has to run out
            killed.append((leader, tasks.counts()))
            successor = c.leader(timeout=10, besides=[r for r in c.replicas if r.proc.poll() is not None])
            assert successor.epoch() > leader.epoch()
        wait_until(lambda: tasks.terminal() == TASKS, 40, lambda: f"all {TASKS} tasks terminal: {tasks.counts()}, "
                   f"not finished: {tasks.unfinished()[:5]}\n{c.tails()}")
        elapsed = time.monotonic() - started

    assert tasks.counts() == {"Succeeded": TASKS}, tasks.failed()[:5]
    assert_exactly_once(c, tasks, tasks.statuses())
    for leader, counts in killed:  # killed mid-way, with work left for its successor
        assert counts["Succeeded"] < TASKS and counts["Succeeded"] >= TASKS // 3, (leader, counts)
    leaders = sorted((e["t"], int(e["epoch"]), r.name) for r in c.replicas for e in r.elections())
    survivor = [r.name for r in c.replicas if r not in [k for k, _ in killed]]
    assert killed[0][0] is first
    assert [name for *_, name in leaders] == [k.name for k, _ in killed] + survivor, (
        f"a standby took over each time: {leaders}")
    epochs = [epoch for _, epoch, _ in leaders]
    assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs), f"epochs increase: {leaders}"
    assert elapsed < 45, f"took {elapsed:.1f}s"
    print(f"{len(adopted(c))} Jobs created by a killed leader were adopted by its successor")


CRASH_WHILE_STARTING = """
import os, signal, sys
from nightwatch.adapters.jobs.local import LocalJobGateway
from nightwatch.domain.jobspec import JobSpec
from nightwatch.domain.model import Task

def crash(self, job_dir, doc):  # the replica dies after claiming the start, before the fork
    os.kill(os.getpid(), signal.SIGKILL)

LocalJobGateway._spawn = crash
task = Task(id=7, name="half-started", namespace="default", info="{}", status="Normal")
LocalJobGateway(sys.argv[1]).launch(task, JobSpec(image="busybox", command=("true",)))
"""


def test_a_job_whose_creator_died_while_starting_it_is_started_by_the_replica_that_adopts_it(tmp_path):
    """The window the SIGKILL test above hits: the leader created the Job and claimed its start
    (the ``started`` marker), then died before the process was forked. The successor adopts the
    Job; it must run, not sit Pending until it fails as "never started"."""
    from nightwatch.adapters.jobs.local import LocalJobGateway
    from nightwatch.domain.jobspec import JobSpec
    from nightwatch.domain.model import JobPhase, Task
    from nightwatch.domain.ports import LaunchOutcome

    crashed = subprocess.run([sys.executable, "-c", CRASH_WHILE_STARTING, str(tmp_path)], timeout=30)
    assert crashed.returncode == -signal.SIGKILL
    task = Task(id=7, name="half-started", namespace="default", info="{}", status="Normal")
    successor = LocalJobGateway(str(tmp_path))
    assert successor.launch(task, JobSpec(image="busybox", command=("true",))) == LaunchOutcome.ADOPTED
    state = wait_until(lambda: (s := successor.observe([task]).get(7)) and s.phase not in (
        JobPhase.PENDING, JobPhase.RUNNING) and s, 10, "the adopted Job to finish", interval=0.1)
    assert state.phase == JobPhase.SUCCEEDED, state


# -- fencing ----------------------------------------------------------------------------------

AUDIT = {
    "postgres": ["""
CREATE TABLE status_audit (task_id BIGINT NOT NULL, old_status TEXT NOT NULL, new_status TEXT NOT NULL,
                           epoch BIGINT, applied DOUBLE PRECISION NOT NULL
                           DEFAULT extract(epoch FROM clock_timestamp()))""", """
CREATE FUNCTION audit_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status IS DISTINCT FROM OLD.status THEN
    INSERT INTO status_audit (task_id, old_status, new_status, epoch) VALUES (NEW.id, OLD.status, NEW.status,
                              (SELECT epoch FROM nightwatch_leader WHERE name = TG_ARGV[0]));
  END IF;
  RETURN NEW;
END $$""", """
CREATE TRIGGER task_status_audit AFTER UPDATE ON task FOR EACH ROW EXECUTE FUNCTION audit_status('{lock}')"""],
    "mysql": ["""
CREATE TABLE status_audit (task_id BIGINT NOT NULL, old_status VARCHAR(45) NOT NULL,
                           new_status VARCHAR(45) NOT NULL, epoch BIGINT, applied DOUBLE NOT NULL)""", """
CREATE TRIGGER task_status_audit AFTER UPDATE ON task FOR EACH ROW
  INSERT INTO status_audit (task_id, old_status, new_status, epoch, applied)
  SELECT NEW.id, OLD.status, NEW.status, (SELECT epoch FROM nightwatch_leader WHERE name = '{lock}'),
         UNIX_TIMESTAMP(SYSDATE(6))
  FROM DUAL WHERE NOT (NEW.status <=> OLD.status)"""],
}


def audit(tasks):
    """(task id, from, to) -> (the leadership epoch current in the database when that status
    write was applied, when it was applied): the database's own account, kept by a trigger."""
    return {(int(t), o, n): (int(e), float(at)) for t, o, n, e, at in tasks.query(
        "SELECT task_id, old_status, new_status, epoch, applied FROM status_audit")}


def late_writes(replica, epoch, since, audited):
    """The status writes ``replica`` logged with ``epoch`` at or after ``since``: each with the
    epoch and time the database applied it under (None if it has no record of it)."""
    return [(w["task_id"], w["from"], w["to"], audited.get((w["task_id"], w["from"], w["to"])))
            for w in replica.writes() if w.get("epoch") == epoch and w["t"] >= since]


def stale(late, epoch, resumed):
    """Writes the database applied after the resume, or under a newer epoch. (A write sent just
    before the pause is applied and logged later, but under its own epoch: not stale.)"""
    return [w for w in late if w[3] is None or w[3][0] != epoch or w[3][1] >= resumed]


def syncing(replica):
    """True once ``replica`` has written a status that follows a Job (not a launch)."""
    return any(w["from"] != "Normal" for w in replica.writes())


@pytest.mark.redis
@pytest.mark.parametrize("fencing", [True, False], ids=["fenced", "positive-control-unfenced"])
def test_a_paused_leader_makes_no_status_write_after_a_successor_took_over(
        fencing, database, redis_url, unique_name, tmp_path):
    """The leader is paused (SIGSTOP) mid-cycle -- following the Jobs of a first wave, status
    writes in flight on several threads -- for longer than its lease. A standby takes over and
    starts on a second wave. The old leader is resumed (SIGCONT): its writes in flight must be
    refused by the epoch check, and it must step down. Without the epoch check (the positive
    control: tests/unfenced_nightwatch.py swaps in a store without it, from the test side) the
    same scenario shows those writes landing."""
    first, second = 100, 200
    store, tasks = database
    tasks.create_table()
    tasks.execute(*[statement.format(lock=unique_name) for statement in AUDIT[tasks.kind]])
    with cluster(tmp_path, fast_config(store, redis_url, unique_name, tmp_path)) as c:
        old = c.start("old", unfenced=not fencing)
        c.leader(timeout=20)
        new = c.start("new")
        wait_until(lambda: new.matching("starting as"), 20, "the standby to start")
        tasks.insert(first)
        wait_until(lambda: syncing(old), 20, "the leader following the first wave's Jobs", interval=0.002)
        paused = old.pause()
        old_epoch = old.epoch()
        tasks.insert(second, start=first + 1)  # the user's system goes on submitting
        wait_until(lambda: new.leading(), 10, lambda: f"the standby to take over\n{c.tails()}")
        assert new.epoch() > old_epoch
        time.sleep(max(0.0, paused + LEASE + 0.2 - time.time()))  # paused for longer than the lease
        resumed = old.resume()
        wait_until(lambda: any(e["t"] >= resumed for e in old.step_downs()), 10,
                   lambda: f"the old leader to step down\n{c.tails()}")
        wait_until(lambda: tasks.terminal() == first + second, 40, lambda: f"all tasks terminal\n{c.tails()}")
        time.sleep(0.3)  # the old one's last lines reach its log
        late = late_writes(old, old_epoch, resumed, audit(tasks))
        assert not old.leading() and new.leading()

    bad = stale(late, old_epoch, resumed)
    if fencing:
        assert bad == [], f"status writes by the deposed leader after it resumed: {bad[:5]}"
        assert tasks.counts() == {"Succeeded": first + second}, tasks.failed()[:5]
        assert_exactly_once(c, tasks, tasks.statuses())
    else:  # the same scenario without the epoch check shows what fencing prevents
        assert bad, "the positive control made no stale write: this test could not fail"
    print(f"fencing={fencing}: {len(bad)} stale writes; {len(late)} logged after resuming")


# -- graceful hand-over -----------------------------------------------------------------------

@pytest.mark.mysql
@pytest.mark.redis
def test_sigterm_hands_over_to_the_standby_within_a_second(mysql_url, redis_url, unique_name, tmp_path):
    """The standby retries only every 5 s here: taking over within 1 s of the release means it
    was woken by the release itself, not by its next poll."""
    total = 60
    with mysql_database(mysql_url) as (server, name):
        tasks = SqlTasks.mysql(server, name)
        tasks.create_table()
        config = fast_config(mysql_store(mysql_url, name), redis_url, unique_name, tmp_path)
        config["lock"]["retry_interval"] = "5s"
        with cluster(tmp_path, config) as c:
            old = c.start("old")
            c.leader(timeout=20)
            new = c.start("new")
            wait_until(lambda: new.matching("starting as"), 20, "the standby to start")
            time.sleep(1.0)  # the standby has tried once and waits for its next attempt
            tasks.insert(total)
            wait_until(lambda: tasks.terminal() >= total // 3, 20, "some tasks done")
            old.signal(signal.SIGTERM)
            assert old.wait(15) == 0, old.text()[-2000:]
            took_over = wait_until(lambda: new.elections(), 10, lambda: f"the standby to take over\n{c.tails()}")[0]
            wait_until(lambda: tasks.terminal() == total, 30, lambda: f"all tasks terminal\n{c.tails()}")
        assert tasks.counts() == {"Succeeded": total}, tasks.failed()[:5]
        assert_exactly_once(c, tasks, tasks.statuses())

    released = [e for e in old.step_downs() if "shutdown" in e["msg"]]
    assert len(released) == 1, old.step_downs()
    gap = took_over["t"] - released[0]["t"]
    assert 0 <= gap < 1.0, f"the standby led {gap:.3f}s after the leader stepped down"
    assert took_over["epoch"] > old.epoch()
    print(f"hand-over took {gap * 1000:.0f} ms")
