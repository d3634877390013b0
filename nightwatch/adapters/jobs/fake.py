"""FakeJobGateway: a simulated cluster in memory, deterministic under an injected clock.

The fake behaves like the Kubernetes API server and Job controller for the calls nightwatch
makes, with time taken from the injected ``Clock`` (``FakeClock.advance`` moves every Job on):

- A Job is keyed by ``(namespace, name)``, named ``task.job_name`` (one per attempt) and
  labelled with its task's id and attempt. Launching a task whose Job exists adopts it when
  both labels are this task's id and attempt (``ADOPTED``, not recorded in ``created``) and
  raises ``JobConflictError`` otherwise.
- ``cancel`` deletes the current attempt's Job (recorded in ``cancelled``); ``logs`` returns
  the lines the simulated container printed: ``echo`` prints its arguments, a failing Job
  prints ``fake: failing`` to its log, anything else prints nothing.
- Phase rule, from the moment ``t0`` the Job was created:
  ``Pending`` until ``t0 + start_delay``, then ``Running`` for the run time, then
  ``Succeeded`` -- or ``Failed`` with ``"BackoffLimitExceeded: Job has reached the specified
  backoff limit"`` when the Job *fails*: its argv's first element is ``"false"`` or its env has
  ``FAKE_FAIL=1``. The run time is ``duration`` for a Job that succeeds and
  ``duration * (backoff_limit + 1)`` for one that fails (every retry fails again), where
  ``duration = float(argv[1])`` for ``sleep N`` (``command: ["sleep"], args: ["N"]``) and
  ``default_duration`` otherwise.
- ``active_deadline_seconds`` (from ``defaults``): a Job still running that long after it
  started ends ``Failed`` with ``"DeadlineExceeded: Job was active longer than specified
  deadline"``.
- ``ttl_seconds_after_finished`` (from ``defaults``): a finished Job disappears that long
  after it finished, as the TTL controller would delete it.
- ``namespaces``: when given, a launch in any other namespace is refused with the API
  server's ``namespaces "x" not found``; a bad Job name or an empty image is refused as the
  API server's validation would (``JobRejectedError``).

Tests read the plain public attributes (``jobs``, ``created``, ``cancelled``, ``list_calls``,
``get_calls``)
and inject faults with ``fail_next_creates``, ``unavailable`` and ``delete()``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from nightwatch.adapters.jobs.recording import append_line
from nightwatch.domain.constants import ATTEMPT_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, TASK_ID_LABEL
from nightwatch.domain.errors import BackendUnavailableError, JobConflictError, JobNotFoundError, JobRejectedError
from nightwatch.domain.jobspec import JobDefaults, JobSpec
from nightwatch.domain.model import JobPhase, JobState, Task
from nightwatch.domain.ports import Clock, JobGateway, LaunchOutcome

BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded: Job has reached the specified backoff limit"
DEADLINE_EXCEEDED = "DeadlineExceeded: Job was active longer than specified deadline"
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass
class FakeJob:
    """One simulated Job: when it starts and ends (on the clock's monotonic scale), and how."""

    namespace: str
    name: str
    task_id: int
    spec: JobSpec
    created_at: float
    starts_at: float
    ends_at: float
    final: JobState
    labels: dict[str, str] = field(default_factory=dict)
    output: tuple[str, ...] = ()  # the lines its container prints, by the end

    def belongs_to(self, task: Task) -> bool:
        return (self.labels.get(TASK_ID_LABEL) == str(task.id)
                and self.labels.get(ATTEMPT_LABEL, "1") == str(task.attempt))

    def state(self, now: float) -> JobState:
        if now < self.starts_at:
            return JobState(JobPhase.PENDING)
        if now < self.ends_at:
            return JobState(JobPhase.RUNNING)
        return self.final


def fails(spec: JobSpec) -> bool:
    argv = spec.argv
    return bool(argv and argv[0] == "false") or spec.env.get("FAKE_FAIL") == "1"


def duration_of(spec: JobSpec, default: float) -> float:
    argv = spec.argv
    if len(argv) >= 2 and argv[0] == "sleep":
        try:
            return max(0.0, float(argv[1]))
        except ValueError:
            pass
    return default


class FakeJobGateway(JobGateway):
    def __init__(
        self,
        clock: Clock,
        *,
        default_duration: float = 1.0,
        start_delay: float = 0.0,
        defaults: JobDefaults | None = None,
        namespaces: set[str] | None = None,
        record_path: str | None = None,
    ) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self.default_duration = default_duration
        self.start_delay = start_delay
        self.defaults = defaults or JobDefaults()
        self.namespaces = namespaces
        self.record_path = record_path
        self.jobs: dict[tuple[str, str], FakeJob] = {}
        self.created: list[tuple[str, str, int]] = []  # (namespace, job name, task id) per real create
        self.cancelled: list[tuple[str, str, int]] = []  # (namespace, job name, task id) per cancel
        self.list_calls = 0  # one per namespace per observe
        self.get_calls = 0  # one per launch that met an existing Job
        self.fail_next_creates = 0  # the next N launches raise BackendUnavailableError
        self.unavailable = False  # every call raises BackendUnavailableError
        self.wake: Callable[[], None] | None = None  # set_wake
        self.closed = False

    # -- the port ---------------------------------------------------------------------------

    def launch(self, task: Task, spec: JobSpec) -> LaunchOutcome:
        with self._mutex:
            self._check_available()
            if self.fail_next_creates > 0:
                self.fail_next_creates -= 1
                raise BackendUnavailableError("fake: injected transient failure on create")
            self._validate(task, spec)
            key = (task.namespace, task.job_name)
            now = self._clock.monotonic()
            self._collect(now)
            existing = self.jobs.get(key)
            if existing is not None:
                self.get_calls += 1
                if existing.belongs_to(task):
                    return LaunchOutcome.ADOPTED
                raise JobConflictError(
                    f"a Job named {task.job_name!r} already exists in namespace {task.namespace!r} "
                    f"and was not created for this task (attempt {task.attempt})"
                )
            self.jobs[key] = self._new_job(task, spec, now)
            self.created.append((task.namespace, task.job_name, task.id))
            if self.record_path:
                append_line(self.record_path, f"{task.id} {task.namespace}/{task.job_name}\n")
            return LaunchOutcome.CREATED

    def observe(self, tasks: Sequence[Task]) -> Mapping[int, JobState]:
        with self._mutex:
            self._check_available()
            now = self._clock.monotonic()
            self._collect(now)
            by_namespace: dict[str, list[Task]] = {}
            for task in tasks:
                by_namespace.setdefault(task.namespace, []).append(task)
            result: dict[int, JobState] = {}
            for namespace, members in by_namespace.items():
                self.list_calls += 1  # one LIST per namespace
                for task in members:
                    job = self.jobs.get((namespace, task.job_name))
                    if job is not None and job.belongs_to(task):
                        result[task.id] = job.state(now)
            return result

    def cancel(self, task: Task) -> None:
        with self._mutex:
            self._check_available()
            key = (task.namespace, task.job_name)
            job = self.jobs.get(key)
            if job is not None and job.belongs_to(task):
                del self.jobs[key]
                self.cancelled.append((task.namespace, task.job_name, task.id))

    def logs(self, task: Task, tail: int | None = 100, follow: bool = False,
             stop: threading.Event | None = None) -> Iterator[str]:
        """What the container printed so far (all of it once the Job ended; ``follow`` adds
        nothing more: the fake's clock does not move while a caller waits)."""
        with self._mutex:
            self._check_available()
            job = self.jobs.get((task.namespace, task.job_name))
            if job is None or not job.belongs_to(task):
                raise JobNotFoundError(f"no Job for attempt {task.attempt} of task {task.id}")
            lines = list(job.output) if self._clock.monotonic() >= job.starts_at else []
        return iter(lines[-tail:] if tail is not None and tail > 0 else [] if tail == 0 else lines)

    def set_wake(self, wake: Callable[[], None]) -> None:
        """Kept for tests (``self.wake``); the fake's Jobs change with its clock, not by events."""
        self.wake = wake

    def close(self) -> None:
        self.closed = True

    # -- for tests ----------------------------------------------------------------------------

    def delete(self, namespace: str, name: str) -> None:
        """Delete a Job behind nightwatch's back (as ``kubectl delete job`` would)."""
        with self._mutex:
            self.jobs.pop((namespace, name), None)

    # -- internals ----------------------------------------------------------------------------

    def _check_available(self) -> None:
        if self.unavailable:
            raise BackendUnavailableError("fake: the cluster is unavailable")

    def _validate(self, task: Task, spec: JobSpec) -> None:
        if self.namespaces is not None and task.namespace not in self.namespaces:
            raise JobRejectedError(f'namespaces "{task.namespace}" not found')
        if len(task.job_name) > 63 or not _DNS1123_LABEL.match(task.job_name):
            raise JobRejectedError(
                f'Job.batch "{task.job_name}" is invalid: metadata.name: Invalid value: "{task.job_name}": '
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
                "'-', and must start and end with an alphanumeric character (at most 63 characters)"
            )
        if not spec.image.strip():
            raise JobRejectedError(
                f'Job.batch "{task.job_name}" is invalid: spec.template.spec.containers[0].image: '
                "Required value"
            )

    def _new_job(self, task: Task, spec: JobSpec, now: float) -> FakeJob:
        duration = duration_of(spec, self.default_duration)
        failing = fails(spec)
        run_time = duration * (self.defaults.backoff_limit + 1) if failing else duration
        final = JobState(JobPhase.FAILED, BACKOFF_LIMIT_EXCEEDED) if failing else JobState(
            JobPhase.SUCCEEDED
        )
        deadline = self.defaults.active_deadline_seconds
        if deadline is not None and run_time > deadline:
            run_time, final = float(deadline), JobState(JobPhase.FAILED, DEADLINE_EXCEEDED)
        starts_at = now + self.start_delay
        argv = spec.argv
        output = (" ".join(argv[1:]),) if argv[:1] == ["echo"] else ("fake: failing",) if failing else ()
        return FakeJob(
            namespace=task.namespace,
            name=task.job_name,
            task_id=task.id,
            spec=spec,
            created_at=now,
            starts_at=starts_at,
            ends_at=starts_at + run_time,
            final=final,
            labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE, TASK_ID_LABEL: str(task.id),
                    ATTEMPT_LABEL: str(task.attempt)},
            output=output,
        )

    def _collect(self, now: float) -> None:
        """The TTL controller: finished Jobs go ``ttl_seconds_after_finished`` after finishing."""
        ttl = self.defaults.ttl_seconds_after_finished
        if ttl is None:
            return
        expired = [key for key, job in self.jobs.items() if now >= job.ends_at + ttl]
        for key in expired:
            del self.jobs[key]

