"""``nightwatch run`` with ``jobs.backend: kubernetes``, as a user runs it, against the API
stand-in through a kubeconfig: the seed's rows reach their terminal status, and the metrics
count the requests to the API server."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8s_standin import ApiStandIn, write_kubeconfig

NIGHTWATCH = [sys.executable, "-m", "nightwatch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def standin() -> Iterator[ApiStandIn]:
    with ApiStandIn(namespaces=("default",), start_after=0.5, finish_after=2.0) as s:
        yield s


def test_run_on_kubernetes_takes_the_seed_rows_to_their_terminal_status(tmp_path: Path,
                                                                         standin: ApiStandIn) -> None:
    port = free_port()
    config = tmp_path / "nightwatch.yaml"
    config.write_text(f"""
store: {{backend: sqlite, sqlite: {{path: {tmp_path / "nightwatch.db"}}}}}
lock: {{backend: file, file: {{path: {tmp_path / "nightwatch.lock"}}}}}
jobs:
  backend: kubernetes
  allowed_namespaces: [default, demo]
  kubernetes: {{kubeconfig: {write_kubeconfig(tmp_path / "kubeconfig", standin)}, context: standin,
               qps: 50, burst: 100, request_timeout: 5s}}
watchers: {{task: {{spec: "@every 500ms"}}}}
server: {{listen: "127.0.0.1:{port}"}}
""")

    def cli(*args: str) -> str:
        proc = subprocess.run([*NIGHTWATCH, *args, "--config", str(config)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    cli("db", "migrate")
    cli("task", "submit", "--name", "demo-task-1", "--namespace", "default", "--image", "alpine",
        "--command", "sleep", "--arg", "60", "--user-id", "1")
    cli("task", "submit", "--name", "demo-task-2", "--namespace", "demo", "--image", "busybox",
        "--command", "sleep", "--arg", "3600", "--user-id", "2")

    with open(tmp_path / "daemon.log", "w") as log:
        daemon = subprocess.Popen([*NIGHTWATCH, "run", "--config", str(config)], stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tasks = {t["name"]: t for t in json.loads(cli("task", "list", "--json"))}
            if all(t["status"] in ("Succeeded", "Failed") for t in tasks.values()):
                break
            time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=20)

    log_text = (tmp_path / "daemon.log").read_text()
    assert tasks["demo-task-1"]["status"] == "Succeeded", log_text
    assert tasks["demo-task-2"]["status"] == "Failed", log_text
    assert tasks["demo-task-2"]["message"] == 'job rejected: namespaces "demo" not found'
    assert code == 0, log_text
    assert standin.created == {("default", "demo-task-1"): 1}
    assert standin.requests["get"] == 0
    print(f"\nstand-in requests: {dict(standin.requests)}")
    # The gateway's own tally, exported: one create (demo-task-1), one refused create (demo).
    assert 'nightwatch_job_requests_total{code="201",verb="create"} 1.0' in metrics
    assert 'nightwatch_job_requests_total{code="404",verb="create"} 1.0' in metrics
    assert 'nightwatch_job_requests_total{code="200",verb="list"}' in metrics
