"""Prometheus metrics. Each daemon owns its own registry so several can live in one process."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class JobRequestsCollector(Collector):
    """``nightwatch_job_requests_total{verb,code}``, read at scrape time from the job gateway's
    own tally: a public ``requests`` mapping of ``(verb, code) -> calls`` (the Kubernetes
    gateway keeps one). A gateway without it gives the family with no samples."""

    def __init__(self, gateway: Any = None) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "nightwatch_job_requests", "Calls to the job backend", labels=["verb", "code"]
        )
        for (verb, code), calls in sorted(self.snapshot().items()):
            family.add_metric([str(verb), str(code)], calls)
        yield family

    def snapshot(self) -> dict[tuple[str, str], int]:
        tally = getattr(self.gateway, "requests", None)
        if not isinstance(tally, Mapping):
            return {}
        for _ in range(5):  # the gateway's threads may add a key while we copy
            try:
                return {key: int(n) for key, n in tally.items() if isinstance(key, tuple) and len(key) == 2}
            except RuntimeError:
                continue
        return {}


class Metrics:
    """Every metric of issue 5. ``gateway``: the job gateway whose ``requests`` tally backs
    ``nightwatch_job_requests_total`` (also settable later as ``job_requests.gateway``)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, gateway: Any = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.is_leader = Gauge("nightwatch_is_leader", "1 while this replica leads", registry=r)
        self.leader_epoch = Gauge("nightwatch_leader_epoch", "Epoch of the current term", registry=r)
        self.leader_transitions = Counter(
            "nightwatch_leader_transitions_total", "Leadership changes", ["reason"], registry=r
        )
        self.tasks = Gauge("nightwatch_tasks", "Tasks per status (refreshed by the leader)", ["status"],
                           registry=r)
        self.task_transitions = Counter(
            "nightwatch_task_transitions_total", "Task status changes written", ["from", "to"], registry=r
        )
        self.watcher_runs = Counter(
            "nightwatch_watcher_runs_total", "Watcher runs", ["watcher", "result"], registry=r
        )
        self.watcher_wakes = Counter(
            "nightwatch_watcher_wakes_total", "Runs asked for by an event (a new row, a Job that changed)",
            ["watcher"], registry=r,
        )
        self.notify_fallbacks = Counter(
            "nightwatch_notify_fallbacks_total", "Times the store's change notifications were lost "
            "(the watchers poll on their schedule until they are back)", registry=r,
        )
        self.watcher_run_seconds = Histogram(
            "nightwatch_watcher_run_seconds", "Watcher run duration", ["watcher"], registry=r
        )
        self.job_requests = JobRequestsCollector(gateway)
        r.register(self.job_requests)
        self.lock_renew_seconds = Histogram(
            "nightwatch_lock_renew_seconds", "Lock renew latency",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=r,
        )
        self.fenced_writes = Counter(
            "nightwatch_fenced_writes_total", "Status writes refused by the epoch check", registry=r
        )
