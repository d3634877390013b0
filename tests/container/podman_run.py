"""Running podman as it works on a sandboxed host: runc, limits the sandbox allows, and the
host network only where a container must reach the host's MariaDB and Redis. Every container
and volume made through `Containers` has a name unique to the run and is removed by `remove_all`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

PODMAN = ["podman", "--runtime", "runc"] if shutil.which("runc") else ["podman"]
# The sandbox refuses podman's default (the host's) limits; the healthcheck's systemd timer
# does not exist here, so the tests run the check themselves (`podman healthcheck run`).
RUN_FLAGS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--health-interval", "disable"]
# The Deployment's container security settings.
LOCKED_DOWN = ["--user", "10001:10001", "--read-only", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", "--tmpfs", "/tmp"]


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


class Containers:
    """Starts containers with run-unique names, and removes them (and their volumes) at the end."""

    def __init__(self) -> None:
        self.prefix = "nwt-" + uuid.uuid4().hex[:8]
        self.names: list[str] = []
        self.volumes: list[str] = []

    def name(self, label: str) -> str:
        return f"{self.prefix}-{label}"

    def volume(self, label: str) -> str:
        name = self.name(label)
        podman("volume", "create", name)
        self.volumes.append(name)
        return name

    def start(self, label: str, *args: str) -> str:
        name = self.name(label)
        self.names.append(name)
        podman("run", "--detach", "--name", name, *RUN_FLAGS, *args)
        return name

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A container run to its end and removed: its exit status and output."""
        return podman("run", "--rm", *RUN_FLAGS, *args, timeout=timeout, check=False)

    def exec(self, name: str, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", name, *args, timeout=timeout, check=check)

    def logs(self, name: str) -> str:
        result = podman("logs", name, check=False)
        return result.stdout + result.stderr

    def state(self, name: str, field: str) -> str:
        return podman("inspect", "--format", "{{.State." + field + "}}", name).stdout.strip()

    def remove_all(self) -> None:
        for name in self.names:
            podman("rm", "--force", "--volumes", "--time", "0", name, check=False)
        for name in self.volumes:
            podman("volume", "rm", "--force", name, check=False)


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
