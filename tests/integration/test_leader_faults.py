"""``nightwatch run`` processes meeting faults while they lead: the lock's password rotated
under a leader, and SIGTERM during ``run --once``. A slow plug-in watcher keeps a run in
flight, so the tests see whether it is cancelled and how soon the process exits."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import redis
import yaml
from daemons import NIGHTWATCH, cluster, fast_config, free_port, unavailable, wait_until
from ops_cluster import install_slow_plugin

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def sqlite_store(tmp_path):
    return {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "nightwatch.db")}}


def with_slow_watcher(config, seconds=60, spec="@every 1s"):
    config["watchers"]["slow"] = {"spec": spec, "seconds": seconds, "honour_cancel": True}
    return config


def one_error_line(text):
    """The single line of the log file that is not a JSON record: the CLI's own error line."""
    assert "Traceback" not in text, text[-3000:]
    others = [line for line in text.splitlines() if line.strip() and not line.startswith("{")]
    assert len(others) == 1, text[-3000:]
    return others[0]


@pytest.fixture
def private_redis():
    """A redis-server on a free port with a password, that the test may re-key."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server (for a private Redis whose password a test rotates)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--requirepass", "old-secret"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    admin = redis.Redis(host="127.0.0.1", port=port, password="old-secret", socket_timeout=2)
    try:
        wait_until(lambda: _answers(admin), 10, "the private redis-server")
        yield port, admin
    finally:
        proc.kill()
        proc.wait(10)


def _answers(client):
    try:
        return client.ping()
    except redis.RedisError:
        return False


def test_a_lock_password_rotated_under_the_leader_cancels_its_run_and_stops_it_with_one_line(
        private_redis, tmp_path, unique_name):
    port, admin = private_redis
    config = fast_config(sqlite_store(tmp_path), f"redis://:old-secret@127.0.0.1:{port}/0", unique_name,
                         tmp_path)
    config["server"]["shutdown_timeout"] = "10s"  # longer than the test waits: no drain may hide a hang
    with cluster(tmp_path, with_slow_watcher(config)) as c:
        replica = c.start("r1", env={"PYTHONPATH": str(install_slow_plugin(tmp_path / "plugin"))})
        c.leader(timeout=15)
        wait_until(lambda: replica.matching("slow run started"), 10, lambda: f"a slow run\n{c.tails()}")
        admin.config_set("requirepass", "new-secret")  # rotated: the next connection is refused
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        rotated = time.monotonic()
        code = replica.wait(15)
        took = time.monotonic() - rotated
        text = replica.text()
    assert code == 2, text[-3000:]
    # renews every 500 ms, deadline 2 s: it stops well within the deadline, the run cancelled
    assert took < 4.0, (took, text[-3000:])
    assert replica.matching("slow run cancelled"), text[-3000:]
    assert [e for e in replica.step_downs() if "error" in e["msg"]], text[-3000:]
    line = one_error_line(text)
    assert line.startswith("nightwatch: config error: lock.redis.urls") and "credentials" in line, line
    assert "old-secret" not in text


def test_sigterm_cancels_a_run_once_and_it_exits_within_the_shutdown_timeout(tmp_path, redis_url, unique_name):
    config = with_slow_watcher(fast_config(sqlite_store(tmp_path), redis_url, unique_name, tmp_path))
    config["server"]["shutdown_timeout"] = "1s"
    path = tmp_path / "once.yaml"
    path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "once.log"
    env = {"PYTHONPATH": str(install_slow_plugin(tmp_path / "plugin"))}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*NIGHTWATCH, "run", "--once", "--config", str(path)], stdout=log, stderr=log,
                                cwd=tmp_path, env={**os.environ, **env})
    try:
        wait_until(lambda: "slow run started" in log_path.read_text(), 20,
                   lambda: f"a slow run\n{log_path.read_text()[-2000:]}")
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = proc.wait(30)
        took = time.monotonic() - signalled
    finally:
        proc.kill()
        proc.wait()
    text = log_path.read_text()
    assert took < 1.0 + 1.5, (took, text[-3000:])  # the shutdown timeout, and a little to exit
    assert "slow run cancelled" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert code == 1, text[-3000:]  # the cycle did not finish
    assert redis.Redis.from_url(redis_url).get(f"{unique_name}:lock:{unique_name}") is None  # released
