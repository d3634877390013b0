"""The command line. Errors are one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from nightwatch import __version__
from nightwatch.app import cli_tasks, logs
from nightwatch.app.cli_tasks import add_task_commands, check_ref
from nightwatch.app.config import config_source, load_config, masked
from nightwatch.domain.errors import BackendUnavailableError, ConfigError, NightwatchError

logger = logging.getLogger("nightwatch")

EXIT_CONFIG = 2
EXIT_USAGE = 64  # sysexits.h EX_USAGE: a wrong command line, told apart from a wrong config (2)
STUCK_THREAD_GRACE = 1.0  # seconds `run` waits for leftover threads before exiting without them


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; 2 is nightwatch's config error, so usage errors exit 64.
    Sub-parsers are made of this class too (``add_subparsers`` uses the parent's class)."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    # SUPPRESS: a subcommand's own --config must not reset one given before the subcommand
    common.add_argument("--config", metavar="F", default=argparse.SUPPRESS,
                        help="YAML config (default: $NIGHTWATCH_CONFIG, ./config/nightwatch.yaml, built-in defaults)")
    p = _Parser(prog="nightwatch", parents=[common],
                description="Keeps a task table and Kubernetes Jobs in step.")
    p.add_argument("--version", action="version", version=f"nightwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="the daemon (candidate, then leader)")
    run.add_argument("--once", action="store_true", help="one cycle of every watcher, then exit")
    run.add_argument("--wait", type=float, default=None, metavar="S",
                     help="with --once: how long to wait for the lock (default: lock ttl + retry)")

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    migrate = db.add_parser("migrate", parents=[common], help="upgrade the schema to what nightwatch needs")
    migrate.add_argument("--sql", action="store_true", help="print the DDL for a DBA instead of running it")
    db.add_parser("status", parents=[common], help="the database's schema revision and the one needed")

    add_task_commands(sub, common)

    cfg = sub.add_parser("config", help="configuration").add_subparsers(dest="config_command", required=True)
    show = cfg.add_parser("show", parents=[common], help="the effective config, secrets masked")
    show.add_argument("--json", action="store_true")
    cfg.add_parser("validate", parents=[common],
                   help="every check run makes (schedules and paths included), without starting")

    status = sub.add_parser("status", parents=[common], help="who leads, its epoch, tasks per status")
    status.add_argument("--json", action="store_true")
    completion = sub.add_parser("completion", help="a shell completion script: eval it, or save it")
    completion.add_argument("shell", choices=("bash", "zsh", "tcsh"))
    return p


# Options whose value may start with "-" (``--arg -c``, as kubectl's flags take it): argparse
# would read "-c" as an option, so such a pair is joined into ``--arg=-c`` before parsing.
_VALUE_OPTIONS = ("--arg", "--command", "--reason")


def _join_dash_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            out.append(word)
            out.extend(words)
            break
        if word in _VALUE_OPTIONS:
            value = next(words, None)
            out.append(word if value is None else f"{word}={value}")
            continue
        out.append(word)
    return out


def main(argv: Sequence[str] | None = None, *, container: Any = None) -> int:
    """``container``: one built already (the composition root), else one is built from the
    config; an embedding program (or a test) passes its own to share its adapters."""
    parser = _parser()
    args = parser.parse_args(_join_dash_values(sys.argv[1:] if argv is None else argv))
    check_ref(args)
    if args.command == "completion":
        import shtab

        print(shtab.complete(parser, shell=args.shell), end="")
        return 0
    try:
        config = load_config(getattr(args, "config", None))
        logs.configure(config["log"]["level"], config["log"]["format"])
        code = _dispatch(args, config, container)
        if args.command == "run":
            _exit_despite_stuck_threads(code)
        return code
    except ConfigError as e:
        print(f"nightwatch: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except BackendUnavailableError as e:
        print(f"nightwatch: backend unavailable: {e}", file=sys.stderr)
        return 1
    except NightwatchError as e:
        print(f"nightwatch: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, config: dict[str, Any], container: Any) -> int:
    from nightwatch.app.container import build_container

    source = config_source(getattr(args, "config", None))
    if args.command == "config" and args.config_command == "show":
        shown = masked(config)
        if args.json:
            print(json.dumps(shown, indent=2))
        else:
            print(f"# {source}")
            print(yaml.safe_dump(shown, sort_keys=False), end="")
        return 0
    if container is None:
        container = build_container(config)
    try:
        if args.command == "config":  # validate
            from nightwatch.app.preflight import check_startup

            check_startup(container, config)
            print(f"config OK: {source}")
            return 0
        if args.command == "run":
            return _run(container, config, once=args.once, wait=args.wait)
        if args.command == "db":
            return _db(args, config, container.store())
        store = container.store()
        if (behind := _schema_behind(store, config)) is not None:
            print(f"nightwatch: {behind}", file=sys.stderr)
            return EXIT_CONFIG
        if args.command == "status":
            return _status(container, store, args.json)
        return cli_tasks.run(args, config, container, store)
    finally:
        container.shutdown_resources()


def _run(container: Any, config: dict[str, Any], *, once: bool, wait: float | None) -> int:
    from nightwatch.app.daemon import install_signal_handlers
    from nightwatch.app.preflight import check_startup

    logs.configure(config["log"]["level"], config["log"]["format"], replica=container.identity())
    check_startup(container, config)  # what `config validate` checks, before anything starts
    daemon = container.daemon()
    lock = config["lock"]
    server = None
    if config["server"]["listen"] and not once:
        from nightwatch.app.server import start_server
        from nightwatch.app.web import web_settings

        server = start_server(config["server"]["listen"], daemon, container.metrics(), lock["ttl"],
                              **web_settings(container, config, daemon))
    install_signal_handlers(daemon, _hard_exit)
    logger.info("nightwatch %s starting as %s (store %s, lock %s, jobs %s)", __version__,
                container.identity(), config["store"]["backend"], lock["backend"], config["jobs"]["backend"])
    try:
        if once:
            code = daemon.run_once(wait if wait is not None else lock["ttl"] + lock["retry_interval"])
            if daemon.fatal is not None:
                raise daemon.fatal
            return int(code)
        return int(daemon.run())
    finally:
        if server is not None:
            server.shutdown()


def _db(args: argparse.Namespace, config: dict[str, Any], store: Any) -> int:
    if args.db_command == "status":
        found, needed = store.schema_status()
        if found == needed:
            print(f"schema at {found}: up to date")
            return 0
        print(f"schema at {found or 'none'}, nightwatch needs {needed}: run nightwatch db migrate")
        return EXIT_CONFIG
    if args.sql:
        print(_offline_sql(store, config), end="")
        return 0
    store.migrate()
    print(f"schema at {store.schema_status()[0]}: up to date")
    return 0


def _offline_sql(store: Any, config: dict[str, Any]) -> str:
    """The DDL from the database's revision to head; from nothing when the database cannot
    be read (the script is written to apply to the user's table and to a 0.1 database too)."""
    engine = getattr(store, "engine", None)
    if engine is None:
        raise ConfigError(f"store.backend: {config['store']['backend']!r} has no SQL schema to migrate")
    from nightwatch.adapters.store import migrations

    found = None
    if not _sqlite_first_use(config, store):
        try:
            found, needed = store.schema_status()
        except NightwatchError as e:
            logger.warning("cannot read the database's schema revision (%s): the script starts from nothing", e)
        else:
            if found == needed:
                return f"-- the schema is at {needed} already: nothing to do\n"
    return migrations.offline_sql(engine.dialect.name, start=found)


def _sqlite_first_use(config: dict[str, Any], store: Any) -> bool:
    """The embedded default before anything was written: no file yet, or one with no tables."""
    if config["store"]["backend"] != "sqlite":
        return False
    if not Path(config["store"]["sqlite"]["path"]).exists():
        return True
    from nightwatch.adapters.store import migrations

    try:
        return migrations.is_empty(store.engine)
    except Exception as e:  # not a database, unreadable ...: the store's own calls will say it in one line
        logger.debug("cannot inspect %s: %r", config["store"]["sqlite"]["path"], e)
        return False


def _schema_behind(store: Any, config: dict[str, Any]) -> str | None:
    """Why the commands that only read and write rows must not run, or None. They never run
    DDL (which would lock the user's table): an admin runs ``db migrate`` (or ``run``). Only
    the embedded SQLite default creates its file and schema on first use."""
    if _sqlite_first_use(config, store):
        store.migrate()
        return None
    found, needed = store.schema_status()
    if found == needed:
        return None
    return f"schema at {found or 'none'}, nightwatch needs {needed}: run nightwatch db migrate"


def _hard_exit(code: int) -> None:
    logging.shutdown()
    sys.stdout.flush()
    os._exit(code)


def _exit_despite_stuck_threads(code: int) -> None:
    """A watcher run that ignored its cancellation would hold the interpreter's exit (it joins
    pool threads): give leftover threads a moment, then exit without them."""
    deadline = time.monotonic() + STUCK_THREAD_GRACE
    for thread in _leftover_threads():
        thread.join(max(0.0, deadline - time.monotonic()))
    if stuck := [t.name for t in _leftover_threads()]:
        logger.warning("exiting although %d thread(s) still run cancelled work: %s", len(stuck), ", ".join(stuck))
        _hard_exit(code)


def _leftover_threads() -> list[threading.Thread]:
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]


def _status(container: Any, store: Any, as_json: bool) -> int:
    lock = container.lock()
    name = lock.name
    doc = {
        "lock": name,
        "leader": lock.holder(),
        "epoch": store.current_epoch(name),
        "tasks": store.count_by_status(),
    }
    if as_json:
        print(json.dumps(doc))
    else:
        print(f"leader: {doc['leader'] or 'none'} (lock {name!r}, epoch {doc['epoch']})")
        for status, n in sorted(doc["tasks"].items()):
            print(f"{status:10} {n}")
    return 0
