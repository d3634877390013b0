"""An in-process stand-in for the Kubernetes API server: the ``batch/v1`` Jobs calls nightwatch
makes, answered as the real server answers them.

- bearer-token auth (401 ``Status`` otherwise);
- ``POST /apis/batch/v1/namespaces/{ns}/jobs``: 201; 409 AlreadyExists; 404
  ``namespaces "demo" not found``; 403 for namespaces configured forbidden; 400 for a body
  that cannot be decoded as a Job (a malformed quantity, a namespace mismatch); 422 Invalid for
  a bad name, no containers, a missing image, a ``restartPolicy`` other than Never/OnFailure,
  or resource requests above their limits -- with the real server's ``Status`` bodies;
- ``GET`` one Job (404 when missing), ``DELETE`` one Job (its pods too unless propagation is
  Orphan; a ``preconditions.uid`` that does not match is a 409), ``LIST`` in a namespace or in
  all, with equality/inequality/existence and ``in``/``notin`` label selectors and
  ``limit``/``continue`` paging;
- one pod per Job, made with it and following it (Pending, Running, Succeeded/Failed with a
  ``terminated`` container state); ``script_pod`` sets its exit code and reason, or the pod's
  own failure reason (``Evicted``), and ``wait_on`` keeps it waiting (``ImagePullBackOff``) with
  the Job ``active: 1, ready: 0``; ``LIST`` pods (``/api/v1/namespaces/{ns}/pods``) as Jobs;
  ``GET .../pods/{name}/log`` with ``tailLines``, ``limitBytes`` and ``follow`` (streamed,
  chunked, until the Job finishes); ``write_log`` appends to a pod's log;
- fault injection: every request of a verb in ``fail_verbs`` is answered 500; a fraction
  ``fault_rate`` of requests (seeded RNG) is answered 429 with
  ``Retry-After``, 500, or 504 *after* the request took effect (a create whose answer is lost);
- Jobs move created → active → Complete/Failed by a rule on the stand-in's clock
  (``start_after``/``finish_after`` seconds after creation; ``fails(job)`` picks the outcome,
  by default a Job whose command is ``false`` fails) or by explicit ``start``/``finish`` calls;
  ``delete_job`` removes one behind nightwatch's back;
- ``?watch=1`` on the Job list: a stream of ADDED/MODIFIED/DELETED/BOOKMARK events as JSON
  lines, with expiring resourceVersions (410), cut and stalled streams and a dropped event on
  demand (``k8s_standin_watch``; ``watches`` is its event log); ``PATCH`` of a Job (JSON
  Patch, merge or strategic merge patch, as the client sends); ``delete_namespace``; ``seed``
  loads many Jobs at once (benchmarks);
- ``requests`` counts requests by verb (``create``, ``get``, ``list``, ``watch``, ``patch``,
  ``delete``, ``list_pods``, ``logs``), ``paths`` by (HTTP method, path without the query), and
  ``created`` counts successful creations per (namespace, name).

``write_kubeconfig`` writes a kubeconfig for it, so tests go through the real client, its
config loading and its HTTP path.
"""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from copy import deepcopy
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from k8s_standin_watch import EventLog, StreamCut, gone, json_patch, merge_patch
from kubernetes.utils.quantity import parse_quantity

from nightwatch.adapters.clock import SystemClock
from nightwatch.domain.ports import Clock

TOKEN = "nightwatch-test-token"
USER = "system:serviceaccount:nightwatch:nightwatch"
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_JOBS = re.compile(r"^/apis/batch/v1/(?:namespaces/([^/]+)/)?jobs(?:/([^/]+))?/?$")
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+)/(log))?/?$")


class StandInError(Exception):
    """An error answer: HTTP code, reason and message, as a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details or {}
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _fails_by_command(job: dict[str, Any]) -> bool:
    containers = job["spec"]["template"]["spec"].get("containers") or [{}]
    return (containers[0].get("command") or [""])[0] == "false"


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiStandIn:
    def __init__(
        self,
        *,
        namespaces: Iterable[str] = ("default",),
        forbidden: Iterable[str] = (),
        token: str = TOKEN,
        clock: Clock | None = None,
        start_after: float | None = 0.0,
        finish_after: float | None = None,
        fails: Callable[[dict[str, Any]], bool] = _fails_by_command,
        fault_rate: float = 0.0,
        fault_kinds: Iterable[str] = ("429", "500"),
        retry_after: int = 1,
        seed: int = 0,
        latency: float = 0.0,
        bookmark_every: float = 0.05,  # seconds between BOOKMARK events on a watch that asked for them
    ) -> None:
        self.namespaces = set(namespaces)
        self.forbidden = set(forbidden)
        self.token = token
        self.clock = clock or SystemClock()
        self.start_after = start_after
        self.finish_after = finish_after
        self.fails = fails
        self.fault_rate = fault_rate
        self.fault_kinds = tuple(fault_kinds)
        self.retry_after = retry_after
        self._rng = random.Random(seed)
        self.latency = latency  # seconds each answer is held back (timeout tests)
        self._mutex = threading.RLock()
        self._jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self._born: dict[tuple[str, str], float] = {}  # monotonic creation time
        self._pinned: set[tuple[str, str]] = set()  # status set by hand: the time rule leaves it
        self._rv = 1000
        self._pods: dict[tuple[str, str], dict[str, Any]] = {}  # (ns, Job name) -> its one pod
        self._scripts: dict[tuple[str, str], dict[str, Any]] = {}  # (ns, Job name) -> pod overrides
        self._logs: dict[tuple[str, str], bytearray] = {}  # (ns, Job name) -> its pod's log
        self.requests: Counter[str] = Counter()  # verb -> requests (all answers)
        self.paths: Counter[tuple[str, str]] = Counter()  # (method, path) -> requests
        self.answers: Counter[tuple[str, int]] = Counter()  # (verb, code) -> requests
        self.faults: Counter[str] = Counter()  # fault kind -> injected
        self.fail_verbs: set[str] = set()  # verbs answered 500 (e.g. "list_pods")
        self.created: Counter[tuple[str, str]] = Counter()  # (ns, name) -> successful creations
        self.received: list[dict[str, Any]] = []  # bodies of accepted creates, as sent
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.watches = EventLog(self._mutex)
        self.watches.bookmark_every = bookmark_every
        self._moving: set[tuple[str, str]] = set()  # Jobs the time rule may still move

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> ApiStandIn:
        standin = self

        class Handler(_Handler):
            api = standin

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="k8s-standin",
                                        daemon=True)
        self._thread.start()
        if self.start_after is not None or self.finish_after is not None:
            threading.Thread(target=self._tick, name="k8s-standin-tick", daemon=True).start()
        return self

    def _tick(self) -> None:
        """Move Jobs by the time rule as they are due, so watches see them change."""
        while not self.watches.closed.wait(0.02):
            self.tick()

    def tick(self) -> None:
        """Move the Jobs that are due by the time rule now (the ticker does it every 20 ms)."""
        with self._mutex:
            for key in list(self._moving):
                job = self._jobs.get(key)
                if job is None or key in self._pinned or _finished(self._progress(key, job)):
                    self._moving.discard(key)

    def stop(self) -> None:
        self.watches.closed.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ApiStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- what tests drive and read ---------------------------------------------------------

    def add_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create a Job directly, as another client of the cluster would."""
        with self._mutex:
            return deepcopy(self._create(manifest["metadata"]["namespace"], deepcopy(manifest)))

    def delete_job(self, namespace: str, name: str) -> None:
        """Remove a Job (and its pod) behind nightwatch's back."""
        with self._mutex:
            self._record("DELETED", (namespace, name), self._jobs.pop((namespace, name)))
            self._drop_pod((namespace, name))

    def delete_namespace(self, namespace: str) -> None:
        """The namespace and every Job in it go."""
        with self._mutex:
            for key in [k for k in self._jobs if k[0] == namespace]:
                self.delete_job(*key)
            self.namespaces.discard(namespace)

    def seed(self, namespace: str, count: int, *, labels: dict[str, str], first_id: int = 1,
             finished: bool = True) -> None:
        """``count`` Jobs ``seed-<id>`` with ``labels`` (and task ids from ``first_id``), finished or
        running, without pods or watch events; then every older resourceVersion expires."""
        with self._mutex:
            self.namespaces.add(namespace)
            for task_id in range(first_id, first_id + count):
                self._rv += 1
                key = (namespace, f"seed-{task_id}")
                self._jobs[key] = {
                    "metadata": {"name": key[1], "namespace": namespace, "uid": str(uuid.uuid4()),
                                 "resourceVersion": str(self._rv), "creationTimestamp": "2026-01-01T00:00:00Z",
                                 "labels": {**labels, "nightwatch.io/task-id": str(task_id),
                                            "nightwatch.io/attempt": "1"}},
                    "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "task"}]}}},
                    "status": ({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
                               if finished else {"active": 1, "ready": 1}),
                }
                self._pinned.add(key)
            self.watches.expire(self._rv)

    def expire(self) -> None:
        """Every resourceVersion handed out so far expires: watching from one is 410 Gone."""
        with self._mutex:
            self.watches.expire(self._rv)

    def _record(self, kind: str, key: tuple[str, str], job: dict[str, Any],
                old_labels: dict[str, str] | None = None) -> None:
        """A change of a Job (under the mutex): the next resourceVersion, an entry in the event log."""
        self._rv += 1
        job["metadata"]["resourceVersion"] = str(self._rv)
        labels = job["metadata"].get("labels") or {}
        self.watches.record(self._rv, kind, key[0], job, labels if old_labels is None else old_labels)

    def script_pod(self, namespace: str, name: str, *, exit_code: int | None = None, reason: str | None = None,
                   pod_reason: str | None = None, pod_message: str = "") -> None:
        """How the Job's pod ends when the Job fails: its container's exit code and reason
        (default 1, ``Error``), or the pod's own failure (``pod_reason``: Evicted...)."""
        with self._mutex:
            script = self._scripts.setdefault((namespace, name), {})
            script.update({k: v for k, v in (("exit_code", exit_code), ("reason", reason),
                                             ("pod_reason", pod_reason), ("pod_message", pod_message))
                           if v is not None})

    def wait_on(self, namespace: str, name: str, reason: str = "ImagePullBackOff",
                message: str = 'Back-off pulling image "alpin"') -> None:
        """Keep the Job's pod waiting (its container not started) for ``reason``: the Job reads
        ``active: 1, ready: 0`` until ``start_job``/``finish``."""
        with self._mutex:
            self._scripts.setdefault((namespace, name), {})["waiting"] = (reason, message)
        self._set_status(namespace, name, lambda job: {"active": 1, "ready": 0, "terminating": 0,
                                                       "startTime": _rfc3339(self.clock.now()),
                                                       "uncountedTerminatedPods": {}})

    def write_log(self, namespace: str, name: str, text: str) -> None:
        """Append to the log of the Job's pod."""
        with self._mutex:
            self._logs.setdefault((namespace, name), bytearray()).extend(text.encode())

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod of Job ``name``, as the API shows it now."""
        with self._mutex:
            job = self._jobs.get((namespace, name))
            if job is not None:
                self._progress((namespace, name), job)
            pod = self._pods.get((namespace, name))
            return deepcopy(pod) if pod else None

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._mutex:
            job = self._jobs.get((namespace, name))
            return deepcopy(self._progress((namespace, name), job)) if job else None

    def jobs(self, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._mutex:
            return [deepcopy(self._progress(k, j)) for k, j in sorted(self._jobs.items())
                    if namespace is None or k[0] == namespace]

    def start_job(self, namespace: str, name: str) -> None:
        with self._mutex:
            self._scripts.get((namespace, name), {}).pop("waiting", None)
        self._set_status(namespace, name, self._running_status)

    def finish(self, namespace: str, name: str, ok: bool = True, reason: str = "BackoffLimitExceeded",
               message: str = "Job has reached the specified backoff limit") -> None:
        self._set_status(
            namespace, name,
            lambda job: self._succeeded_status(job) if ok else self._failed_status(job, reason, message),
        )

    def suspend(self, namespace: str, name: str) -> None:
        def suspended(job: dict[str, Any]) -> dict[str, Any]:
            job["spec"]["suspend"] = True
            return {"conditions": [self._condition("Suspended", "JobSuspended", "Job suspended")]}

        self._set_status(namespace, name, suspended)

    @property
    def rv(self) -> int:
        """The newest resourceVersion handed out."""
        with self._mutex:
            return self._rv

    def settle(self, gateway: Any, timeout: float = 10.0) -> None:
        """Wait until every watch of ``gateway`` (a KubernetesJobGateway) is connected, healthy and
        has seen every change made so far (bookmarks carry the newest resourceVersion)."""
        self.tick()
        wanted = self.rv
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            watches = gateway.watches.all()
            if all(w.healthy and w.streaming and int(w.resource_version or 0) >= wanted for w in watches):
                return
            time.sleep(0.01)
        raise AssertionError(f"the gateway's watches did not catch up with resourceVersion {wanted}")

    def reset_counts(self) -> None:
        with self._mutex:
            self.requests.clear()
            self.paths.clear()
            self.answers.clear()
            self.faults.clear()

    # -- the API ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any],
                                                                                 dict[str, str]]:
        """One request → (code, JSON body, extra headers)."""
        parts = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        route = _JOBS.match(parts.path)
        pods = _PODS.match(parts.path)
        verb, namespace, name = "other", None, None
        if route:
            namespace, name = route.groups()
            verb = {"POST": "create", "DELETE": "delete", "PATCH": "patch"}.get(method, "get" if name else "list")
            if verb == "list" and query.get("watch") in ("1", "true"):
                verb = "watch"
        elif pods:
            namespace, name, _ = pods.groups()
            verb = "logs" if name else "list_pods"
        with self._mutex:
            self.requests[verb] += 1
            self.paths[(method, parts.path)] += 1
        if self.latency:
            time.sleep(self.latency)
        try:
            self._authenticate(headers)
            if parts.path.rstrip("/") == "/version":
                return 200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0-standin",
                             "gitCommit": "0" * 40, "gitTreeState": "clean",
                             "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                             "compiler": "gc", "platform": "linux/amd64"}, {}
            if route is None and pods is None:
                raise StandInError(404, "NotFound", "the server could not find the requested resource")
            fault = "500" if verb in self.fail_verbs else self._fault()
            if fault == "429":
                raise StandInError(429, "TooManyRequests", "Too many requests, please try again later.",
                                   {"retryAfterSeconds": self.retry_after},
                                   {"Retry-After": str(self.retry_after)})
            if fault == "500":
                raise StandInError(500, "InternalError",
                                   "Internal error occurred: injected fault (etcdserver: leader changed)")
            code, answer = self._serve(method, verb, namespace, name, query, body,
                                       headers.get("Content-Type") or "")
            if fault == "504":  # the request took effect, but its answer is lost
                raise StandInError(504, "Timeout",
                                   "Timeout: request did not complete within the allotted timeout")
        except StandInError as e:
            code, answer, extra = e.code, e.status(), e.headers
        else:
            extra = {}
        with self._mutex:
            self.answers[(verb, code)] += 1
        return code, answer, extra

    def _authenticate(self, headers: Any) -> None:
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or token != self.token:
            raise StandInError(401, "Unauthorized", "Unauthorized")

    def _fault(self) -> str | None:
        with self._mutex:
            if self.fault_rate and self._rng.random() < self.fault_rate:
                kind = self._rng.choice(self.fault_kinds)
                self.faults[kind] += 1
                return kind
        return None

    def _serve(self, method: str, verb: str, namespace: str | None, name: str | None,
               query: dict[str, str], body: bytes, content_type: str = "") -> tuple[int, dict[str, Any]]:
        if verb == "list_pods" and method == "GET" and namespace:
            return 200, self._list_pods(namespace, query)
        if verb == "logs" and method == "GET" and namespace and name:
            return 200, {"__log__": self._log_of(namespace, name, query)}
        if namespace in self.forbidden:
            what = {"create": "create", "get": "get", "list": "list", "delete": "delete"}.get(verb, verb)
            raise StandInError(
                403, "Forbidden",
                f'jobs.batch{f" {json.dumps(name)}" if name else ""} is forbidden: User "{USER}" cannot '
                f'{what} resource "jobs" in API group "batch" in the namespace "{namespace}"',
                {"name": name or "", "group": "batch", "kind": "jobs"},
            )
        if method == "POST" and name is None and namespace:
            return 201, self._post(namespace, body)
        if verb == "watch" and namespace:
            return 200, {"__watch__": self._watch(namespace, query)}
        if verb == "patch" and namespace and name:
            return 200, self._patch(namespace, name, body, content_type)
        if method == "GET" and name is None:
            return 200, self._list(namespace, query)
        if method == "GET" and namespace and name:
            with self._mutex:
                job = self._jobs.get((namespace, name))
                if job is None:
                    raise _not_found(name)
                return 200, self._progress((namespace, name), job)
        if method == "DELETE" and namespace and name:
            options = json.loads(body) if body else {}
            policy = query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
            wanted_uid = (options.get("preconditions") or {}).get("uid")
            with self._mutex:
                job = self._jobs.get((namespace, name))
                if job is None:
                    raise _not_found(name)
                uid = job["metadata"]["uid"]
                if wanted_uid and wanted_uid != uid:
                    raise StandInError(409, "Conflict", f"Operation cannot be fulfilled on jobs.batch \"{name}\": "
                                                        f"Precondition failed: UID in precondition: {wanted_uid}, "
                                                        f"UID in object meta: {uid}",
                                       {"name": name, "group": "batch", "kind": "jobs"})
                self._record("DELETED", (namespace, name), self._jobs.pop((namespace, name)))
                if policy != "Orphan":
                    self._drop_pod((namespace, name))
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": name, "group": "batch", "kind": "jobs"}}
        raise StandInError(405, "MethodNotAllowed", f"the server does not allow this method on the "
                                                    f"requested resource ({method})")

    def _post(self, namespace: str, body: bytes) -> dict[str, Any]:
        try:
            job, sent = json.loads(body), json.loads(body)
        except ValueError as e:
            raise StandInError(400, "BadRequest", f"the object provided is unrecognized: {e}") from None
        if not isinstance(job, dict) or job.get("kind") != "Job" or job.get("apiVersion") != "batch/v1":
            raise StandInError(400, "BadRequest", "the object provided is unrecognized (must be batch/v1 Job)")
        _check_quantities(job)
        meta = job.setdefault("metadata", {})
        if meta.get("namespace", namespace) != namespace:
            raise StandInError(400, "BadRequest", "the namespace of the provided object does not match "
                                                  "the namespace sent on the request")
        if namespace not in self.namespaces:
            raise StandInError(404, "NotFound", f'namespaces "{namespace}" not found',
                               {"name": namespace, "kind": "namespaces"})
        _validate(job)
        with self._mutex:
            created = self._create(namespace, job)
            self.created[(namespace, meta["name"])] += 1
            self.received.append(sent)
            return deepcopy(created)

    def _create(self, namespace: str, job: dict[str, Any]) -> dict[str, Any]:
        meta = job.setdefault("metadata", {})
        key = (namespace, meta.get("name", ""))
        if key in self._jobs:
            raise StandInError(409, "AlreadyExists", f'jobs.batch "{key[1]}" already exists',
                               {"name": key[1], "group": "batch", "kind": "jobs"})
        uid = str(uuid.uuid4())
        self._rv += 1
        meta.update(namespace=namespace, uid=uid, resourceVersion=str(self._rv), generation=1,
                    creationTimestamp=_rfc3339(self.clock.now()))
        spec = job.setdefault("spec", {})
        for field, default in (("parallelism", 1), ("completions", 1), ("backoffLimit", 6),
                               ("completionMode", "NonIndexed"), ("suspend", False)):
            spec.setdefault(field, default)
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
        template_meta.setdefault("labels", {}).update({
            "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": key[1],
            "controller-uid": uid, "job-name": key[1],
        })
        job["status"] = {}
        self._jobs[key] = job
        self._born[key] = self.clock.monotonic()
        self._pinned.discard(key)
        self._moving.add(key)
        self._make_pod(key, job)
        self.watches.record(self._rv, "ADDED", namespace, job, meta.get("labels") or {})
        return job

    def _watch(self, namespace: str, query: dict[str, str]) -> Any:
        rv = int(query.get("resourceVersion") or 0)
        if not self.watches.check(rv, self.rv) and self.watches.expire_as == "http":
            raise StandInError(410, "Expired", gone(rv)["message"])
        with self._mutex:
            if rv == 0:  # "any": start from now (nightwatch always LISTs first)
                rv = self._rv
        return self.watches.stream(namespace, _parse_selector(query.get("labelSelector", "")), rv,
                                   float(query.get("timeoutSeconds") or 1800),
                                   query.get("allowWatchBookmarks") in ("1", "true"), lambda: self._rv)

    def _patch(self, namespace: str, name: str, body: bytes, content_type: str) -> dict[str, Any]:
        """Labels and annotations only (all nightwatch patches): JSON Patch or merge patch."""
        with self._mutex:
            job = self._jobs.get((namespace, name))
            if job is None:
                raise _not_found(name)
            patched = deepcopy(job)
            try:
                ops = json.loads(body)
                if "json-patch" in content_type:
                    json_patch(patched, ops)
                elif "merge-patch" in content_type:
                    merge_patch(patched, ops)
                else:
                    raise StandInError(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                                                                    f"format - accepted media types include: ... "
                                                                    f"(got {content_type!r})")
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise StandInError(422, "Invalid", f'Job.batch "{name}" is invalid: {e}') from None
            old_labels = dict(job["metadata"].get("labels") or {})
            job["metadata"]["labels"] = patched["metadata"].get("labels") or {}
            job["metadata"]["annotations"] = patched["metadata"].get("annotations") or {}
            if not job["metadata"]["annotations"]:
                del job["metadata"]["annotations"]
            self._record("MODIFIED", (namespace, name), job, old_labels)
            return deepcopy(job)

    # -- pods ------------------------------------------------------------------------------

    def _make_pod(self, key: tuple[str, str], job: dict[str, Any]) -> None:
        labels = dict(((job["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {})
        name = f"{key[1]}-{uuid.uuid4().hex[:5]}"
        self._pods[key] = {
            "metadata": {"name": name, "namespace": key[0], "uid": str(uuid.uuid4()), "labels": labels,
                         "creationTimestamp": _rfc3339(self.clock.now()),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": key[1],
                                              "uid": job["metadata"]["uid"], "controller": True}]},
            "spec": deepcopy((job["spec"].get("template") or {}).get("spec") or {}),
            "status": {"phase": "Pending"},
        }
        self._logs.setdefault(key, bytearray())

    def _drop_pod(self, key: tuple[str, str]) -> None:
        self._pods.pop(key, None)
        self._logs.pop(key, None)
        self._scripts.pop(key, None)

    def _sync_pod(self, key: tuple[str, str], job: dict[str, Any]) -> None:
        """The pod follows its Job: waiting, running, or terminated as scripted."""
        pod = self._pods.get(key)
        if pod is None:
            return
        script = self._scripts.get(key, {})
        status = job["status"]
        conditions = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
        container = ((pod["spec"].get("containers") or [{}])[0]).get("name", "task")
        if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
            pod["status"] = {"phase": "Succeeded", "containerStatuses": [
                {"name": container, "ready": False, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}
        elif "Failed" in conditions or "FailureTarget" in conditions:
            if script.get("pod_reason"):
                pod["status"] = {"phase": "Failed", "reason": script["pod_reason"],
                                 "message": script.get("pod_message", "")}
            else:
                pod["status"] = {"phase": "Failed", "containerStatuses": [
                    {"name": container, "ready": False, "restartCount": 0,
                     "state": {"terminated": {"exitCode": script.get("exit_code", 1),
                                              "reason": script.get("reason", "Error")}}}]}
        elif "waiting" in script:
            reason, message = script["waiting"]
            pod["status"] = {"phase": "Pending", "containerStatuses": [
                {"name": container, "ready": False, "restartCount": 0,
                 "state": {"waiting": {"reason": reason, "message": message}}}]}
        elif status.get("active"):
            pod["status"] = {"phase": "Running", "containerStatuses": [
                {"name": container, "ready": True, "restartCount": 0,
                 "state": {"running": {"startedAt": status.get("startTime")}}}]}

    def _list_pods(self, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        selector = _parse_selector(query.get("labelSelector", ""))
        limit = int(query.get("limit") or 0)
        start = query.get("continue") or ""
        with self._mutex:
            for key, job in list(self._jobs.items()):
                if key[0] == namespace:
                    self._progress(key, job)
            pods = sorted((p for k, p in self._pods.items() if k[0] == namespace
                           and selector(p["metadata"].get("labels") or {}) and p["metadata"]["name"] > start),
                          key=lambda p: p["metadata"]["name"])
            page = pods[:limit] if limit else pods
            meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
            if limit and len(pods) > limit:
                meta["continue"] = page[-1]["metadata"]["name"]
            return {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": deepcopy(page)}

    def _log_of(self, namespace: str, pod_name: str, query: dict[str, str]) -> Any:
        with self._mutex:
            key = next((k for k, p in self._pods.items() if k[0] == namespace
                        and p["metadata"]["name"] == pod_name), None)
            if key is None:
                raise StandInError(404, "NotFound", f'pods "{pod_name}" not found',
                                   {"name": pod_name, "kind": "pods"})
            job = self._jobs.get(key)
            if job is not None:
                self._progress(key, job)
            state = self._pods[key]["status"]
            if state.get("phase") == "Pending":
                waiting = (((state.get("containerStatuses") or [{}])[0].get("state") or {}).get("waiting") or {})
                raise StandInError(400, "BadRequest", f'container "task" in pod "{pod_name}" is waiting to start: '
                                                      f'{waiting.get("reason") or "ContainerCreating"}')
            data = bytes(self._logs.get(key, b""))
        if "tailLines" in query:
            n = int(query["tailLines"])
            kept = data.splitlines(keepends=True)
            data = b"".join(kept[-n:]) if n > 0 else b""
        if "limitBytes" in query:
            data = data[: int(query["limitBytes"])]
        if query.get("follow") != "true":
            return data
        return self._follow(key, data)

    def _follow(self, key: tuple[str, str], first: bytes) -> Iterable[bytes]:
        yield first
        with self._mutex:
            offset = len(self._logs.get(key, b""))
        while True:
            with self._mutex:
                job = self._jobs.get(key)
                done = job is None or _finished(self._progress(key, job))
                log = self._logs.get(key, bytearray())
                new, offset = bytes(log[offset:]), len(log)
            if new:
                yield new
            if done:
                return
            time.sleep(0.02)

    def _list(self, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        selector = _parse_selector(query.get("labelSelector", ""))
        limit = int(query.get("limit") or 0)
        start = ""
        if token := query.get("continue"):
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
            except (ValueError, KeyError, TypeError):
                raise StandInError(400, "BadRequest", "continue key is not valid: illegal base64 data") from None
        with self._mutex:
            keys = sorted(k for k, j in self._jobs.items()
                          if (namespace is None or k[0] == namespace) and f"{k[0]}/{k[1]}" > start
                          and selector((j.get("metadata") or {}).get("labels") or {}))
            page = keys[:limit] if limit else keys
            items = [self._progress(k, self._jobs[k]) for k in page]
            meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
            if limit and len(keys) > limit:
                last = f"{page[-1][0]}/{page[-1][1]}"
                meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": last}).encode()).decode()
                meta["remainingItemCount"] = len(keys) - limit
        return {"kind": "JobList", "apiVersion": "batch/v1", "metadata": meta,
                "items": [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items]}

    # -- the Job controller, on the stand-in's clock ----------------------------------------

    def _progress(self, key: tuple[str, str], job: dict[str, Any]) -> dict[str, Any]:
        self._sync_pod(key, job)
        if key in self._pinned or job["spec"].get("suspend") or _finished(job):
            return job
        before = job["status"]
        age = self.clock.monotonic() - self._born.get(key, self.clock.monotonic())
        if self.finish_after is not None and age >= self.finish_after:
            job["status"] = (self._failed_status(job, "BackoffLimitExceeded",
                                                 "Job has reached the specified backoff limit")
                             if self.fails(job) else self._succeeded_status(job))
        elif self.start_after is not None and age >= self.start_after and not job["status"].get("active"):
            job["status"] = self._running_status(job)
        self._sync_pod(key, job)
        if job["status"] is not before:
            self._record("MODIFIED", key, job)
        return job

    def _set_status(self, namespace: str, name: str, make: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        with self._mutex:
            job = self._jobs[(namespace, name)]
            job["status"] = make(job)
            self._sync_pod((namespace, name), job)
            self._pinned.add((namespace, name))
            self._record("MODIFIED", (namespace, name), job)

    def _running_status(self, job: dict[str, Any]) -> dict[str, Any]:
        return {"active": 1, "ready": 1, "terminating": 0, "startTime": _rfc3339(self.clock.now()),
                "uncountedTerminatedPods": {}}

    def _succeeded_status(self, job: dict[str, Any]) -> dict[str, Any]:
        now = _rfc3339(self.clock.now())
        return {"succeeded": 1, "ready": 0, "terminating": 0, "startTime": now, "completionTime": now,
                "uncountedTerminatedPods": {},
                "conditions": [self._condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected "
                                               "number of succeeded pods"),
                               self._condition("Complete", "CompletionsReached", "Reached expected number "
                                               "of succeeded pods")]}

    def _failed_status(self, job: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
        return {"failed": 1, "ready": 0, "terminating": 0, "startTime": _rfc3339(self.clock.now()),
                "uncountedTerminatedPods": {},
                "conditions": [self._condition("FailureTarget", reason, message),
                               self._condition("Failed", reason, message)]}

    def _condition(self, kind: str, reason: str, message: str) -> dict[str, Any]:
        now = _rfc3339(self.clock.now())
        return {"type": kind, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now, "lastTransitionTime": now}


def _finished(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in job["status"].get("conditions") or [])


def _not_found(name: str) -> StandInError:
    return StandInError(404, "NotFound", f'jobs.batch "{name}" not found',
                        {"name": name, "group": "batch", "kind": "jobs"})


def _parse_selector(text: str) -> Callable[[dict[str, str]], bool]:
    """Equality-based selectors: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, comma-separated."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in filter(None, (t.strip() for t in re.split(r",(?![^(]*\))", text))):
        if found := re.match(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$", term):
            key, op, values = found.group(1), found.group(2), {v.strip() for v in found.group(3).split(",")}
            if op == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            tests.append(lambda labels, k=absent: k not in labels)
        else:
            tests.append(lambda labels, k=term: k in labels)
    return lambda labels: all(test(labels) for test in tests)


def _check_quantities(job: dict[str, Any]) -> None:
    """A malformed quantity does not even decode: the real server answers 400."""
    for container in _containers(job):
        for amounts in ((container.get("resources") or {}).get(kind) or {} for kind in ("limits", "requests")):
            for value in amounts.values():
                if not isinstance(value, str | int | float) or not _QUANTITY.match(str(value)):
                    raise StandInError(
                        400, "BadRequest",
                        'Job in version "v1" cannot be handled as a Job: quantities must match the regular '
                        "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    )


def _containers(job: dict[str, Any]) -> list[dict[str, Any]]:
    return (((job.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []


def _validate(job: dict[str, Any]) -> None:
    name = (job.get("metadata") or {}).get("name") or ""
    causes: list[tuple[str, str]] = []  # (field, message)
    if not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif len(name) > 63 or not _DNS1123_LABEL.match(name):
        causes.append(("metadata.name", (
            f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case alphanumeric '
            "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
            "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            + (", must be no more than 63 characters" if len(name) > 63 else "")
        )))
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    policy = pod.get("restartPolicy")
    if policy is None:
        causes.append(("spec.template.spec.restartPolicy",
                       'Required value: valid values: "OnFailure", "Never"'))
    elif policy not in ("Never", "OnFailure"):
        causes.append(("spec.template.spec.restartPolicy",
                       f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"'))
    containers = _containers(job)
    if not containers:
        causes.append(("spec.template.spec.containers", "Required value"))
    for i, container in enumerate(containers):
        where = f"spec.template.spec.containers[{i}]"
        if not container.get("name"):
            causes.append((f"{where}.name", "Required value"))
        if not (container.get("image") or "").strip():
            causes.append((f"{where}.image", "Required value"))
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        for resource, wanted in requests.items():
            if resource in limits and parse_quantity(wanted) > parse_quantity(limits[resource]):
                causes.append((f"{where}.resources.requests", (
                    f'Invalid value: "{wanted}": must be less than or equal to {resource} limit of '
                    f"{limits[resource]}"
                )))
    if causes:
        text = [f"{field}: {message}" for field, message in causes]
        raise StandInError(
            422, "Invalid",
            f'Job.batch "{name}" is invalid: ' + (text[0] if len(text) == 1 else f"[{', '.join(text)}]"),
            {"name": name, "group": "batch", "kind": "Job",
             "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes]},
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the watcher's workers and the watches connect at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is not the stand-in's problem


class _Handler(BaseHTTPRequestHandler):
    api: ApiStandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        code, answer, extra = self.api.handle(self.command, self.path, self.headers, body)
        if "__log__" in answer:
            self._send_log(answer["__log__"])
            return
        if "__watch__" in answer:
            self._send_watch(answer["__watch__"])
            return
        data = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_log(self, log: bytes | Iterable[bytes]) -> None:
        """A pod log is plain text; a followed one is streamed in chunks until it ends."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if isinstance(log, bytes):
            self.send_header("Content-Length", str(len(log)))
            self.end_headers()
            self.wfile.write(log)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in log:
                if chunk:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client stopped reading
            self.close_connection = True

    def _send_watch(self, events: Iterable[bytes]) -> None:
        """A watch: JSON lines, chunked, until it ends (or is cut: the socket closes mid-answer)."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for line in events:
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (OSError, StreamCut):
            self.close_connection = True

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


def schema_version() -> str:
    """The Kubernetes version whose JSON schemas manifests are validated against: client
    major N is Kubernetes 1.N (kubernetes 37.x ↔ 1.37); the newest schema kubernetes-validate
    ships that is not newer than that."""
    import kubernetes
    from kubernetes_validate.utils import all_versions

    wanted = (1, int(kubernetes.__version__.split(".")[0]))
    shipped = [v for v in all_versions() if tuple(int(p) for p in v.split(".")[:2]) <= wanted]
    assert shipped, f"kubernetes-validate ships no schema for Kubernetes 1.{wanted[1]} or older"
    return shipped[-1]


def write_kubeconfig(path: Path, standin: ApiStandIn, *, current: str = "standin") -> Path:
    """A kubeconfig with three contexts: ``standin`` (the stand-in, right token),
    ``wrong-token`` (the stand-in, a token it refuses) and ``elsewhere`` (a closed port)."""
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [
            {"name": "standin", "cluster": {"server": standin.url}},
            {"name": "elsewhere", "cluster": {"server": "http://127.0.0.1:9"}},
        ],
        "users": [
            {"name": "nightwatch", "user": {"token": standin.token}},
            {"name": "stranger", "user": {"token": "not-" + standin.token}},
        ],
        "contexts": [
            {"name": "standin", "context": {"cluster": "standin", "user": "nightwatch", "namespace": "default"}},
            {"name": "wrong-token", "context": {"cluster": "standin", "user": "stranger"}},
            {"name": "elsewhere", "context": {"cluster": "elsewhere", "user": "nightwatch"}},
        ],
        "current-context": current,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    """Run the stand-in on its own, e.g. to point ``nightwatch run`` or the k8s suite at it:
    ``python tests/k8s_standin.py --kubeconfig /tmp/standin.kubeconfig --finish-after 3``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True, help="where to write its kubeconfig")
    parser.add_argument("--namespace", action="append", default=[], help="namespaces that exist (default: default)")
    parser.add_argument("--start-after", type=float, default=0.5)
    parser.add_argument("--finish-after", type=float, default=3.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--bookmark-every", type=float, default=1.0, help="seconds between watch bookmarks")
    parser.add_argument("--seed-running", type=int, default=0, help="running nightwatch Jobs seed-1..N")
    parser.add_argument("--seed-retired", type=int, default=0, help="then this many finished, retired Jobs")
    args = parser.parse_args()
    standin = ApiStandIn(namespaces=args.namespace or ["default"],
                         start_after=None if args.start_after < 0 else args.start_after,
                         finish_after=None if args.finish_after < 0 else args.finish_after,
                         fault_rate=args.fault_rate, bookmark_every=args.bookmark_every)
    managed = {"app.kubernetes.io/managed-by": "nightwatch"}
    namespace = (args.namespace or ["default"])[0]
    standin.seed(namespace, args.seed_running, labels=managed, finished=False)
    standin.seed(namespace, args.seed_retired, labels={**managed, "nightwatch.io/done": "true"},
                 first_id=args.seed_running + 1)
    standin.start()
    write_kubeconfig(args.kubeconfig, standin)
    print(f"API stand-in on {standin.url}; kubeconfig {args.kubeconfig}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":
    main()
