"""The Job as Kubernetes sees it: the manifest nightwatch sends, and the status it reads back.

Pure functions, shared by every job gateway and the tests. ``build_job_manifest`` returns
the plain ``batch/v1`` Job as a dict (what ``kubectl apply`` would read), so the Kubernetes
gateway sends it as is and tests validate it against the Kubernetes JSON schemas;
``job_state`` maps a Job read back from the API to a ``JobState``. DESIGN §4 "Job template"
and issue 4 items 2 and 4 are the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nightwatch.domain.constants import (
    ATTEMPT_LABEL,
    CONTAINER_NAME,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    TASK_ID_LABEL,
)
from nightwatch.domain.jobspec import JobDefaults, JobSpec
from nightwatch.domain.model import JobPhase, JobState, Task

# The container security context every Job gets. ``runAsNonRoot`` is deliberately absent:
# many images users run (alpine, busybox -- the seed's own rows) have no non-root USER, and
# the kubelet refuses to start such a container under ``runAsNonRoot: true``
# (CreateContainerConfigError), which would fail tasks that are otherwise fine. Namespaces
# that want it enforce it with Pod Security Admission ("restricted").
SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def job_labels(task: Task) -> dict[str, str]:
    """The labels that mark a Job (and its pods) as nightwatch's, for this attempt of this task."""
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, TASK_ID_LABEL: str(task.id), ATTEMPT_LABEL: str(task.attempt)}


def belongs_to(labels: Mapping[str, str] | None, task: Task) -> bool:
    """Whether a Job (or pod) with these labels is the one of ``task``'s current attempt: both
    the task id and the attempt must match; a Job without the attempt label (made by nightwatch
    < 0.3) counts as attempt 1."""
    labels = labels or {}
    return labels.get(TASK_ID_LABEL) == str(task.id) and labels.get(ATTEMPT_LABEL, "1") == str(task.attempt)


def build_job_manifest(task: Task, spec: JobSpec, defaults: JobDefaults | None = None) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs ``spec`` for ``task``'s current attempt: named
    ``task.job_name``, in its namespace, labelled with the task id and the attempt (its pods
    too), one container ``task``, never restarted in place."""
    defaults = defaults or JobDefaults()
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": spec.image}
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.env:
        container["env"] = [{"name": name, "value": value} for name, value in spec.env.items()]
    if spec.resources:
        container["resources"] = {kind: dict(amounts) for kind, amounts in spec.resources.items()}
    container["securityContext"] = {
        **SECURITY_CONTEXT,
        "capabilities": {"drop": list(SECURITY_CONTEXT["capabilities"]["drop"])},
        "seccompProfile": dict(SECURITY_CONTEXT["seccompProfile"]),
    }

    job_spec: dict[str, Any] = {"backoffLimit": defaults.backoff_limit}
    if defaults.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = defaults.ttl_seconds_after_finished
    if defaults.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = defaults.active_deadline_seconds
    job_spec["template"] = {
        "metadata": {"labels": job_labels(task)},
        "spec": {"restartPolicy": "Never", "containers": [container]},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": task.job_name, "namespace": task.namespace, "labels": job_labels(task)},
        "spec": job_spec,
    }


def _true_conditions(job: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    conditions = (job.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in conditions if isinstance(c, Mapping) and c.get("status") == "True"}


def _failure(condition: Mapping[str, Any]) -> JobState:
    reason, message = condition.get("reason") or "", condition.get("message") or ""
    text = f"{reason}: {message}" if reason and message else reason or message or "Job failed"
    return JobState(JobPhase.FAILED, text)


def job_state(job: Mapping[str, Any]) -> JobState:
    """Map a ``batch/v1`` Job (as a dict) to what nightwatch tracks.

    Final conditions first, then the ones Kubernetes ≥ 1.31 sets while the last pods
    terminate: ``Complete``/``SuccessCriteriaMet`` → Succeeded; ``Failed``/``FailureTarget``
    → Failed with "<reason>: <message>" (e.g. ``BackoffLimitExceeded: Job has reached the
    specified backoff limit``); a suspended Job → Pending; ready pods → Running; active pods
    none of which is ready (``ready`` reported as 0: waiting for its image, say) → Pending;
    active pods on a server that does not report ``ready`` → Running; anything else
    (created, pods not scheduled yet) → Pending.
    """
    conditions = _true_conditions(job)
    if "Complete" in conditions:
        return JobState(JobPhase.SUCCEEDED)
    if "Failed" in conditions:
        return _failure(conditions["Failed"])
    if "SuccessCriteriaMet" in conditions:
        return JobState(JobPhase.SUCCEEDED)
    if "FailureTarget" in conditions:
        return _failure(conditions["FailureTarget"])
    if (job.get("spec") or {}).get("suspend"):
        return JobState(JobPhase.PENDING)
    status = job.get("status") or {}
    if (status.get("ready") or 0) > 0:
        return JobState(JobPhase.RUNNING)
    if (status.get("active") or 0) > 0 and status.get("ready") is None:
        return JobState(JobPhase.RUNNING)
    return JobState(JobPhase.PENDING)


def not_ready(job: Mapping[str, Any]) -> bool:
    """A Job with active pods none of which is ready (as far as the server reports ``ready``)."""
    status = job.get("status") or {}
    return (status.get("active") or 0) > 0 and status.get("ready") == 0
