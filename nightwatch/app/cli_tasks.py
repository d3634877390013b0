"""The ``task`` commands: submit, list, get, cancel, retry, logs, events, wait.

They read and write through the TaskStore port only (cancel and retry are requests the
leader carries out) and read logs through the configured JobGateway.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from nightwatch.app import cli_output as out
from nightwatch.app.durations import parse_duration
from nightwatch.domain.errors import InvalidTaskSpecError, NightwatchError
from nightwatch.domain.jobspec import spec_for
from nightwatch.domain.model import IN_FLIGHT, NewTask, Task, TaskQuery, TaskStatus

logger = logging.getLogger("nightwatch")

EXIT_ENDED_OTHERWISE = 1  # task wait: the task finished, but not as asked
EXIT_TIMEOUT = 124  # task wait: still not there after --timeout (as timeout(1); 2 is a config error)
REPLICA = "cli"  # recorded in the events of the requests made here


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _since(text: str) -> datetime:
    """``1h``, ``30m``, ``2d`` ago, or an ISO time (without a zone: UTC)."""
    text = text.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return datetime.now(UTC) - timedelta(days=int(text[:-1]))
    try:
        return datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a duration (1h, 30m, 2d) nor an ISO time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_task_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    task = sub.add_parser("task", help="submit, inspect, cancel and retry tasks").add_subparsers(
        dest="task_command", required=True, metavar="COMMAND")

    submit = task.add_parser("submit", parents=[common], help="add a task (status Normal)",
                             description="Words after -- are the command and its arguments, as kubectl "
                                         "takes them: -- sh -c 'echo hi'.")
    submit.add_argument("--name", required=True)
    submit.add_argument("--namespace", "-n", required=True)
    submit.add_argument("--image", required=True)
    submit.add_argument("--command", action="append", default=[], metavar="C", help="repeat for each word")
    submit.add_argument("--arg", action="append", default=[], metavar="A", help="repeat for each argument")
    submit.add_argument("--env", action="append", default=[], metavar="K=V", type=_env_pair)
    submit.add_argument("--retries", type=int, default=None, metavar="N",
                        help="automatic retries of a failed Job (info.retries)")
    submit.add_argument("--user-id", type=int, default=0)
    submit.add_argument("--json", action="store_true")
    submit.add_argument("words", nargs="*", metavar="-- COMMAND [ARG ...]", help=argparse.SUPPRESS)

    lst = task.add_parser("list", parents=[common], help="list tasks, newest first")
    lst.add_argument("--status", action="append", metavar="S",
                     help="only this status (repeat, or comma-separated)")
    lst.add_argument("--namespace", "-n")
    lst.add_argument("--name")
    lst.add_argument("--user-id", type=int)
    lst.add_argument("--since", type=_since, metavar="WHEN", help="created since: 1h, 30m, 2d or an ISO time")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("-o", "--output", choices=("table", "wide", "json", "yaml"), default="table")
    lst.add_argument("--json", action="store_true", help="as before -o existed: info kept as a string")
    lst.add_argument("--watch", "-w", action="store_true", help="redraw when something changes; Ctrl-C ends")
    lst.add_argument("--interval", type=_seconds, default=2.0, metavar="S", help="--watch: how often to look")

    def one(name: str, help_: str, epilog: str | None = None) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = task.add_parser(name, parents=[common], help=help_, epilog=epilog)
        p.add_argument("ref", metavar="ID|NAME", help="a task id, or a name with -n NAMESPACE")
        p.add_argument("--namespace", "-n", help="the task's namespace: ID|NAME is then a name")
        p.set_defaults(ref_parser=p)
        return p

    get = one("get", "one task, its attempts and its timeline")
    get.add_argument("--json", action="store_true")
    cancel = one("cancel", "ask the leader to cancel a task (its Job is deleted)")
    cancel.add_argument("--reason", metavar="TEXT", help="kept in cancel_reason")
    retry = one("retry", "run a Failed or Cancelled task again, as its next attempt")
    retry.add_argument("--force", action="store_true", help="a Succeeded task too")
    logs = one("logs", "the output of the current attempt's Job")
    logs.add_argument("--tail", type=int, default=None, metavar="N", help="the last N lines (default: all)")
    logs.add_argument("--follow", "-f", action="store_true", help="then new lines until the Job ends")
    events = one("events", "the task's timeline: every status change, with who made it")
    events.add_argument("--json", action="store_true")
    wait = one("wait", "wait until a task is terminal (or Succeeded); the exit status says how it ended",
               epilog=f"exit status: 0 reached, {EXIT_ENDED_OTHERWISE} ended otherwise, {EXIT_TIMEOUT} timed out")
    wait.add_argument("--for", dest="until", choices=("terminal", "Succeeded"), default="terminal")
    wait.add_argument("--timeout", type=_seconds, default=None, metavar="S", help="give up after S (exit 124)")
    wait.add_argument("--interval", type=_seconds, default=1.0, metavar="S", help="how often to look")


def check_ref(args: argparse.Namespace) -> None:
    """An id, or a name with -n: a usage error (exit 64) otherwise, before anything connects."""
    if getattr(args, "ref_parser", None) is None or args.namespace is not None:
        return
    if not args.ref.isdigit():
        args.ref_parser.error(f"{args.ref!r} is not a task id; give a task name with -n NAMESPACE")


def run(args: argparse.Namespace, config: dict[str, Any], container: Any, store: Any) -> int:
    handler = _HANDLERS[args.task_command]
    return int(handler(args, config, container, store))


def _resolve(store: Any, args: argparse.Namespace) -> Task:
    if args.namespace is not None:
        return store.find(args.ref, args.namespace)  # type: ignore[no-any-return]
    return store.get(int(args.ref))  # type: ignore[no-any-return]


def _label(t: Task) -> str:
    return f"task {t.id} ({t.namespace}/{t.name})"


def _submit(args: argparse.Namespace, config: dict[str, Any], container: Any, store: Any) -> int:
    command, extra = list(args.command), args.words[1:] if args.words[:1] == ["--"] else list(args.words)
    if extra and not command:
        command, extra = extra[:1], extra[1:]
    info: dict[str, Any] = {"image": args.image, "command": command, "args": [*args.arg, *extra]}
    if args.env:
        info["env"] = dict(args.env)
    if args.retries is not None:
        if args.retries < 0:
            raise NightwatchError("--retries must not be negative")
        info["retries"] = args.retries
    text = json.dumps(info)
    jobs = config["jobs"]
    try:  # what the leader would fail the task with, refused before it is inserted
        spec_for(args.name, args.namespace, text, jobs["allowed_namespaces"], jobs["allowed_images"])
    except InvalidTaskSpecError as e:
        raise NightwatchError(f"invalid task: {e}") from None
    task = store.add(NewTask(args.name, args.namespace, text, args.user_id))
    print(json.dumps(out.task_dict(task), indent=2) if args.json else out.fields(task))
    return 0


def _query(args: argparse.Namespace) -> TaskQuery:
    statuses = tuple(s.strip() for given in args.status or () for s in given.split(",") if s.strip())
    for s in statuses:
        if s not in set(TaskStatus):
            logger.warning("%r is not a status nightwatch sets; listing it anyway", s)
    if args.limit < 1:
        raise NightwatchError("--limit must be at least 1")
    return TaskQuery(statuses=statuses, namespace=args.namespace, name=args.name, user_id=args.user_id,
                     since=args.since, limit=args.limit)


def _list(args: argparse.Namespace, config: dict[str, Any], container: Any, store: Any) -> int:
    query = _query(args)
    if not args.watch:
        print(_listing(store, query, args), flush=True)
        return 0
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    shown = None
    try:
        while True:
            text = _listing(store, query, args)
            if text != shown:
                print(clear + text if clear else text + "\n", flush=True)
                shown = text
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _listing(store: Any, query: TaskQuery, args: argparse.Namespace) -> str:
    tasks = store.query(query)
    more = store.count(replace(query, before_id=tasks[-1].id)) if len(tasks) == query.limit else 0
    if args.json:
        text = json.dumps([out.task_dict(t) for t in tasks])
    elif args.output in ("json", "yaml"):
        text = out.documents(tasks, args.output)
    else:
        text = out.task_table(tasks, _now(), wide=args.output == "wide")
        if more:
            text += f"\n... and {more} more (older; raise --limit or narrow with --since, --status, -n)"
        return text
    if more:
        print(f"nightwatch: {more} more task(s) not shown (raise --limit)", file=sys.stderr)
    return text


def _get(args: argparse.Namespace, config: dict[str, Any], container: Any, store: Any) -> int:
    task = _resolve(store, args)
    events = store.events(task.id)
    now = _now()
    if args.json:
        doc = out.task_dict(task)
        doc["attempts"] = [a.as_dict() for a in out.attempts(task, events, now)]
        doc["events"] = [out.event_dict(e) for e in events]
        print(json.dumps(doc, indent=2))
    else:
        print(out.task_detail(task, events, now))
    return 0


def _cancel(args: argparse.Namespace, config: dict[str, Any], container: Any, store: Any) -> int:
    task = _resolve(store, args)
    reason = args.reason or f"cancelled by {_user()} with nightwatch task cancel"
    result = store.request_cancel(task.id, reason, replica=REPLICA)
    now = result.task
    if result.requested:
        print(f"{_label(now)}: cancel requested; the leader stops it (status now {now.status})")
        return 0
    if out.terminal(now.status):
        print(f"nightwatch: {_label(now)} already finished ({now.status}): nothing to cancel", file=sys.stderr)
        return 1
    print(f"{_label(now)}: a cancel was already requested at {out.when(now.cancel_requested_at)} "
          f"({now.cancel_reason or 'no reason given'}); the leader stops it")
    return 0


def _retry(args: argparse.Namespace, config: dict[str, Any], container: Any, store: Any) -> int:
    task = _resolve(store, args)
    status = task.known_status
    if status is None:
        raise NightwatchError(f"{_label(task)} has status {task.status!r}, which nightwatch does not set: "
                              "not retried")
    if status in IN_FLIGHT:
        raise NightwatchError(f"{_label(task)} is {status} (attempt {task.attempt}): cancel it first "
                              f"(nightwatch task cancel {task.id}), then retry")
    if status is TaskStatus.NORMAL:
        raise NightwatchError(f"{_label(task)} is Normal: it is waiting to run already (attempt {task.attempt})")
    if status is TaskStatus.SUCCEEDED and not args.force:
        raise NightwatchError(f"{_label(task)} Succeeded: give --force to run it again")
    if not store.requeue(task.id, old=status, attempt=task.attempt, message=None, force=args.force,
                         replica=REPLICA):
        now = store.get(task.id)
        raise NightwatchError(f"{_label(task)} changed meanwhile (now {now.status}, attempt {now.attempt}): "
                              "look again and retry")
    print(f"{_label(task)}: attempt {task.attempt + 1} queued (Normal); the leader launches it")
    return 0


def _logs(args: argparse.Namespace, config: dict[str, Any], container: Any, store: Any) -> int:
    task = _resolve(store, args)
    tail = None if args.tail is None or args.tail < 0 else args.tail
    try:
        for line in container.gateway().logs(task, tail=tail, follow=args.follow):
            print(line, flush=args.follow)
    except KeyboardInterrupt:
        return 0
    return 0


def _events(args: argparse.Namespace, config: dict[str, Any], container: Any, store: Any) -> int:
    task = _resolve(store, args)
    events = store.events(task.id)
    if args.json:
        print(json.dumps([out.event_dict(e) for e in events], indent=2))
    elif events:
        print(out.timeline(events, _now(), task))
    else:
        print(f"{_label(task)}: no events (nothing has moved it yet, or they were pruned)")
    return 0


def _wait(args: argparse.Namespace, config: dict[str, Any], container: Any, store: Any) -> int:
    task = _resolve(store, args)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    seen = None
    while True:
        if (task.status, task.attempt) != seen:
            print(f"{out.when(_now())} {_label(task)}: {task.status} (attempt {task.attempt})", flush=True)
            seen = (task.status, task.attempt)
        if task.status == args.until or (args.until == "terminal" and out.terminal(task.status)):
            return 0
        if out.terminal(task.status):
            return EXIT_ENDED_OTHERWISE
        if deadline is not None and time.monotonic() >= deadline:
            print(f"nightwatch: {_label(task)} is still {task.status} after {out.duration(args.timeout)}",
                  file=sys.stderr)
            return EXIT_TIMEOUT
        pause = args.interval if deadline is None else min(args.interval, max(0.0, deadline - time.monotonic()))
        time.sleep(pause)
        task = store.get(task.id)


def _now() -> datetime:
    return datetime.now(UTC)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry and no LOGNAME (a container's arbitrary uid)
        return "an unknown user"


_HANDLERS = {
    "submit": _submit, "list": _list, "get": _get, "cancel": _cancel, "retry": _retry,
    "logs": _logs, "events": _events, "wait": _wait,
}
