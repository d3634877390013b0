"""The Kubernetes API stand-in of the tests (tests/k8s_standin.py, with its watches), in the
benchmark's process, instrumented for latency.py:

- ``created_at[task_id]``: when the stand-in stored the Job of a POST (the Job exists);
- ``finished_at[task_id]``: when its time rule (the 20 ms ticker) marked the Job Complete or Failed;
- ``cpu()``: the CPU seconds of the stand-in's own threads (its server, its ticker and one thread
  per connection), so that the leader's CPU is the process's minus this.

Its server class is swapped for one that meters each connection thread (``k8s_standin.start``
builds ``_Server`` by its module name).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # k8s_standin imports its watch module

import k8s_standin  # noqa: E402
from k8s_standin import ApiStandIn, write_kubeconfig  # noqa: E402

TASK_ID = "nightwatch.io/task-id"


class MeteredStandIn(ApiStandIn):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.created_at: dict[int, float] = {}
        self.finished_at: dict[int, float] = {}
        self._cpu_lock = threading.Lock()
        self._live: set[int] = set()  # idents of the connection threads running now
        self._done_cpu = 0.0  # CPU of the connection threads that ended

    def _create(self, namespace: str, job: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = super()._create(namespace, job)
        task_id = (job["metadata"].get("labels") or {}).get(TASK_ID)
        if task_id:
            self.created_at.setdefault(int(task_id), time.time())
        return out

    def _record(self, kind: str, key: tuple[str, str], job: dict[str, Any],
                old_labels: dict[str, str] | None = None) -> None:
        super()._record(kind, key, job, old_labels)
        task_id = (job["metadata"].get("labels") or {}).get(TASK_ID)
        if kind == "MODIFIED" and task_id and k8s_standin._finished(job):
            self.finished_at.setdefault(int(task_id), time.time())

    def connection(self, run: Any) -> None:
        """Run one connection's thread, metered."""
        ident = threading.get_ident()
        with self._cpu_lock:
            self._live.add(ident)
        try:
            run()
        finally:
            with self._cpu_lock:
                self._done_cpu += time.thread_time()
                self._live.discard(ident)

    def cpu(self) -> float:
        own = {t.ident for t in threading.enumerate() if t.name.startswith("k8s-standin") and t.ident}
        with self._cpu_lock:
            total = self._done_cpu
            for ident in self._live | own:
                with suppress(OSError):  # ended just now
                    total += time.clock_gettime(time.pthread_getcpuclockid(ident))
        return total

    def running(self) -> int:
        with self._mutex:
            return sum(1 for job in self._jobs.values() if job["status"].get("active"))

    def pin_all(self) -> None:
        """Every Job as it is now stays so (the ticker stops scanning them)."""
        with self._mutex:
            self._pinned |= set(self._jobs)
        self.tick()


class _MeteredServer(k8s_standin._Server):
    def process_request_thread(self, request: Any, client_address: Any) -> None:
        api: MeteredStandIn = self.RequestHandlerClass.api
        api.connection(lambda: super(_MeteredServer, self).process_request_thread(request, client_address))


k8s_standin._Server = _MeteredServer


@contextmanager
def standin(tmp: Path, *, start_after: float | None = 0.0,
            finish_after: float | None = None) -> Iterator[tuple[MeteredStandIn, dict[str, Any]]]:
    """The stand-in, started, and the ``jobs.kubernetes`` settings that point the leader at it
    (the shipped qps/burst)."""
    with MeteredStandIn(namespaces=("default",), start_after=start_after, finish_after=finish_after) as s:
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", s)
        yield s, {"kubeconfig": str(kubeconfig), "context": "standin"}
