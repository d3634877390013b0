"""KubernetesJobGateway: ``batch/v1`` Jobs on any API server, through the official client.

- Config: ``kubeconfig: null`` → in-cluster service account inside a pod
  (``KUBERNETES_SERVICE_HOST`` set), else ``$KUBECONFIG``, else ``~/.kube/config``;
  ``context`` picks a kubeconfig context. Loaded into this gateway's own ``Configuration``
  on the first call (the client's global default is never touched).
- Every request carries ``_request_timeout`` and first takes a token from a client-side
  rate limiter (``qps``, ``burst``). urllib3 does not retry: a failure is reported at once
  and the task watcher retries on a later cycle, with backoff.
- Launch is exactly-once: the Job is named after the task; AlreadyExists with this task's
  ``nightwatch.io/task-id`` label is adopted, with another label it is a conflict.
- A create refused by RBAC (403 ``Forbidden`` from the API server, not a quota) is an
  operator's error, often a RoleBinding lagging a config change: ``JobForbiddenError``
  (the task stays ``Normal`` and backs off), one warning per namespace, and the task fails
  with the API server's message only once it has been refused for ``forbidden_grace``.
- Observe costs one paged LIST per namespace (label selector, ``limit`` + ``continue``).
- ``requests`` counts every call by (verb, HTTP code or "error") for the metrics.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.jobs.manifest import build_job_manifest, job_state
from nightwatch.domain.constants import MANAGED_SELECTOR, TASK_ID_LABEL
from nightwatch.domain.errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidTaskSpecError,
    JobConflictError,
    JobForbiddenError,
    JobRejectedError,
)
from nightwatch.domain.jobspec import JobDefaults, JobSpec, validate_job_name
from nightwatch.domain.model import JobPhase, JobState, Task
from nightwatch.domain.ports import Clock, JobGateway, LaunchOutcome

try:
    import urllib3
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes.client.exceptions import ApiException
except ImportError as e:  # pragma: no cover - the package is a declared dependency
    raise ImportError(
        "jobs.backend: kubernetes needs the official client: pip install 'kubernetes>=31,<38'"
    ) from e

logger = logging.getLogger(__name__)

# Refusals that are the task's own fault: fail it with the API server's message.
# 401 (bad credentials), 408, 409 other than AlreadyExists, 429 and 5xx are transient; a 403
# quota refusal is transient, and an RBAC one (reason Forbidden) waits out forbidden_grace.
_PERMANENT = frozenset({400, 403, 404, 405, 406, 413, 415, 422})


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; like Go's ``rate.Limiter.Wait``.

    Written here rather than imported: it is twenty lines, in-process and synchronous, and
    the maintained libraries (pyrate-limiter, limits) bring storage backends and async
    machinery it does not need -- not worth a new runtime dependency.
    """

    def __init__(self, rate: float, burst: int, clock: Clock, closed: threading.Event) -> None:
        self._rate = rate
        self._burst = max(1, burst)
        self._clock = clock
        self._closed = closed
        self._tokens = float(self._burst)
        self._stamp = clock.monotonic()
        self._mutex = threading.Lock()

    def acquire(self, timeout: float) -> None:
        """Take one token, waiting at most ``timeout`` s; else BackendUnavailableError."""
        if self._rate <= 0:  # qps 0 = no client-side limit
            return
        with self._mutex:
            now = self._clock.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            wait = (1 - self._tokens) / self._rate if self._tokens < 1 else 0.0
            if wait > timeout:
                raise BackendUnavailableError(
                    f"client-side rate limit (jobs.kubernetes.qps {self._rate:g}): no request slot "
                    f"within {timeout:g}s", retry_after=wait,
                )
            self._tokens -= 1  # a reservation: later callers queue behind this one
        if wait > 0 and self._closed.wait(wait):
            raise BackendUnavailableError("the Kubernetes job gateway is closed")


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
    ) -> None:
        if request_timeout <= 0:
            raise ConfigError("jobs.kubernetes.request_timeout must be a positive duration")
        if page_size <= 0:
            raise ConfigError("the Kubernetes LIST page size must be positive")
        if forbidden_grace <= 0:
            raise ConfigError("jobs.kubernetes.forbidden_grace must be a positive duration")
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
        self._mutex = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()  # (verb, code) -> calls

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
        try:
            self._call("create", api.create_namespaced_job, task.namespace, manifest)
        except ApiException as e:
            status = _status(e)
            if e.status == 409 and status.get("reason") == "AlreadyExists":
                self._allowed(task.namespace)
                return self._adopt(task)
            if _is_forbidden(e, status, status.get("message") or ""):
                raise self._forbidden_error(task, status.get("message") or "forbidden") from e
            raise self._translate("create", task, e, permanent=True) from e
        self._allowed(task.namespace)
        return LaunchOutcome.CREATED

    def observe(self, tasks: Sequence[Task]) -> Mapping[int, JobState]:
        wanted: dict[str, dict[tuple[str, str], int]] = defaultdict(dict)
        for task in tasks:
            wanted[task.namespace][(str(task.id), task.name)] = task.id
        states: dict[int, JobState] = {}
        for namespace, by_key in wanted.items():
            try:
                for job in self._list(namespace):
                    meta = job.get("metadata") or {}
                    label = (meta.get("labels") or {}).get(TASK_ID_LABEL, "")
                    task_id = by_key.get((label, meta.get("name", "")))
                    if task_id is not None:
                        states[task_id] = job_state(job)
            except BackendUnavailableError as e:
                # One namespace's failure (say, its RoleBinding was removed) must neither stall
                # the others nor count its Jobs as missing: report them as not observed.
                logger.warning("kubernetes job gateway: cannot list Jobs in namespace %s: %s", namespace, e)
                unknown = JobState(JobPhase.UNKNOWN, str(e))
                states.update({task_id: unknown for task_id in by_key.values()})
        return states

    def check(self) -> None:
        """Load the client configuration now (no request), so a bad kubeconfig stops start-up."""
        self._batch()

    def close(self) -> None:
        self._closed.set()
        with self._mutex:
            if self._client is not None:
                self._client.close()  # type: ignore[no-untyped-call]
            self._client = self._api = None

    # -- calls -----------------------------------------------------------------------------

    def _adopt(self, task: Task) -> LaunchOutcome:
        try:
            job = self._call("get", self._batch().read_namespaced_job, task.name, task.namespace)
        except ApiException as e:
            if e.status == 404:  # deleted between our create and our read: create it next time
                raise BackendUnavailableError(
                    f"Job {task.namespace}/{task.name} already existed but is gone now; will create it again"
                ) from e
            raise self._translate("get", task, e, permanent=False) from e
        labels = (job.get("metadata") or {}).get("labels") or {}
        if labels.get(TASK_ID_LABEL) == str(task.id):
            logger.info("task %s: adopting existing Job %s/%s", task.id, task.namespace, task.name,
                        extra={"task_id": task.id})
            return LaunchOutcome.ADOPTED
        raise JobConflictError(
            f'a Job named "{task.name}" already exists in namespace "{task.namespace}" '
            "and was not created for this task"
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
            f"Kubernetes API create ({task.namespace}/{task.name}) answered 403: {message}", task.namespace
        )

    def _allowed(self, namespace: str) -> None:
        """A create in ``namespace`` went through: its access problem, if any, is over."""
        with self._mutex:
            if self._forbidden.pop(namespace, None) is None:
                return
        logger.info("kubernetes job gateway: creating Jobs in namespace %s is allowed again", namespace)

    def _list(self, namespace: str) -> Iterator[dict[str, Any]]:
        """Every nightwatch Job of ``namespace``, one page of ``page_size`` per request."""
        token: str | None = None
        while True:
            try:
                page = self._call(
                    "list", self._batch().list_namespaced_job, namespace,
                    label_selector=MANAGED_SELECTOR, limit=self._page_size, _continue=token,
                )
            except ApiException as e:  # nothing here is any one task's fault
                raise self._translate("list", None, e, permanent=False, namespace=namespace) from e
            yield from page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or None
            if token is None:
                return

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

    def _translate(
        self, verb: str, task: Task | None, e: ApiException, *, permanent: bool, namespace: str = ""
    ) -> Exception:
        status = _status(e)
        message = status.get("message") or f"HTTP {e.status} {e.reason or ''}".strip()
        if permanent and e.status in _PERMANENT and _is_refusal(e, status, message):
            return JobRejectedError(message)
        where = f"{task.namespace}/{task.name}" if task else f"namespace {namespace}"
        return BackendUnavailableError(
            f"Kubernetes API {verb} ({where}) answered {e.status}: {message}",
            retry_after=_retry_after(e) if e.status == 429 else None,
        )

    def _batch(self) -> k8s.BatchV1Api:
        with self._mutex:
            if self._closed.is_set():
                raise BackendUnavailableError("the Kubernetes job gateway is closed")
            if self._api is None:
                self._client = k8s.ApiClient(self._configuration())
                self._api = k8s.BatchV1Api(self._client)
            return self._api

    def _configuration(self) -> k8s.Configuration:
        cfg = k8s.Configuration()
        in_cluster = self._kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        source = "the in-cluster service account" if in_cluster else (
            self._kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        )
        try:
            if in_cluster:
                k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            else:
                k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                    # the client splits a $KUBECONFIG list on ":" and expands each path itself
                    config_file=source, context=self._context,
                    client_configuration=cfg, persist_config=False,
                )
        except (k8s_config.ConfigException, OSError, ValueError) as e:
            raise ConfigError(
                f"jobs.kubernetes: cannot load the client configuration from {source}"
                f"{f' (context {self._context!r})' if self._context else ''}: {e}"
            ) from e
        # No urllib3 retries (not even its default 3): never block a cycle retrying.
        cfg.retries = urllib3.Retry(total=0, redirect=0, raise_on_status=False)
        cfg.connection_pool_maxsize = 32  # the task watcher's workers share the pool
        logger.info("kubernetes job gateway: API server %s (config from %s)", cfg.host, source)
        return cfg


def _is_refusal(e: ApiException, status: dict[str, Any], message: str) -> bool:
    """Whether the API server itself refused, for good. A 404 or 403 without a ``Status``
    body came from something in front of it (a proxy, a wrong path); a quota refusal
    passes once other Jobs finish. Both are retried instead of failing the task."""
    if status.get("kind") != "Status":
        return False
    return not (e.status == 403 and "exceeded quota" in message)


def _is_forbidden(e: ApiException, status: dict[str, Any], message: str) -> bool:
    """A 403 ``Forbidden`` from the API server itself (RBAC), other than a quota refusal."""
    return (e.status == 403 and status.get("kind") == "Status" and status.get("reason") == "Forbidden"
            and "exceeded quota" not in message)


def _status(e: ApiException) -> dict[str, Any]:
    """The ``Status`` object the API server sent with an error, or {}."""
    try:
        body = json.loads(e.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(e: ApiException) -> float | None:
    value = (e.headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None
