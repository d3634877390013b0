"""Drivers for the JobGateway contract suite: one per adapter.

A driver makes gateways of its kind and knows the few things the Protocol cannot tell a test:
how time moves (``advance``), how to look behind the gateway (how often a Job really ran,
what environment it saw, how many listings it cost) and how to delete a Job behind
nightwatch's back. To add an adapter (``kubernetes``), write a ``JobDriver`` subclass here
and add its name, with its marks, to ``DRIVERS`` / the ``driver`` fixture's params.

Jobs in the suite run *probe* specs (``probe_spec``): ``sh -c`` scripts that append to a
marker file, so a real backend proves the process ran (and how often), while a simulated
one reports from its records.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from nightwatch.adapters.clock import FakeClock
from nightwatch.adapters.jobs import kubernetes as kubernetes_module
from nightwatch.adapters.jobs import local as local_module
from nightwatch.adapters.jobs.fake import FakeJob, FakeJobGateway
from nightwatch.adapters.jobs.kubernetes import KubernetesJobGateway
from nightwatch.adapters.jobs.local import LocalJobGateway
from nightwatch.domain.constants import TASK_ID_LABEL
from nightwatch.domain.jobspec import JobDefaults, JobSpec
from nightwatch.domain.model import JobPhase, JobState, Task
from nightwatch.domain.ports import JobGateway

FINISHED = (JobPhase.SUCCEEDED, JobPhase.FAILED)
MARKER_ENV = "NW_MARKER"


def probe_spec(marker: Path, *, value_of: str = "FOO", env: Mapping[str, str] | None = None,
               seconds: float = 0.0) -> JobSpec:
    """Append ``$<value_of>`` to ``marker`` (one line per run), then sleep ``seconds``."""
    script = f'echo "${{{value_of}}}" >> "${MARKER_ENV}"'
    if seconds:
        script += f"; sleep {seconds}"
    return JobSpec(image="busybox", command=("sh", "-c", script),
                   env={MARKER_ENV: str(marker), **(env or {})})


class JobDriver:
    name = "abstract"
    follows = True  # logs(follow=True) waits for new lines until the Job ends
    namespaces: tuple[str, str] = ("default", "other")
    poll_step = 0.05  # how far ``advance`` moves between two observations while waiting

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def make_gateway(self, defaults: JobDefaults | None = None) -> JobGateway:
        raise NotImplementedError

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of the backend's time pass."""
        raise NotImplementedError

    def wait_until_finished(self, gateway: JobGateway, tasks: Sequence[Task],
                            timeout: float = 10.0) -> dict[int, JobState]:
        """Observe until every task's Job is Succeeded or Failed; fail after ``timeout``."""
        seen: Mapping[int, JobState] = {}
        for _ in range(int(timeout / self.poll_step) + 1):
            seen = gateway.observe(tasks)
            if all(t.id in seen and seen[t.id].phase in FINISHED for t in tasks):
                return dict(seen)
            self.advance(self.poll_step)
        raise AssertionError(f"{self.name}: Jobs not finished after {timeout}s: {dict(seen)}")

    def runs(self, gateway: JobGateway, task: Task, marker: Path) -> int:
        """How many times the task's Job really ran (after it finished)."""
        raise NotImplementedError

    def env_seen(self, gateway: JobGateway, task: Task, marker: Path) -> str | None:
        """The value the Job's process saw for the probe's variable (after it finished)."""
        raise NotImplementedError

    def list_calls(self, gateway: JobGateway) -> int:
        raise NotImplementedError

    def delete(self, gateway: JobGateway, task: Task) -> None:
        """Delete the task's Job behind nightwatch's back."""
        raise NotImplementedError

    def output_spec(self, output: Sequence[str], *, seconds: float = 0.0) -> JobSpec:
        """A spec whose Job prints ``output`` (on a backend that runs it), then sleeps ``seconds``."""
        script = "; ".join(f"echo {line}" for line in output) + (f"; sleep {seconds}" if seconds else "")
        return JobSpec(image="busybox", command=("sh", "-c", script))

    def print(self, gateway: JobGateway, task: Task, output: Sequence[str]) -> None:
        """Make the task's running Job print ``output`` (on a backend that only simulates it)."""

    def finish(self, gateway: JobGateway, task: Task) -> None:
        """Let the task's (long) Job end now."""
        raise NotImplementedError

    def disable_attempt_check(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Switch the adapter's attempt check off (task id only), to show a test can fail."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def _same_task(labels: Mapping[str, str] | None, task: Task) -> bool:
    return (labels or {}).get(TASK_ID_LABEL) == str(task.id)


class FakeDriver(JobDriver):
    name = "fake"
    poll_step = 0.25
    follows = False  # its clock does not move while a caller follows a log

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.clock = FakeClock()
        self.gateways: list[FakeJobGateway] = []

    def make_gateway(self, defaults: JobDefaults | None = None) -> JobGateway:
        gateway = FakeJobGateway(self.clock, default_duration=1.0, start_delay=0.5, defaults=defaults)
        self.gateways.append(gateway)
        return gateway

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def runs(self, gateway: JobGateway, task: Task, marker: Path) -> int:
        assert isinstance(gateway, FakeJobGateway)
        return sum(1 for ns, name, _ in gateway.created if (ns, name) == (task.namespace, task.job_name))

    def env_seen(self, gateway: JobGateway, task: Task, marker: Path) -> str | None:
        assert isinstance(gateway, FakeJobGateway)
        return gateway.jobs[(task.namespace, task.job_name)].spec.env.get("FOO")

    def list_calls(self, gateway: JobGateway) -> int:
        assert isinstance(gateway, FakeJobGateway)
        return gateway.list_calls

    def delete(self, gateway: JobGateway, task: Task) -> None:
        assert isinstance(gateway, FakeJobGateway)
        gateway.delete(task.namespace, task.job_name)

    def print(self, gateway: JobGateway, task: Task, output: Sequence[str]) -> None:
        assert isinstance(gateway, FakeJobGateway)
        job = gateway.jobs[(task.namespace, task.job_name)]
        job.output = (*job.output, *output)

    def disable_attempt_check(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(FakeJob, "belongs_to", lambda job, task: _same_task(job.labels, task))


class LocalDriver(JobDriver):
    name = "local"
    poll_step = 0.02

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.state_dir = tmp_path / "state"
        self.gateways: list[LocalJobGateway] = []

    def make_gateway(self, defaults: JobDefaults | None = None) -> JobGateway:
        gateway = LocalJobGateway(str(self.state_dir), defaults=defaults)
        self.gateways.append(gateway)
        return gateway

    def advance(self, seconds: float) -> None:
        time.sleep(seconds)

    def runs(self, gateway: JobGateway, task: Task, marker: Path) -> int:
        return len(marker.read_text().splitlines()) if marker.exists() else 0

    def env_seen(self, gateway: JobGateway, task: Task, marker: Path) -> str | None:
        lines = marker.read_text().splitlines() if marker.exists() else []
        return lines[-1] if lines else None

    def list_calls(self, gateway: JobGateway) -> int:
        assert isinstance(gateway, LocalJobGateway)
        return gateway.list_calls

    def delete(self, gateway: JobGateway, task: Task) -> None:
        assert isinstance(gateway, LocalJobGateway)
        gateway.delete(task.namespace, task.job_name)

    def finish(self, gateway: JobGateway, task: Task) -> None:
        pass  # its output_spec sleeps a moment and ends by itself

    def disable_attempt_check(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(local_module, "_is_of", lambda task_id, attempt, task: task_id == task.id)

    def close(self) -> None:
        """Kill whatever a test left running, so no process outlives the suite."""
        jobs = self.state_dir / "jobs"
        if not jobs.is_dir() or not self.gateways:
            return
        for ns in os.listdir(jobs):
            for name in os.listdir(jobs / ns):
                if not name.startswith("."):
                    self.gateways[0].delete(ns, name)
        for gateway in self.gateways:
            gateway.close()


class KubernetesDriver(JobDriver):
    """The kubernetes gateway through the official client, over HTTP, against the API
    stand-in (tests/k8s_standin.py), whose Job controller runs on this driver's clock."""

    name = "kubernetes"
    poll_step = 0.25

    def __init__(self, tmp_path: Path) -> None:
        from k8s_standin import ApiStandIn, write_kubeconfig

        self.clock = FakeClock()
        self.standin = ApiStandIn(namespaces=self.namespaces, clock=self.clock, start_after=0.5,
                                  finish_after=1.0).start()
        self.kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", self.standin)
        self.gateways: list[KubernetesJobGateway] = []

    def make_gateway(self, defaults: JobDefaults | None = None) -> JobGateway:
        gateway = KubernetesJobGateway(kubeconfig=str(self.kubeconfig), qps=0, defaults=defaults)
        self.gateways.append(gateway)
        return gateway

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._settle()

    def _settle(self) -> None:
        """The gateways' watches have seen what the stand-in did so far (they lag by a few ms)."""
        for gateway in self.gateways:
            self.standin.settle(gateway)

    def runs(self, gateway: JobGateway, task: Task, marker: Path) -> int:
        return self.standin.created[(task.namespace, task.job_name)]

    def env_seen(self, gateway: JobGateway, task: Task, marker: Path) -> str | None:
        job = self.standin.job(task.namespace, task.job_name) or {}
        (container,) = job["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container.get("env", [])}.get("FOO")

    def list_calls(self, gateway: JobGateway) -> int:
        return self.standin.requests["list"]

    def delete(self, gateway: JobGateway, task: Task) -> None:
        self.standin.delete_job(task.namespace, task.job_name)
        self._settle()

    def output_spec(self, output: Sequence[str], *, seconds: float = 0.0) -> JobSpec:
        return JobSpec(image="busybox", command=("sleep",), args=(str(seconds or 1),))

    def print(self, gateway: JobGateway, task: Task, output: Sequence[str]) -> None:
        self.standin.write_log(task.namespace, task.job_name, "".join(f"{line}\n" for line in output))

    def finish(self, gateway: JobGateway, task: Task) -> None:
        self.standin.finish(task.namespace, task.job_name)
        self._settle()

    def disable_attempt_check(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(kubernetes_module, "belongs_to", _same_task)

    def close(self) -> None:
        for gateway in self.gateways:
            gateway.close()
        self.standin.stop()


DRIVERS: dict[str, type[JobDriver]] = {"fake": FakeDriver, "local": LocalDriver, "kubernetes": KubernetesDriver}
