"""KubernetesJobGateway: ``batch/v1`` Jobs on any API server, through the official client.

- Config: ``kubeconfig: null`` → in-cluster service account inside a pod
  (``KUBERNETES_SERVICE_HOST`` set), else ``$KUBECONFIG``, else ``~/.kube/config``;
  ``context`` picks a kubeconfig context. Loaded into this gateway's own ``Configuration``
  on the first call (the client's global default is never touched).
- Every request carries ``_request_timeout`` and first takes a token from a client-side
  rate limiter (``qps``, ``burst``). urllib3 does not retry: a failure is reported at once
  and the task watcher retries on a later cycle, with backoff.
- Launch is exactly-once per attempt: the Job is named ``task.job_name`` and labelled with the
  task id and ``nightwatch.io/attempt``; AlreadyExists with both labels this attempt's is
  adopted (no attempt label = attempt 1), anything else is a conflict.
- A create refused by RBAC (403 ``Forbidden`` from the API server, not a quota) is an
  operator's error, often a RoleBinding lagging a config change: ``JobForbiddenError``
  (the task stays ``Normal`` and backs off), one warning per namespace, and the task fails
  with the API server's message only once it has been refused for ``forbidden_grace``.
- Observe reads a cache kept by one LIST + WATCH per namespace with tasks in flight
  (``_kubernetes_watch``; a full LIST every ``resync``): no API call while the watches are
  healthy, a broken one reports its namespace's tasks Unknown. Only when some Job there failed
  or has active pods none of which is ready, one LIST of pods in that namespace, and for each
  failed Job, once, the last lines of its pod's log: the failure then reads ``exit code 3:
  oops``. A pod waiting in ImagePullBackOff (or another reason in ``FATAL_WAITING``) longer than
  ``pending_fatal_grace`` has its Job deleted and then fails its task for good (not
  retryable); while the DELETE fails the task stays Pending and the DELETE is tried again next
  cycle (a Failed task is not observed again).
- ``retire`` PATCHes ``nightwatch.io/done=true`` on a terminal task's Job: the watches' selector
  leaves it out, so retained finished Jobs cost nothing per cycle or per re-list.
- ``cancel`` is one DELETE (propagation Background, precondition: the uid this attempt's Job
  was seen with); when the uid changed (409), one GET and, if the Job is still this attempt's,
  one more DELETE with its new uid, else BackendUnavailableError (retried next cycle).
  ``logs`` reads the current attempt's newest pod's log, streamed.
- ``requests`` counts every call by (verb, HTTP code or "error") for the metrics.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.jobs._kubernetes_api import (
    ApiException,
    TokenBucket,
    configuration,
    is_forbidden,
    k8s,
    status_of,
    stream_lines,
    translate,
    urllib3,
)
from nightwatch.adapters.jobs._kubernetes_pods import (
    LOG_LINE_BYTES,
    LOG_TAIL_LINES,
    attempt_pods,
    failure_message,
    fatal_waiting,
    pods_of,
)
from nightwatch.adapters.jobs._kubernetes_watch import JobWatches, NamespaceWatch
from nightwatch.adapters.jobs.manifest import belongs_to, build_job_manifest, job_state, not_ready
from nightwatch.domain.constants import CONTAINER_NAME, DONE_LABEL, MANAGED_SELECTOR, TASK_ID_LABEL
from nightwatch.domain.errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidTaskSpecError,
    JobConflictError,
    JobForbiddenError,
    JobNotFoundError,
    JobRejectedError,
)
from nightwatch.domain.jobspec import JobDefaults, JobSpec, validate_job_name
from nightwatch.domain.model import JobPhase, JobState, Task
from nightwatch.domain.ports import Clock, JobGateway, LaunchOutcome

logger = logging.getLogger(__name__)

FOLLOW_READ_TIMEOUT = 24 * 3600.0  # seconds a followed log may stay quiet


class KubernetesJobGateway(JobGateway):
    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        qps: float = 50,
        burst: int = 100,
        request_timeout: float = 10.0,
        defaults: JobDefaults | None = None,
        clock: Clock | None = None,  # the rate limiter's and the forbidden grace's time source
        page_size: int = 500,
        forbidden_grace: float = 600.0,
        pending_fatal_grace: float = 120.0,
        resync: float = 300.0,  # a full LIST per watched namespace this often
        watch_read_timeout: float = 90.0,  # a watch silent this long (no event, no bookmark) is re-made
        watch_idle_after: float = 120.0,  # a namespace not observed this long is no longer watched
    ) -> None:
        if request_timeout <= 0:
            raise ConfigError("jobs.kubernetes.request_timeout must be a positive duration")
        if page_size <= 0:
            raise ConfigError("the Kubernetes LIST page size must be positive")
        if forbidden_grace <= 0:
            raise ConfigError("jobs.kubernetes.forbidden_grace must be a positive duration")
        if pending_fatal_grace <= 0:
            raise ConfigError("jobs.kubernetes.pending_fatal_grace must be a positive duration")
        if resync <= 0:
            raise ConfigError("jobs.kubernetes.resync must be a positive duration")
        self.pending_fatal_grace, self.resync = float(pending_fatal_grace), float(resync)
        self._kubeconfig = kubeconfig
        self._context = context
        self._timeout = float(request_timeout)
        self._defaults = defaults or JobDefaults()
        self._page_size = page_size
        self.forbidden_grace = float(forbidden_grace)
        self._clock = clock or SystemClock()
        self._closed = threading.Event()
        self._limiter = TokenBucket(qps, burst, self._clock, self._closed)
        # namespace -> task id -> when a create for it was first refused as forbidden
        self._forbidden: dict[str, dict[int, float]] = {}
        self._client: k8s.ApiClient | None = None
        self._api: k8s.BatchV1Api | None = None
        self._core_api: k8s.CoreV1Api | None = None
        self._uids: dict[tuple[str, str, int, int], str] = {}  # (ns, job, task, attempt) -> uid seen
        # (namespace, Job uid) -> its failure, read from its pod once
        self._failures: dict[tuple[str, str], JobState] = {}
        # (namespace, Job uid) -> when its pod was first seen waiting on a FATAL_WAITING reason
        self._waiting_since: dict[tuple[str, str], float] = {}
        self._fatal: dict[tuple[str, str, int, int], tuple[JobState, float]] = {}  # deleted by us
        self._mutex = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (verb, code) -> calls
        self._wake: Callable[[], None] = lambda: None
        self.watches = JobWatches(lambda ns: NamespaceWatch(
            ns, api=self._batch, call=self._call, connect=self._connecting, page_size=page_size,
            connect_timeout=self._timeout, read_timeout=watch_read_timeout, resync=resync,
            idle_after=watch_idle_after, wake=lambda: self._wake()), first_sync=2 * self._timeout)

    # -- the port --------------------------------------------------------------------------

    def launch(self, task: Task, spec: JobSpec) -> LaunchOutcome:
        """Create the task's Job; adopt it on AlreadyExists when it carries this task's id.

        A task name that is no DNS-1123 label is rejected (JobRejectedError) before any call.
        """
        try:
            validate_job_name(task.name)
        except InvalidTaskSpecError as e:
            raise JobRejectedError(str(e)) from e
        manifest = build_job_manifest(task, spec, self._defaults)
        api = self._batch()
        with self._mutex:
            self._fatal.pop(_key(task), None)
        try:
            self.watches.put(task.namespace, self._call("create", api.create_namespaced_job, task.namespace, manifest))
        except ApiException as e:
            status = status_of(e)
            if e.status == 409 and status.get("reason") == "AlreadyExists":
                self._allowed(task.namespace)
                return self._adopt(task)
            if is_forbidden(e, status, status.get("message") or ""):
                raise self._forbidden_error(task, status.get("message") or "forbidden") from e
            raise self._translate("create", task, e, permanent=True) from e
        self._allowed(task.namespace)
        return LaunchOutcome.CREATED

    def observe(self, tasks: Sequence[Task]) -> Mapping[int, JobState]:
        wanted: dict[str, dict[str, Task]] = defaultdict(dict)
        for task in tasks:
            wanted[task.namespace][task.job_name] = task
        states: dict[int, JobState] = {}
        self.watches.start(wanted)
        for namespace, by_name in wanted.items():
            try:
                states.update(self._observe_namespace(namespace, by_name))
            except BackendUnavailableError as e:
                # One namespace's failure (say, its RoleBinding was removed) must neither stall
                # the others nor count its Jobs as missing: report them as not observed.
                logger.warning("kubernetes job gateway: cannot read Jobs in namespace %s: %s", namespace, e)
                unknown = JobState(JobPhase.UNKNOWN, str(e))
                states.update({task.id: unknown for task in by_name.values()})
        return states

    def cancel(self, task: Task) -> None:
        """One DELETE of the current attempt's Job (propagation Background), on condition that it
        is still the Job this attempt was seen with; a GET first only when this replica has not
        seen it yet. Gone already: nothing to do."""
        with self._mutex:
            uid = self._uids.get(_key(task))
        if uid is None:
            uid = self._this_attempts_uid(task)
            if uid is None:
                return
        if not self._delete(task, uid):
            self._delete_again(task)
        with self._mutex:
            self._uids.pop(_key(task), None)

    def _this_attempts_uid(self, task: Task, now: str = "") -> str | None:
        """GET the Job named for the task's current attempt: its uid when it is that attempt's,
        None when it is gone or belongs to something else (then nothing of ours is to delete)."""
        try:
            job = self._call("get", self._batch().read_namespaced_job, task.job_name, task.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._translate("get", task, e, permanent=False) from e
        meta = job.get("metadata") or {}
        if not belongs_to(meta.get("labels"), task):
            logger.warning("task %s: Job %s/%s is not attempt %d's%s; not deleting it", task.id,
                           task.namespace, task.job_name, task.attempt, now, extra={"task_id": task.id})
            return None
        return str(meta.get("uid") or "")

    def _delete_again(self, task: Task) -> None:
        """The uid precondition failed: the Job of that name is another one now. GET it; when it is
        this attempt's, DELETE it with its own uid (once); else there is nothing of ours to delete."""
        uid = self._this_attempts_uid(task, " now")
        if uid is None:
            return
        if not self._delete(task, uid):
            raise BackendUnavailableError(f"Job {task.namespace}/{task.job_name} of attempt {task.attempt} "
                                          "keeps changing while being deleted; trying again next cycle")

    def logs(self, task: Task, tail: int | None = 100, follow: bool = False,
             stop: threading.Event | None = None) -> Iterator[str]:
        """The log of the newest pod of the current attempt's Job (the API server merges stdout
        and stderr), streamed: memory stays bounded whatever its size. A set ``stop`` shuts a
        followed stream's socket down within half a second."""
        try:
            pods = list(self._pods(task.namespace, f"{MANAGED_SELECTOR},{TASK_ID_LABEL}={task.id}"))
        except ApiException as e:
            raise self._translate("list", task, e, permanent=False) from e
        mine = attempt_pods(task, pods)
        if not mine:
            raise JobNotFoundError(f"no pod for attempt {task.attempt} of task {task.id} "
                                   f"(Job {task.namespace}/{task.job_name})")
        pod_name = (mine[0].get("metadata") or {}).get("name", "")
        if tail == 0 and not follow:
            return iter(())
        kwargs: dict[str, Any] = {"container": CONTAINER_NAME}
        if tail is not None:
            kwargs["tail_lines"] = max(0, tail)
        response = self._open("logs", task, self._core().read_namespaced_pod_log, pod_name, task.namespace,
                              follow=follow, **kwargs)
        return stream_lines(response, stop=stop if follow else None)

    def set_wake(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def retire(self, task: Task) -> None:
        """Label the current attempt's Job ``nightwatch.io/done=true`` (one PATCH); gone already or
        failing: logged, never raised (its Job then stays in the working set until deleted)."""
        try:
            # a JSON Patch (a list): every client release in the range sends it as json-patch+json;
            # its "test" makes sure the Job of that name is still this task's
            self._call("patch", self._batch().patch_namespaced_job, task.job_name, task.namespace, [
                {"op": "test", "path": _label_path(TASK_ID_LABEL), "value": str(task.id)},
                {"op": "add", "path": _label_path(DONE_LABEL), "value": "true"}])
        except ApiException as e:
            if e.status not in (404, 422):  # gone, or no longer this task's (the "test" failed)
                logger.warning("task %s: cannot label its Job %s/%s done: %s", task.id, task.namespace,
                               task.job_name, self._translate("patch", task, e, permanent=False),
                               extra={"task_id": task.id})
        except BackendUnavailableError as e:
            logger.warning("task %s: cannot label its Job %s/%s done: %s", task.id, task.namespace,
                           task.job_name, e, extra={"task_id": task.id})

    def check(self) -> None:
        """Load the client configuration now (no request), so a bad kubeconfig stops start-up."""
        self._batch()

    def close(self) -> None:
        self._closed.set()
        self.watches.close()
        with self._mutex:
            if self._client is not None:
                self._client.close()  # type: ignore[no-untyped-call]
            self._client = self._api = self._core_api = None

    # -- calls -----------------------------------------------------------------------------

    def _adopt(self, task: Task) -> LaunchOutcome:
        try:
            job = self._call("get", self._batch().read_namespaced_job, task.job_name, task.namespace)
        except ApiException as e:
            if e.status == 404:  # deleted between our create and our read: create it next time
                raise BackendUnavailableError(
                    f"Job {task.namespace}/{task.job_name} already existed but is gone now; will create it again"
                ) from e
            raise self._translate("get", task, e, permanent=False) from e
        labels = (job.get("metadata") or {}).get("labels") or {}
        if belongs_to(labels, task):
            logger.info("task %s: adopting existing Job %s/%s", task.id, task.namespace, task.job_name,
                        extra={"task_id": task.id})
            return LaunchOutcome.ADOPTED
        attempt = "" if task.attempt == 1 else f" (attempt {task.attempt})"
        raise JobConflictError(
            f'a Job named "{task.job_name}" already exists in namespace "{task.namespace}" '
            f"and was not created for this task{attempt}"
        )

    def _forbidden_error(self, task: Task, message: str) -> Exception:
        """JobForbiddenError while the task is within its grace, JobRejectedError after it."""
        now = self._clock.monotonic()
        with self._mutex:
            first_in_namespace = task.namespace not in self._forbidden
            tasks = self._forbidden.setdefault(task.namespace, {})
            since = tasks.setdefault(task.id, now)
            if now - since >= self.forbidden_grace:
                del tasks[task.id]  # the namespace stays in the map: no second warning
                return JobRejectedError(
                    f"{message} (still forbidden after {now - since:.0f}s, jobs.kubernetes.forbidden_grace)"
                )
        if first_in_namespace:
            logger.warning(
                "kubernetes job gateway: creating Jobs in namespace %s is forbidden: %s; its tasks stay "
                "Normal and are retried, and fail if still refused after %.0fs (jobs.kubernetes.forbidden_grace)",
                task.namespace, message, self.forbidden_grace,
            )
        return JobForbiddenError(
            f"Kubernetes API create ({task.namespace}/{task.job_name}) answered 403: {message}", task.namespace
        )

    def _allowed(self, namespace: str) -> None:
        """A create in ``namespace`` went through: its access problem, if any, is over."""
        with self._mutex:
            if self._forbidden.pop(namespace, None) is None:
                return
        logger.info("kubernetes job gateway: creating Jobs in namespace %s is allowed again", namespace)

    def _observe_namespace(self, namespace: str, by_name: Mapping[str, Task]) -> dict[int, JobState]:
        """One LIST of Jobs; one LIST of pods only when some Job failed (and its reason is not known
        yet) or has active pods none of which is ready."""
        states: dict[int, JobState] = {}
        found: dict[int, tuple[Task, dict[str, Any]]] = {}
        uids: dict[tuple[str, str, int, int], str] = {}
        for job in self.watches.jobs(namespace):
            meta = job.get("metadata") or {}
            task = by_name.get(meta.get("name", ""))
            if task is not None and belongs_to(meta.get("labels"), task):
                found[task.id] = (task, job)
                uids[_key(task)] = meta.get("uid") or ""
        with self._mutex:
            self._uids = {k: v for k, v in self._uids.items() if k[0] != namespace} | uids
            known = {uid: state for (ns, uid), state in self._failures.items() if ns == namespace}
        failed, waiting = [], []
        for task_id, (task, job) in found.items():
            state = job.get("state") or job_state(job)  # the watch's cache has it worked out
            uid = (job.get("metadata") or {}).get("uid") or ""
            if state.phase is JobPhase.FAILED:
                state = known.get(uid) or state
                if uid not in known:
                    failed.append((task, job, state))
            elif state.phase is JobPhase.PENDING and not_ready(job):
                waiting.append((task, job))
            states[task_id] = state
        if failed or waiting:
            try:
                pods = self._pods_for(namespace, [t for t, *_ in failed] + [t for t, _ in waiting])
            except BackendUnavailableError as e:  # the Jobs' own states then, reasons on a later cycle
                logger.warning("kubernetes job gateway: cannot list pods in namespace %s: %s", namespace, e)
                return self._with_fatal(namespace, by_name, found, states, waiting)
            for task, job, state in failed:
                states[task.id] = self._explain(task, job, state, pods)
            for task, job in waiting:
                states[task.id] = self._check_waiting(task, job, pods) or states[task.id]
        return self._with_fatal(namespace, by_name, found, states, waiting)

    def _with_fatal(self, namespace: str, by_name: Mapping[str, Task], found: Mapping[int, tuple[Task, Any]],
                    states: dict[int, JobState], waiting: Sequence[tuple[Task, Any]]) -> dict[int, JobState]:
        """Forget what is about Jobs no longer there; report the Jobs we deleted for good."""
        live = {(job.get("metadata") or {}).get("uid") for _, job in found.values()}
        now = self._clock.monotonic()
        with self._mutex:
            self._failures = {k: st for k, st in self._failures.items() if k[0] != namespace or k[1] in live}
            waited = {(job.get("metadata") or {}).get("uid") for _, job in waiting}
            self._waiting_since = {k: t for k, t in self._waiting_since.items()
                                   if k[0] != namespace or k[1] in waited}
            self._fatal = {k: v for k, v in self._fatal.items() if now - v[1] < 3600}
            for task in by_name.values():  # deleted by us for good: still failed, not missing
                if task.id not in states and (verdict := self._fatal.get(_key(task))) is not None:
                    states[task.id] = verdict[0]
        return states

    def _pods_for(self, namespace: str, tasks: Sequence[Task]) -> list[dict[str, Any]]:
        """One (paged) LIST of the pods of these tasks: by their task ids (a set-based selector,
        when they are few), else of every nightwatch pod in the namespace."""
        ids = sorted({str(t.id) for t in tasks})
        selector = MANAGED_SELECTOR + (f",{TASK_ID_LABEL} in ({','.join(ids)})" if len(ids) <= 50 else "")
        try:
            return list(self._pods(namespace, selector))
        except ApiException as e:
            raise self._translate("list", None, e, permanent=False, namespace=namespace) from e

    def _pods(self, namespace: str, selector: str) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self._call("list_pods", self._core().list_namespaced_pod, namespace,
                              label_selector=selector, limit=self._page_size, _continue=token)
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return

    def _explain(self, task: Task, job: dict[str, Any], state: JobState, pods: list[dict[str, Any]]) -> JobState:
        """The failure in the words of the Job's newest pod (and the end of its log), read once."""
        mine = pods_of(job, pods)
        pod = mine[0] if mine else None
        log: list[str] = []
        if pod is not None and (pod.get("status") or {}).get("containerStatuses"):
            try:
                response = self._open("logs", task, self._core().read_namespaced_pod_log,
                                      (pod.get("metadata") or {}).get("name", ""), task.namespace, follow=False,
                                      container=CONTAINER_NAME, tail_lines=LOG_TAIL_LINES)
                # (no limitBytes: it counts from the start, and would cut off the last line)
                log = list(deque(stream_lines(response, LOG_LINE_BYTES), maxlen=LOG_TAIL_LINES))
            except (BackendUnavailableError, JobNotFoundError) as e:
                logger.info("task %s: cannot read the log of its failed pod: %s", task.id, e,
                            extra={"task_id": task.id})
        explained = failure_message(state, pod, log)
        with self._mutex:
            self._failures[(task.namespace, (job.get("metadata") or {}).get("uid") or "")] = explained
        return explained

    def _check_waiting(self, task: Task, job: dict[str, Any], pods: list[dict[str, Any]]) -> JobState | None:
        """Failed for good (and the Job deleted) when its pod has waited on a reason in
        ``FATAL_WAITING`` for ``pending_fatal_grace``; None while it may still get going."""
        uid = (job.get("metadata") or {}).get("uid") or ""
        mine = pods_of(job, pods)
        stuck = fatal_waiting(mine[0]) if mine else None
        now = self._clock.monotonic()
        with self._mutex:
            if stuck is None:
                self._waiting_since.pop((task.namespace, uid), None)
                return None
            since = self._waiting_since.setdefault((task.namespace, uid), now)
        if now - since < self.pending_fatal_grace:
            return None
        reason, message = stuck
        verdict = JobState(JobPhase.FAILED, f"{reason}: {message}" if message else reason, retryable=False)
        logger.info("task %s: its pod waited in %s for %.0fs (jobs.kubernetes.pending_fatal_grace); deleting "
                    "Job %s/%s", task.id, reason, now - since, task.namespace, task.job_name,
                    extra={"task_id": task.id})
        try:
            self._delete(task, uid)  # a 409 (another Job of that name now): this one is gone too
        except BackendUnavailableError as e:  # still Pending: failed only once the Job is gone
            logger.warning("task %s: cannot delete Job %s/%s: %s; trying again next cycle", task.id,
                           task.namespace, task.job_name, e, extra={"task_id": task.id})
            return None
        with self._mutex:
            self._fatal[_key(task)] = (verdict, now)
        return verdict

    def _delete(self, task: Task, uid: str) -> bool:
        """DELETE the Job, propagation Background, only if it still has ``uid``; 404 is fine.
        False when the precondition failed (409: the Job of that name is another one now)."""
        options = k8s.V1DeleteOptions(propagation_policy="Background",
                                      preconditions=k8s.V1Preconditions(uid=uid) if uid else None)
        try:
            self._call("delete", self._batch().delete_namespaced_job, task.job_name, task.namespace,
                       body=options)
            self.watches.forget(task.namespace, task.job_name)
        except ApiException as e:
            if e.status == 404:
                return True
            if e.status == 409:  # the precondition: the Job of that name is another one now
                logger.info("task %s: Job %s/%s changed since it was seen (uid %s)", task.id,
                            task.namespace, task.job_name, uid, extra={"task_id": task.id})
                return False
            raise self._translate("delete", task, e, permanent=False) from e
        return True

    def _open(self, verb: str, task: Task, method: Callable[..., Any], *args: Any, follow: bool,
              **kwargs: Any) -> Any:
        """A streamed request (the log): the raw response, to be read chunk by chunk and released."""
        self._limiter.acquire(self._timeout)
        code = "error"
        # following a quiet Job may wait long between two lines: only connecting is bounded then
        timeout = (self._timeout, FOLLOW_READ_TIMEOUT) if follow else self._timeout
        try:
            if follow:
                kwargs["follow"] = True
            response = method(*args, _request_timeout=timeout, _preload_content=False, **kwargs)
            code = str(response.status)
            return response
        except ApiException as e:
            code = str(e.status)
            if e.status in (400, 404):  # no such pod, or its container has not started yet
                message = status_of(e).get("message") or f"HTTP {e.status}"
                raise JobNotFoundError(f"no log for attempt {task.attempt} of task {task.id}: {message}") from e
            raise self._translate(verb, task, e, permanent=False) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise BackendUnavailableError(f"Kubernetes API {verb} failed: {e}") from e
        finally:
            with self._mutex:
                self.requests[(verb, code)] += 1

    def _connecting(self, verb: str) -> None:
        """A watch request is about to be made: a rate-limit token, and it is counted."""
        self._limiter.acquire(self._timeout)
        with self._mutex:
            self.requests[(verb, "open")] += 1

    def _call(self, verb: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One request: a rate-limit token, a timeout, raw JSON back (no model decoding)."""
        self._limiter.acquire(self._timeout)
        code = "error"
        try:
            response = method(*args, _request_timeout=self._timeout, _preload_content=False, **kwargs)
            try:
                body = response.data
            finally:
                response.release_conn()
            code = str(response.status)
        except ApiException as e:
            code = str(e.status)
            raise
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise BackendUnavailableError(f"Kubernetes API {verb} failed: {e}") from e
        finally:
            with self._mutex:
                self.requests[(verb, code)] += 1
        try:
            return json.loads(body) if body else {}
        except ValueError as e:
            raise BackendUnavailableError(f"Kubernetes API {verb}: the answer is not JSON: {e}") from e

    _translate = staticmethod(translate)

    def _batch(self) -> k8s.BatchV1Api:
        with self._mutex:
            if self._closed.is_set():
                raise BackendUnavailableError("the Kubernetes job gateway is closed")
            if self._api is None:
                self._client = k8s.ApiClient(self._configuration())
                self._api = k8s.BatchV1Api(self._client)
                self._core_api = k8s.CoreV1Api(self._client)
            return self._api

    def _core(self) -> k8s.CoreV1Api:
        self._batch()
        with self._mutex:
            if self._core_api is None:
                raise BackendUnavailableError("the Kubernetes job gateway is closed")
            return self._core_api

    def _configuration(self) -> k8s.Configuration:
        return configuration(self._kubeconfig, self._context)


def _label_path(label: str) -> str:
    return "/metadata/labels/" + label.replace("~", "~0").replace("/", "~1")


def _key(task: Task) -> tuple[str, str, int, int]:
    return (task.namespace, task.job_name, task.id, task.attempt)
