"""The image as its users run it: the Deployment's security settings on the embedded default,
three replicas against MariaDB and Redis on the host, and a broken config."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from podman_run import LOCKED_DOWN, Containers, podman, wait_for
from sql_databases import mysql_database

pytestmark = [pytest.mark.container]

HEALTHZ = "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"


def test_image_metadata(image: str) -> None:
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["nightwatch"]
    assert config["Cmd"] == ["run", "--config", "/etc/nightwatch/nightwatch.yaml"]
    assert "/var/lib/nightwatch" in config["Volumes"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "nightwatch"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", labels["org.opencontainers.image.version"])
    assert inspected["Healthcheck"]["Test"][:2] == ["CMD", "python3"]


def test_embedded_default_runs_locked_down(image: str, containers: Containers) -> None:
    """As the Deployment runs it (uid 10001, read-only root, all capabilities dropped), with a
    volume for its state: serves /healthz, runs a task submitted with `exec`, stops cleanly."""
    version = containers.run("--network=none", *LOCKED_DOWN, image, "--version")
    assert version.returncode == 0 and re.fullmatch(r"nightwatch \S+\n", version.stdout), version

    state = containers.volume("state")
    name = containers.start("solo", "--network=none", *LOCKED_DOWN, "--volume", f"{state}:/var/lib/nightwatch",
                            image, "run")
    assert containers.exec(name, "id", "-u").stdout.strip() == "10001"
    wait_for(lambda: containers.exec(name, "python3", "-c", HEALTHZ, check=False).returncode == 0,
             timeout=30, what="/healthz inside the container")
    assert podman("healthcheck", "run", name, check=False).returncode == 0  # the image's HEALTHCHECK

    submitted = containers.exec(name, "nightwatch", "task", "submit", "--name", "hello", "--namespace", "default",
                                "--image", "busybox", "--command", "echo", "--arg", "hi", "--json")
    task_id = str(json.loads(submitted.stdout)["id"])

    def status() -> str | None:
        shown = json.loads(containers.exec(name, "nightwatch", "task", "get", task_id, "--json").stdout)
        return shown["status"] if shown["status"] in ("Succeeded", "Failed") else None

    assert wait_for(status, timeout=30, what="the task to finish", interval=0.5) == "Succeeded"
    # Its output is in the state volume (jobs.local.state_dir, relative to the working directory).
    output = containers.exec(name, "cat", "/var/lib/nightwatch/.nightwatch/jobs/default/hello/stdout.log")
    assert output.stdout == "hi\n"

    started = time.monotonic()
    podman("stop", "--time", "20", name, timeout=40)
    took = time.monotonic() - started
    logs = containers.logs(name)
    assert containers.state(name, "ExitCode") == "0", logs
    assert took < 15, f"podman stop took {took:.1f}s"
    assert "Traceback" not in logs, logs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_leader(port: int) -> bool | None:
    """None while the replica does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
    except OSError:
        return None
    match = re.search(r"^nightwatch_is_leader(?:\{[^}]*\})? (\S+)$", text, re.M)
    return match is not None and float(match.group(1)) == 1.0


TTL, RETRY = 3.0, 0.5


@pytest.mark.mysql
@pytest.mark.redis
def test_three_replicas_fail_over(image: str, containers: Containers, mysql_url: str, redis_url: str,
                                  tmp_path: Path, unique_name: str) -> None:
    """Three containers on the host network: exactly one leads; `podman kill` of the leader
    makes a standby lead within the crash bound (ttl + retry_interval); no Job is created twice."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # written by uid 10001 in the containers
    with mysql_database(mysql_url) as (server, database):
        ports = {}
        for replica in ("a", "b", "c"):
            ports[replica] = _free_port()
            config = {
                "store": {"backend": "mysql", "mysql": {"host": server.host, "port": server.port, "user": server.user,
                                                        "password": server.password, "database": database}},
                "lock": {"backend": "redis", "name": unique_name, "ttl": f"{TTL}s", "renew_interval": "500ms",
                         "renew_deadline": "2s", "retry_interval": f"{RETRY}s",
                         "redis": {"urls": [redis_url], "key_prefix": f"{unique_name}:"}},
                "jobs": {"backend": "fake", "fake": {"default_duration": 0.2, "record_path": "/shared/created"}},
                "watchers": {"task": {"spec": "@every 500ms"}},
                "server": {"listen": f"127.0.0.1:{ports[replica]}"},
                "log": {"format": "json"},
            }
            (tmp_path / f"{replica}.yaml").write_text(json.dumps(config))
            containers.start(replica, "--network=host", *LOCKED_DOWN, "--env", f"NIGHTWATCH_REPLICA={replica}",
                             "--volume", f"{tmp_path / replica}.yaml:/etc/nightwatch/nightwatch.yaml:ro",
                             "--volume", f"{shared}:/shared", image)

        def leaders() -> list[str] | None:
            seen = {replica: _is_leader(port) for replica, port in ports.items()}
            if None in seen.values():
                return None
            return [replica for replica, leads in seen.items() if leads]

        wait_for(lambda: len(leaders() or []) == 1, timeout=60, what="three replicas answering, one of them leading")
        for _ in range(5):  # and it stays that way
            assert len(leaders() or []) == 1, leaders()
            time.sleep(0.3)
        (leader,) = leaders() or []

        def insert(count: int) -> None:
            values = ", ".join(
                f"('{unique_name[-8:]}-{i}-{time.monotonic_ns() % 10**6}', 'default', "
                "'{\"image\": \"busybox\", \"command\": [\"true\"]}', 'Normal', 1)" for i in range(count))
            server.execute(database, f"INSERT INTO task (name, namespace, info, status, user_id) VALUES {values}")

        insert(20)
        time.sleep(1.0)
        killed = time.monotonic()
        podman("kill", containers.name(leader))
        standbys = {r: p for r, p in ports.items() if r != leader}
        successor = wait_for(lambda: next((r for r, p in standbys.items() if _is_leader(p)), None),
                             timeout=TTL + RETRY + 10, what="a standby to lead", interval=0.05)
        took = time.monotonic() - killed
        print(f"{successor} leads {took:.2f}s after podman kill of {leader}")
        assert took <= TTL + RETRY + 1.0, f"{successor} led {took:.2f}s after the kill"
        assert [r for r, p in standbys.items() if _is_leader(p)] == [successor]

        insert(20)

        def all_finished() -> bool:
            with server.connect(database) as conn, conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM task WHERE status NOT IN ('Succeeded', 'Failed')")
                return cur.fetchone()[0] == 0

        wait_for(all_finished, timeout=90, what="every task to finish", interval=0.5)
        created = [line.split()[0] for line in (shared / "created").read_text().splitlines()]
        assert len(created) == len(set(created)), "a task was launched twice"
        with server.connect(database) as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM task WHERE status = 'Succeeded'")
            assert cur.fetchone()[0] >= 20  # at least those inserted after the fail-over


def test_config_error_is_one_line(image: str, containers: Containers, tmp_path: Path) -> None:
    (tmp_path / "nightwatch.yaml").write_text("store: {backend: cassandra}\n")
    name = containers.start("broken", "--network=none", *LOCKED_DOWN,
                            "--volume", f"{tmp_path}/nightwatch.yaml:/etc/nightwatch/nightwatch.yaml:ro", image)
    exit_code = podman("wait", name, timeout=30).stdout.strip()
    lines = [line for line in containers.logs(name).splitlines() if line.strip()]
    assert exit_code == "2", lines
    assert len(lines) == 1 and "store.backend" in lines[0] and "cassandra" in lines[0], lines
