"""LocalJobGateway: Jobs as detached processes on this machine, for running without Kubernetes.

A Job runs ``command + args`` (the image is recorded, not pulled) through a tiny ``sh``
wrapper (``local_job.sh``, shipped beside this module; the tools it calls are resolved once,
at start-up, in the system directories) in its own session, so it survives the daemon;
everything about it lives on disk, so a Job that finishes while the daemon is down is
observed correctly after a restart. Layout::

    <state_dir>/jobs/<namespace>/<job name>/   one Job: one attempt of a task, named
                     ``task.job_name`` (namespace and name are DNS-1123 labels)
        job.json     task id, attempt, name, namespace, spec, backoff_limit, active_deadline_seconds,
                     ttl_seconds_after_finished, created; written before the directory appears
                     and never changed afterwards
        started      when the first start was attempted (Unix seconds; O_CREAT|O_EXCL)
        claim        made (mkdir) by the one wrapper that runs the command: creators and
                     adopters may each start a wrapper, exactly one gets past the claim
        pid          written by the wrapper: its pid, which is also the Job's process group
        stdout.log, stderr.log   the command's output (appended to by every attempt)
        exit         the last attempt's exit code (written to exit.tmp, then renamed)
        deadline     marker: nightwatch killed the Job after active_deadline_seconds
        cancelled    marker: the Job was cancelled (its time); from then on it is gone for
                     observe and logs, its process group got SIGTERM, SIGKILL after
                     ``cancel_grace``, and the directory is removed once the group is gone
    <state_dir>/jobs/<namespace>/.tmp-*    a Job being created (renamed to <name>: exactly once)
    <state_dir>/jobs/<namespace>/.trash-*  a Job being deleted (renamed from <name>)

The process starts in the Job's directory with a fresh environment -- ``PATH`` (the usual
system directories), ``HOME`` (the Job's directory) and ``LANG=C.UTF-8``, then the spec's
``env`` on top -- and nothing of the daemon's (its secrets stay its own), as in a container.
A failing command is retried ``backoff_limit`` times (at once, appending to the same logs).

A Job is the task's when job.json has its id and attempt (no attempt: 1, a Job of nightwatch
< 0.3); launch adopts only that, and observe, cancel and logs see only that.
``logs`` reads stdout.log, then stderr.log (the two are kept apart: how their lines interleaved
is not recorded), from their end, in bounded memory.

Observing is one ``os.scandir`` per namespace plus a few small reads per task, and maps:
``exit`` 0 -> Succeeded, other codes -> Failed ``"exit code N: <last stderr line>"``;
``deadline`` -> Failed ``DeadlineExceeded``; a live wrapper -> Running (its process group is
killed once it has run ``active_deadline_seconds`` since ``started``); a pid whose process is
gone -> Failed "vanished"; otherwise Pending. Finished Jobs are removed
``ttl_seconds_after_finished`` after they finished (checked while observing, at most every
``SWEEP_INTERVAL`` per namespace). ``record_path``: one line ``"<task id> <ns>/<name>"`` per
real create, for tests counting launches across processes. ``state_dir`` is for one machine:
replicas sharing it must run on the same host (pids are checked locally).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from nightwatch.adapters.clock import SystemClock
from nightwatch.adapters.jobs._local_cancel import (
    CANCEL_GRACE,
    finish_cancel,
    is_cancelled,
    mark_cancelled,
    reap_cancelled,
)
from nightwatch.adapters.jobs._local_exits import ExitWatcher
from nightwatch.adapters.jobs._local_files import (
    SYSTEM_PATH,
    is_wrapper_of,
    kill_group,
    last_line,
    mtime,
    read_int,
    read_json,
    read_text,
    signal_group,
    wrapper_tools,
)
from nightwatch.adapters.jobs._log_lines import read_logs, size_of
from nightwatch.adapters.jobs.recording import append_line
from nightwatch.domain.errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidTaskSpecError,
    JobConflictError,
    JobNotFoundError,
    JobRejectedError,
)
from nightwatch.domain.jobspec import JobDefaults, JobSpec, validate_job_name
from nightwatch.domain.model import JobPhase, JobState, Task
from nightwatch.domain.ports import Clock, JobGateway, LaunchOutcome

logger = logging.getLogger(__name__)

BASE_ENV = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"}
DEADLINE_EXCEEDED = "DeadlineExceeded: Job was active longer than specified deadline"
VANISHED = "the job's process vanished (host restarted?)"
NEVER_STARTED = "the job's process never started (nightwatch stopped while starting it?)"
START_TIMEOUT = 30.0  # seconds a started Job may go without a pid before it counts as failed
SWEEP_INTERVAL = 30.0  # seconds between TTL sweeps of one namespace
LEFTOVER_AGE = 3600.0  # seconds after which a .tmp-/.trash- directory is removed
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
WRAPPER_FILE = "local_job.sh"  # package data beside this module


@dataclass(frozen=True)
class _Meta:
    task_id: int
    attempt: int
    deadline: int | None
    ttl: int | None


class LocalJobGateway(JobGateway):
    def __init__(
        self,
        state_dir: str,
        *,
        defaults: JobDefaults | None = None,
        clock: Clock | None = None,
        record_path: str | None = None,
        tool_path: str = SYSTEM_PATH,
        cancel_grace: float = CANCEL_GRACE,
    ) -> None:
        """``tool_path``: where the wrapper's own tools (sh, mkdir, mv) are looked up, once,
        here; ConfigError (one line) when one is missing, so start-up fails, not every Job."""
        self._sh, self._mkdir, self._mv = wrapper_tools(tool_path)
        self._wrapper = _wrapper_text()
        self.state_dir = os.path.abspath(state_dir)
        self.jobs_dir = os.path.join(self.state_dir, "jobs")
        self.defaults = defaults or JobDefaults()
        self.record_path = record_path
        if cancel_grace < 0:
            raise ConfigError("jobs.local.cancel_grace must not be negative")
        self.cancel_grace = float(cancel_grace)
        self.list_calls = 0  # one per namespace per observe: tests read it
        self._clock = clock or SystemClock()
        self._mutex = threading.Lock()
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # ours, reaped in observe
        self._meta: dict[str, dict[str, tuple[tuple[int, int], _Meta]]] = {}  # ns -> name -> meta
        self._swept: dict[str, float] = {}  # namespace -> monotonic time of its last TTL sweep
        self._has_proc = os.path.exists("/proc/self/cmdline")
        self._exits = ExitWatcher(self._children, self._mutex)  # started by set_wake

    # -- the port ---------------------------------------------------------------------------

    def launch(self, task: Task, spec: JobSpec) -> LaunchOutcome:
        _check_names(task.namespace, task.name)
        _check_names(task.namespace, task.job_name)
        if not spec.argv:
            raise JobRejectedError("nothing to run: info.command and info.args are both empty")
        job_dir = os.path.join(self.jobs_dir, task.namespace, task.job_name)
        try:
            doc = self._document(task, spec)
            if self._create(job_dir, doc):
                outcome = LaunchOutcome.CREATED
                if self.record_path:
                    append_line(self.record_path, f"{task.id} {task.namespace}/{task.job_name}\n")
            else:
                found = read_json(os.path.join(job_dir, "job.json"))
                if found is None and not os.path.lexists(job_dir):
                    raise FileNotFoundError(errno.ENOENT, "deleted while adopting it", job_dir)
                if found is None or not _is_of(found.get("task_id"), found.get("attempt", 1), task):
                    attempt = "" if task.attempt == 1 else f" (attempt {task.attempt})"
                    raise JobConflictError(
                        f"a Job named {task.job_name!r} already exists in namespace {task.namespace!r} "
                        f"and was not created for this task{attempt}"
                    )
                doc, outcome = found, LaunchOutcome.ADOPTED
            self._start_once(job_dir, doc)
        except FileNotFoundError as e:  # deleted while we looked at it: try again later
            raise BackendUnavailableError(f"local jobs: {job_dir} vanished during launch: {e}") from e
        except OSError as e:
            raise BackendUnavailableError(f"local jobs: cannot launch {job_dir}: {e}") from e
        return outcome

    def observe(self, tasks: Sequence[Task]) -> Mapping[int, JobState]:
        self._reap()
        by_namespace: dict[str, list[Task]] = {}
        for task in tasks:
            if _LABEL.match(task.namespace):
                by_namespace.setdefault(task.namespace, []).append(task)
        result: dict[int, JobState] = {}
        unfinished: list[str] = []
        try:
            for namespace, members in by_namespace.items():
                entries = self._list(namespace)
                for gone in self._sweep(namespace, entries):
                    del entries[gone]
                self._forget_all_but(namespace, entries)
                for task in members:
                    if task.job_name.startswith(".") or task.job_name not in entries:
                        continue
                    job_dir = entries[task.job_name]
                    meta = self._meta_of(job_dir)
                    if meta is not None and _is_of(meta.task_id, meta.attempt, task):
                        if is_cancelled(job_dir):
                            self._finish_cancel(job_dir)  # gone; its processes are being stopped
                            continue
                        state = result[task.id] = self._state(job_dir, meta)
                        if state.phase in (JobPhase.PENDING, JobPhase.RUNNING):
                            unfinished.append(job_dir)
        except OSError as e:
            raise BackendUnavailableError(f"local jobs: cannot read {self.jobs_dir}: {e}") from e
        self._exits.running_elsewhere(unfinished)
        return result

    def cancel(self, task: Task) -> None:
        """Mark the current attempt's Job cancelled (from then on it is gone), SIGTERM its process
        group and return; a thread sends SIGKILL after ``cancel_grace`` if the group is still
        there, then removes the Job. Whoever observes the namespace later finishes the job if
        this process dies first."""
        job_dir = self._job_dir(task)
        meta = self._meta_of(job_dir) if job_dir else None
        if job_dir is None or meta is None or not _is_of(meta.task_id, meta.attempt, task):
            return
        try:
            if not mark_cancelled(job_dir, self._clock.now().timestamp()):
                return  # cancelled already (its reaper is at work), or removed meanwhile
        except OSError as e:
            raise BackendUnavailableError(f"local jobs: cannot cancel {job_dir}: {e}") from e
        pid = self._pid_of(job_dir)  # after the marker: a wrapper that writes its pid later sees it
        if pid is not None and self._alive(pid, job_dir):
            signal_group(pid, signal.SIGTERM)
            logger.info("local job %s cancelled: SIGTERM to process group %d, SIGKILL after %gs",
                        job_dir, pid, self.cancel_grace, extra={"task_id": task.id})
        else:
            pid = None
        threading.Thread(target=reap_cancelled, args=(job_dir, pid, self.cancel_grace), daemon=True,
                         kwargs={"reap": self._reap, "use_proc": self._has_proc, "remove": self._remove},
                         name=f"cancel-{task.id}").start()

    def logs(self, task: Task, tail: int | None = 100, follow: bool = False,
             stop: threading.Event | None = None) -> Iterator[str]:
        job_dir = self._job_dir(task)
        meta = self._meta_of(job_dir) if job_dir else None
        if job_dir is None or meta is None or not _is_of(meta.task_id, meta.attempt, task) \
                or is_cancelled(job_dir):
            raise JobNotFoundError(f"no Job for attempt {task.attempt} of task {task.id} "
                                   f"({task.namespace}/{task.job_name})")
        paths = [os.path.join(job_dir, "stdout.log"), os.path.join(job_dir, "stderr.log")]
        if all(size_of(path) is None for path in paths):
            raise JobNotFoundError(f"no log yet for attempt {task.attempt} of task {task.id} (not started)")
        return read_logs(paths, tail, follow, lambda: self._ended(job_dir), stop=stop)

    def set_wake(self, wake: Callable[[], None]) -> None:
        """``wake()`` when a Job's process exits (see _local_exits)."""
        self._exits.start(wake)

    def close(self) -> None:
        """Reap what has finished. Running Jobs are left alone: they outlive the daemon."""
        self._exits.close()
        self._reap()

    # -- beyond the port ----------------------------------------------------------------------

    def delete(self, namespace: str, name: str) -> None:
        """Kill the Job's processes, if any, and remove it (as ``kubectl delete job`` would)."""
        _check_names(namespace, name)
        job_dir = os.path.join(self.jobs_dir, namespace, name)
        pid = self._pid_of(job_dir)
        if pid is not None and self._alive(pid, job_dir):
            kill_group(pid)
        self._remove(job_dir)

    def _job_dir(self, task: Task) -> str | None:
        """The directory of the task's current attempt's Job; None for names no Job can have."""
        if not _LABEL.match(task.namespace) or not _LABEL.match(task.job_name):
            return None
        return os.path.join(self.jobs_dir, task.namespace, task.job_name)

    def _ended(self, job_dir: str) -> bool:
        """Whether a Job's output is complete: it finished, was killed, cancelled or removed."""
        if any(os.path.exists(os.path.join(job_dir, f)) for f in ("exit", "deadline", "cancelled")):
            return True
        if not os.path.isdir(job_dir):
            return True
        self._reap()
        pid = read_int(os.path.join(job_dir, "pid"))
        return pid is not None and not self._alive(pid, job_dir)

    def _finish_cancel(self, job_dir: str) -> None:
        finish_cancel(job_dir, self._clock.now().timestamp(), self.cancel_grace, use_proc=self._has_proc,
                      remove=self._remove)

    def _pid_of(self, job_dir: str) -> int | None:
        """The wrapper's pid: ours if we spawned it, else from the pid file -- waiting a moment
        for a wrapper that was started but has not written it yet."""
        with self._mutex:
            proc = self._children.get(job_dir)
        if proc is not None:
            return proc.pid
        pid_file = os.path.join(job_dir, "pid")
        for _ in range(100):
            pid = read_int(pid_file)
            if pid is not None or not os.path.exists(os.path.join(job_dir, "started")):
                return pid
            started = self._started_at(job_dir)
            if started is not None and self._clock.now().timestamp() - started > START_TIMEOUT:
                return None
            time.sleep(0.01)
        return read_int(pid_file)

    # -- launching ----------------------------------------------------------------------------

    def _document(self, task: Task, spec: JobSpec) -> dict[str, Any]:
        return {
            "task_id": task.id,
            "attempt": task.attempt,
            "namespace": task.namespace,
            "name": task.job_name,
            "image": spec.image,
            "command": list(spec.command),
            "args": list(spec.args),
            "env": dict(spec.env),
            "resources": {k: dict(v) for k, v in spec.resources.items()},
            "backoff_limit": self.defaults.backoff_limit,
            "active_deadline_seconds": self.defaults.active_deadline_seconds,
            "ttl_seconds_after_finished": self.defaults.ttl_seconds_after_finished,
            "created": self._clock.now().isoformat(),
        }

    def _create(self, job_dir: str, doc: Mapping[str, Any]) -> bool:
        """Make ``job_dir`` appear with its job.json in one rename. False when it exists."""
        if os.path.lexists(job_dir):
            return False
        parent = os.path.dirname(job_dir)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}")
        os.mkdir(tmp)
        try:
            with open(os.path.join(tmp, "job.json"), "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
            os.rename(tmp, job_dir)  # fails when job_dir exists (it is never empty)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False
            raise
        return True

    def _start_once(self, job_dir: str, doc: Mapping[str, Any]) -> None:
        """Start the Job's wrapper unless one already claimed it. Called by the creator and by
        every adopter, so a Job whose creator died before its process started (the crash
        between "created" and "started") is started by whoever adopts it; the wrapper's
        ``mkdir claim`` lets exactly one of them run the command."""
        if os.path.exists(os.path.join(job_dir, "claim")) or os.path.exists(os.path.join(job_dir, "exit")):
            return
        marker = os.path.join(job_dir, "started")
        with contextlib.suppress(FileExistsError):  # the first attempt's time counts for START_TIMEOUT
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, f"{self._clock.now().timestamp():.6f}\n".encode())
            finally:
                os.close(fd)
        try:
            proc = self._spawn(job_dir, doc)
        except OSError as e:
            raise BackendUnavailableError(f"local jobs: cannot start {job_dir}: {e}") from e
        with self._mutex:
            self._children[job_dir] = proc
        logger.debug("local job %s: wrapper started as pid %d", job_dir, proc.pid)

    def _spawn(self, job_dir: str, doc: Mapping[str, Any]) -> subprocess.Popen[bytes]:
        env = {**BASE_ENV, "HOME": job_dir, **doc.get("env", {})}
        argv = [*doc.get("command", []), *doc.get("args", [])]
        attempts = int(doc.get("backoff_limit") or 0) + 1
        wrapper = [self._sh, "-c", self._wrapper, "nightwatch-job", job_dir, self._mkdir, self._mv,
                   str(attempts), *argv]
        with open(os.path.join(job_dir, "stdout.log"), "ab") as out, \
                open(os.path.join(job_dir, "stderr.log"), "ab") as err:
            return subprocess.Popen(
                wrapper, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=job_dir, env=env,
                start_new_session=True, close_fds=True,
            )

    # -- observing ----------------------------------------------------------------------------

    def _list(self, namespace: str) -> dict[str, str]:
        """The one listing of a namespace: entry name -> path (dot entries included)."""
        with self._mutex:
            self.list_calls += 1
        try:
            with os.scandir(os.path.join(self.jobs_dir, namespace)) as it:
                return {entry.name: entry.path for entry in it}
        except FileNotFoundError:
            return {}

    def _meta_of(self, job_dir: str) -> _Meta | None:
        """The Job's task id and limits; job.json never changes, so it is parsed once."""
        try:
            st = os.stat(os.path.join(job_dir, "job.json"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        key = (st.st_ino, st.st_ctime_ns)  # a new Job of the same name has another job.json
        namespace, name = os.path.basename(os.path.dirname(job_dir)), os.path.basename(job_dir)
        with self._mutex:
            cached = self._meta.get(namespace, {}).get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        doc = read_json(os.path.join(job_dir, "job.json"))
        if doc is None or not isinstance(doc.get("task_id"), int):
            return None
        attempt = doc.get("attempt", 1)
        meta = _Meta(doc["task_id"], attempt if isinstance(attempt, int) else 0, doc.get("active_deadline_seconds"),
                     doc.get("ttl_seconds_after_finished"))
        with self._mutex:
            self._meta.setdefault(namespace, {})[name] = (key, meta)
        return meta

    def _forget_all_but(self, namespace: str, present: Mapping[str, str]) -> None:
        with self._mutex:
            cache = self._meta.get(namespace, {})
            for name in [n for n in cache if n not in present]:
                del cache[name]

    def _state(self, job_dir: str, meta: _Meta) -> JobState:
        exit_text = read_text(os.path.join(job_dir, "exit"))
        if exit_text is not None:
            return self._finished(job_dir, exit_text)
        if os.path.exists(os.path.join(job_dir, "deadline")):
            return JobState(JobPhase.FAILED, DEADLINE_EXCEEDED)
        pid = read_int(os.path.join(job_dir, "pid"))
        if pid is not None:
            if self._alive(pid, job_dir):
                if self._past_deadline(job_dir, meta):
                    return self._kill_for_deadline(job_dir, pid)
                return JobState(JobPhase.RUNNING)
            exit_text = read_text(os.path.join(job_dir, "exit"))  # it may have just finished
            if exit_text is not None:
                return self._finished(job_dir, exit_text)
            return JobState(JobPhase.FAILED, VANISHED)
        started = self._started_at(job_dir)
        if started is not None and self._clock.now().timestamp() - started > START_TIMEOUT:
            return JobState(JobPhase.FAILED, NEVER_STARTED)
        return JobState(JobPhase.PENDING)

    def _finished(self, job_dir: str, exit_text: str) -> JobState:
        try:
            code = int(exit_text)
        except ValueError:
            return JobState(JobPhase.FAILED, f"unreadable exit status {exit_text[:40]!r}")
        if code == 0:
            return JobState(JobPhase.SUCCEEDED)
        message = f"exit code {code}"
        if line := last_line(os.path.join(job_dir, "stderr.log")):
            message += f": {line}"
        return JobState(JobPhase.FAILED, message)

    def _started_at(self, job_dir: str) -> float | None:
        marker = os.path.join(job_dir, "started")
        text = read_text(marker)
        if text is None:
            return None
        try:
            return float(text)
        except ValueError:  # being written right now
            try:
                return os.stat(marker).st_mtime
            except FileNotFoundError:
                return None

    def _past_deadline(self, job_dir: str, meta: _Meta) -> bool:
        if meta.deadline is None:
            return False
        started = self._started_at(job_dir)
        return started is not None and self._clock.now().timestamp() - started > meta.deadline

    def _kill_for_deadline(self, job_dir: str, pid: int) -> JobState:
        with open(os.path.join(job_dir, "deadline"), "w") as f:  # first, so every observer agrees
            f.write(f"{self._clock.now().timestamp():.6f}\n")
        kill_group(pid)
        logger.info("local job %s ran past its active deadline; killed process group %d", job_dir, pid)
        return JobState(JobPhase.FAILED, DEADLINE_EXCEEDED)

    def _alive(self, pid: int, job_dir: str) -> bool:
        return is_wrapper_of(pid, job_dir, use_proc=self._has_proc)

    def _reap(self) -> None:
        with self._mutex:
            for job_dir, proc in list(self._children.items()):
                if proc.poll() is not None:
                    del self._children[job_dir]

    # -- cleaning up --------------------------------------------------------------------------

    def _sweep(self, namespace: str, entries: Mapping[str, str]) -> list[str]:
        """Remove finished Jobs past their TTL, and leftovers of interrupted creates/deletes.
        At most every ``SWEEP_INTERVAL`` per namespace. Returns the names removed."""
        mono = self._clock.monotonic()
        with self._mutex:
            last = self._swept.get(namespace)
            if last is not None and mono - last < SWEEP_INTERVAL:
                return []
            self._swept[namespace] = mono
        now = self._clock.now().timestamp()
        removed = []
        for name, path in entries.items():
            if name.startswith("."):
                if now - (mtime(path) or now) > LEFTOVER_AGE:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(name)
                continue
            if is_cancelled(path):
                self._finish_cancel(path)
                continue
            meta = self._meta_of(path)
            if meta is None or meta.ttl is None:
                continue
            finished = mtime(os.path.join(path, "exit")) or mtime(os.path.join(path, "deadline"))
            if finished is not None and now - finished >= meta.ttl:
                logger.debug("local job %s finished more than %ds ago; removing it", path, meta.ttl)
                self._remove(path)
                removed.append(name)
        return removed

    def _remove(self, job_dir: str) -> None:
        """Rename away first, so a new Job of the same name never meets a half-deleted one."""
        trash = os.path.join(os.path.dirname(job_dir), f".trash-{uuid.uuid4().hex}")
        try:
            os.rename(job_dir, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)


def _wrapper_text() -> str:
    """The wrapper script, read once from the package (so a Job never depends on the
    installed file staying in place)."""
    try:
        return resources.files("nightwatch.adapters.jobs").joinpath(WRAPPER_FILE).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"jobs.backend local: cannot read the job wrapper {WRAPPER_FILE} from the "
                          f"nightwatch package (reinstall it?): {e}") from e


def _is_of(task_id: object, attempt: object, task: Task) -> bool:
    """Whether a Job made for ``task_id``'s ``attempt`` is the one of ``task``'s current attempt."""
    return task_id == task.id and attempt == task.attempt


def _check_names(namespace: str, name: str) -> None:
    if not _LABEL.match(namespace) or len(namespace) > 63:
        raise JobRejectedError(f"namespace {namespace!r} is not a DNS-1123 label")
    try:
        validate_job_name(name)
    except InvalidTaskSpecError as e:
        raise JobRejectedError(str(e)) from e
