"""What the Kubernetes gateway reads from a Job's pods: why it failed (the container's exit code
and reason, a few lines of its log), whether it waits on something a retry cannot fix (an image
that cannot be pulled), and which pod holds the log of a task's current attempt. Pure functions
over the API's JSON (dicts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nightwatch.adapters.jobs.manifest import belongs_to
from nightwatch.domain.constants import CONTAINER_NAME
from nightwatch.domain.model import JobPhase, JobState, Task

# Waiting reasons a pod does not get out of by itself (or only once someone fixes the image or
# the config): past jobs.kubernetes.pending_fatal_grace the task fails, for good.
FATAL_WAITING = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                           "CreateContainerConfigError", "CreateContainerError"})
LOG_TAIL_LINES = 5  # log lines read for a failure message
LOG_LINE_BYTES = 2048  # bytes kept of each (memory: at most 10 KiB per failed Job)
MESSAGE_LINE = 200  # characters of the last line that go into the message (as the local backend)


def controller_uid(meta: Mapping[str, Any]) -> str:
    labels = meta.get("labels") or {}
    return str(labels.get("batch.kubernetes.io/controller-uid") or labels.get("controller-uid") or "")


def pods_of(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The Job's pods (by its controller uid, else its name), newest first."""
    meta = job.get("metadata") or {}
    uid, name = meta.get("uid") or "", meta.get("name") or ""
    mine = []
    for pod in pods:
        pod_meta = pod.get("metadata") or {}
        labels = pod_meta.get("labels") or {}
        owner = controller_uid(pod_meta)
        if (uid and owner == uid) or (not owner and (labels.get("batch.kubernetes.io/job-name")
                                                     or labels.get("job-name")) == name):
            mine.append(pod)
    return sorted(mine, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)


def attempt_pods(task: Task, pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pods of the task's current attempt's Job, newest first."""
    mine = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        job_name = labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
        if belongs_to(labels, task) and (job_name is None or job_name == task.job_name):
            mine.append(pod)
    return sorted(mine, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)


def _container_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER_NAME:
            return dict(status)
    return statuses[0] if statuses else {}


def terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The container's ``terminated`` state (or its last one), if it ran and ended."""
    status = _container_status(pod)
    for key in ("state", "lastState"):
        ended = (status.get(key) or {}).get("terminated")
        if ended:
            return dict(ended)
    return None


def fatal_waiting(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(reason, message)`` when the pod's container waits for a reason in ``FATAL_WAITING``."""
    waiting = (_container_status(pod).get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason") or ""
    if reason in FATAL_WAITING:
        return reason, waiting.get("message") or ""
    return None


def failure_message(job_state: JobState, pod: Mapping[str, Any] | None, log_lines: Sequence[str]) -> JobState:
    """The failure of a Job in the words of its last pod: ``exit code 3: <last log line>`` (like the
    local backend), ``OOMKilled: exit code 137``, ``Evicted: <the kubelet's message>``; the Job's
    own condition (e.g. ``DeadlineExceeded: ...``) when no pod tells more. Always retryable: a
    non-zero exit, a deadline, an eviction or a lost node may pass on the next attempt."""
    if pod is None:
        return job_state
    last = next((line.strip() for line in reversed(log_lines) if line.strip()), "")
    if len(last) > MESSAGE_LINE:
        last = last[: MESSAGE_LINE - 1] + "…"
    status = pod.get("status") or {}
    ended = terminated(pod)
    if job_state.message.startswith("DeadlineExceeded"):  # the Job's deadline killed the pod: say so
        return JobState(JobPhase.FAILED, f"{job_state.message}: {last}" if last else job_state.message)
    if ended is not None:
        code = ended.get("exitCode")
        reason = ended.get("reason") or ""
        text = f"exit code {code}" if reason in ("", "Error") else f"{reason}: exit code {code}"
        return JobState(JobPhase.FAILED, f"{text}: {last}" if last else text)
    if status.get("reason"):  # the whole pod failed: Evicted, DeadlineExceeded, NodeLost...
        text = f"{status['reason']}: {status.get('message') or ''}".rstrip(": ")
        return JobState(JobPhase.FAILED, text)
    return job_state
