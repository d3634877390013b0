"""The Job manifest nightwatch sends, checked against the Kubernetes JSON schemas of the pinned
client's version (kubernetes-validate ships them: no network), and the Job status mapping."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import kubernetes_validate
import pytest
from k8s_standin import schema_version

from nightwatch.adapters.jobs.manifest import build_job_manifest, job_state
from nightwatch.domain.jobspec import JobDefaults, JobSpec, parse_info
from nightwatch.domain.model import JobPhase, JobState, Task


def validate(doc: dict[str, Any]) -> str:
    return kubernetes_validate.validate(doc, schema_version(), strict=True)


TASK = Task(42, "nightly-report", "batch-tasks", "{}", "Normal")
SPECS = {
    "bare": '{"image": "alpine"}',
    "command and args": '{"image": "alpine", "command": ["sleep"], "args": ["60"]}',
    "env object": '{"image": "alpine", "command": ["env"], "env": {"A": "1", "B_2": "two words"}}',
    "env list": '{"image": "alpine", "env": [{"name": "A", "value": "1"}]}',
    "resources": '{"image": "alpine", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},'
                 ' "limits": {"cpu": 1, "memory": "1Gi", "nvidia.com/gpu": "1"}}}',
    "numbers": '{"image": "alpine", "resources": {"requests": {"cpu": 0.5}, "limits": {"cpu": 1.5, "memory": 1e9}}}',
    "everything": '{"image": "registry.example.com/team/tool:1.2", "command": ["sh", "-c"], "args": ["echo $A"],'
                  ' "env": {"A": "x"}, "resources": {"limits": {"memory": "128Mi"}}}',
}
DEFAULTS = {
    "defaults": JobDefaults(),
    "deadline": JobDefaults(backoff_limit=1, ttl_seconds_after_finished=600, active_deadline_seconds=3600),
    "no ttl": JobDefaults(backoff_limit=3, ttl_seconds_after_finished=None),
}


def test_the_schema_version_matches_the_pinned_client() -> None:
    version = schema_version()
    print(f"\nkubernetes client {kubernetes.__version__} -> Job schema of Kubernetes {version}")
    assert version.startswith(f"1.{kubernetes.__version__.split('.')[0]}.")


@pytest.mark.parametrize("defaults", DEFAULTS.values(), ids=DEFAULTS.keys())
@pytest.mark.parametrize("info", SPECS.values(), ids=SPECS.keys())
def test_every_manifest_validates(info: str, defaults: JobDefaults) -> None:
    manifest = build_job_manifest(TASK, parse_info(info), defaults)
    assert validate(manifest) == ".".join(schema_version().split(".")[:2])


def test_the_validation_can_fail() -> None:
    """Positive control: the strict schema refuses what the API server would refuse."""
    manifest = build_job_manifest(TASK, parse_info(SPECS["bare"]))
    manifest["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(manifest)
    manifest = build_job_manifest(TASK, parse_info(SPECS["bare"]))
    manifest["spec"]["backofLimit"] = 1  # a typo: strict schemas know every field
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(manifest)


def test_the_manifest_is_the_design_s_job_template() -> None:
    spec = parse_info(SPECS["everything"])
    manifest = build_job_manifest(TASK, spec, DEFAULTS["deadline"])
    labels = {"app.kubernetes.io/managed-by": "nightwatch", "nightwatch.io/task-id": "42",
              "nightwatch.io/attempt": "1"}
    assert manifest == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "nightly-report", "namespace": "batch-tasks", "labels": labels},
        "spec": {
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": 600,
            "activeDeadlineSeconds": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "task",
                        "image": "registry.example.com/team/tool:1.2",
                        "command": ["sh", "-c"],
                        "args": ["echo $A"],
                        "env": [{"name": "A", "value": "x"}],
                        "resources": {"limits": {"memory": "128Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                    }],
                },
            },
        },
    }
    json.dumps(manifest)  # plain JSON types only: it goes over the wire as it is


def test_optional_fields_are_left_out_not_null() -> None:
    manifest = build_job_manifest(TASK, JobSpec(image="alpine"), DEFAULTS["no ttl"])
    assert "ttlSecondsAfterFinished" not in manifest["spec"]
    assert "activeDeadlineSeconds" not in manifest["spec"]
    assert set(manifest["spec"]["template"]["spec"]["containers"][0]) == {"name", "image", "securityContext"}


def test_manifests_do_not_share_state() -> None:
    one = build_job_manifest(TASK, JobSpec(image="alpine"))
    one["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"].append("X")
    two = build_job_manifest(TASK, JobSpec(image="alpine"))
    assert two["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["drop"] == ["ALL"]


def _job(*conditions: tuple[str, str], suspend: bool = False, **status: Any) -> dict[str, Any]:
    return {
        "spec": {"suspend": suspend},
        "status": {**status, "conditions": [
            {"type": kind, "status": truth, "reason": f"{kind}Reason", "message": f"{kind} happened"}
            for kind, truth in conditions
        ]},
    }


@pytest.mark.parametrize(("job", "expected"), [
    (_job(("Complete", "True")), JobState(JobPhase.SUCCEEDED)),
    (_job(("SuccessCriteriaMet", "True"), active=1), JobState(JobPhase.SUCCEEDED)),
    (_job(("Failed", "True")), JobState(JobPhase.FAILED, "FailedReason: Failed happened")),
    (_job(("FailureTarget", "True"), active=1),
     JobState(JobPhase.FAILED, "FailureTargetReason: FailureTarget happened")),
    (_job(("FailureTarget", "True"), ("Failed", "True")),
     JobState(JobPhase.FAILED, "FailedReason: Failed happened")),
    (_job(("Complete", "False"), active=1), JobState(JobPhase.RUNNING)),
    (_job(("Suspended", "True"), suspend=True), JobState(JobPhase.PENDING)),
    (_job(("Failed", "True"), suspend=True), JobState(JobPhase.FAILED, "FailedReason: Failed happened")),
    (_job(active=2), JobState(JobPhase.RUNNING)),
    (_job(active=0, ready=1), JobState(JobPhase.RUNNING)),
    (_job(), JobState(JobPhase.PENDING)),
    ({"metadata": {"name": "fresh"}}, JobState(JobPhase.PENDING)),  # no spec/status yet
])
def test_job_status_mapping(job: dict[str, Any], expected: JobState) -> None:
    assert job_state(job) == expected


def test_a_failure_without_reason_or_message_still_says_something() -> None:
    job = {"status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert job_state(job) == JobState(JobPhase.FAILED, "Job failed")
