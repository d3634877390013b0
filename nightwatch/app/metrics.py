"""Prometheus metrics. Each daemon owns its own registry so several can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
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
        self.watcher_run_seconds = Histogram(
            "nightwatch_watcher_run_seconds", "Watcher run duration", ["watcher"], registry=r
        )
        self.job_requests = Counter(
            "nightwatch_job_requests_total", "Calls to the job backend", ["verb", "code"], registry=r
        )
        self.lock_renew_seconds = Histogram(
            "nightwatch_lock_renew_seconds", "Lock renew latency",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=r,
        )
        self.fenced_writes = Counter(
            "nightwatch_fenced_writes_total", "Status writes refused by the epoch check", registry=r
        )
