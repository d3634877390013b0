"""Loading and checking the YAML config.

Files are read by dependency-injector's ``Configuration.from_yaml`` (which also does the
``${VAR}`` / ``${VAR:default}`` interpolation), laid over the built-in defaults, then
checked here key by key so a wrong value stops start-up with one line naming the key
and what is allowed. The result has durations as float seconds.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from croniter import CroniterBadDateError, croniter
from dependency_injector import providers

from nightwatch.app.config_rules import (
    MAX_DURATION,
    boolean,
    duration,
    duration_or_off,
    duration_up_to,
    integer,
    listen,
    number,
    one_of,
    redis_urls,
    session_secret,
    strings,
    text,
    tokens,
)
from nightwatch.app.scheduler import Cron, Every, Schedule, parse_schedule
from nightwatch.domain.errors import ConfigError

DEFAULT_LOCATION = Path("config") / "nightwatch.yaml"


def default_config_text() -> str:
    return resources.files("nightwatch.app").joinpath("default.yaml").read_text()


def find_config(explicit: str | None) -> Path | None:
    """``--config``, else ``$NIGHTWATCH_CONFIG``, else ./config/nightwatch.yaml, else None."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("NIGHTWATCH_CONFIG"):
        return Path(env)
    return DEFAULT_LOCATION if DEFAULT_LOCATION.is_file() else None


def _read(path: Path | None) -> dict[str, Any]:
    """A config file with ``${VAR}`` / ``${VAR:default}`` resolved; None = the built-in defaults."""
    if path is None:
        with resources.as_file(resources.files("nightwatch.app").joinpath("default.yaml")) as builtin:
            return _read(builtin)
    _readable(path)
    if _empty(path):
        return {}
    reader = providers.Configuration()
    try:
        reader.from_yaml(str(path), required=True, envs_required=True)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except ValueError as e:  # dependency-injector: a ${VAR} with no default that is not set
        raise ConfigError(f"config file {path}: {e}") from None
    raw = reader()
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
    return raw


def _readable(path: Path) -> None:
    """One line for a path that is no readable UTF-8 file, and nothing more for an empty one
    (dependency-injector lets those through as OSError, UnicodeDecodeError or a TypeError)."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read: {e.strerror or e}") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {e.start})") from None


def _empty(path: Path) -> bool:
    """Nothing but comments and blank lines: the built-in defaults, as ``{}`` would be."""
    try:
        return yaml.safe_load(path.read_text()) is None
    except yaml.YAMLError:
        return False  # from_yaml reports it with its line


def config_source(explicit: str | None) -> str:
    """What ``load_config(explicit)`` reads, for ``config show`` and ``config validate``."""
    path = find_config(explicit)
    return f"read from {path.absolute()}" if path is not None else "built-in defaults (no config file)"


def load_config(explicit: str | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The effective, checked config. ConfigError (one line) on any problem."""
    defaults = _fill(_read(None), OPTIONAL_DEFAULTS)  # interpolated too: secrets come from the environment
    path = find_config(explicit)
    merged = _merge(defaults, _read(path) if path is not None else {})
    if overrides:
        merged = _merge(merged, dict(overrides))
    return check(merged)


def _fill(base: dict[str, Any], missing: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with the keys of ``missing`` it lacks added after its own (its order is kept)."""
    out = copy.deepcopy(base)
    for key, value in missing.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(value, Mapping) and isinstance(out[key], dict):
            out[key] = _fill(out[key], value)
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def migrate_mode(key: str, v: Any) -> str:
    if v is False:  # YAML 1.1 reads an unquoted `off` as false
        return "off"
    return str(one_of("auto", "off")(key, v))


SCHEMA: dict[str, Any] = {
    "store": {
        "backend": one_of("memory", "sqlite", "mysql", "postgres"),
        "migrate": migrate_mode,
        "sqlite": {"path": text()},
        "mysql": {"host": text(), "port": integer(1, 65535), "user": text(), "password": text(empty_ok=True),
                  "database": text(), "connect_timeout": duration, "read_timeout": duration, "write_timeout": duration,
                  "pool_size": integer(1, 64)},
        "postgres": {"dsn": text(), "connect_timeout": duration, "statement_timeout": duration,
                     "pool_size": integer(1, 64), "listen": boolean},
    },
    "lock": {
        "backend": one_of("memory", "file", "redis"),
        "name": text(),
        "identity": text(null_ok=True),
        "ttl": duration, "renew_interval": duration, "renew_deadline": duration, "retry_interval": duration,
        "file": {"path": text()},
        "redis": {"urls": redis_urls, "socket_timeout": duration, "key_prefix": text()},
    },
    "jobs": {
        "backend": one_of("fake", "local", "kubernetes"),
        "allowed_namespaces": strings,
        "allowed_images": strings,
        "defaults": {"backoff_limit": integer(0, 100), "ttl_seconds_after_finished": integer(0, null_ok=True),
                     "active_deadline_seconds": integer(1, null_ok=True), "retries": integer(0, 100),
                     "retry_delay": duration, "retry_delay_max": duration},
        "local": {"state_dir": text(), "record_path": text(null_ok=True), "cancel_grace": duration},
        "fake": {"default_duration": number(0), "start_delay": number(0), "record_path": text(null_ok=True)},
        "kubernetes": {"kubeconfig": text(null_ok=True), "context": text(null_ok=True), "qps": number(0.1),
                       "burst": integer(1),
                       "request_timeout": duration_up_to(60.0, "the API server's default limit on a request"),
                       "forbidden_grace": duration, "pending_fatal_grace": duration, "resync": duration},
    },
    "history": {"retention": duration},
    "watchers": "*watchers",
    "server": {"listen": listen, "shutdown_timeout": duration, "max_body": integer(1024, 64 * 1024 * 1024),
               "auth": {"tokens": tokens, "read": boolean, "session_secret": session_secret,
                        "secure_cookies": boolean}},
    "log": {"level": one_of("debug", "info", "warning", "error"), "format": one_of("text", "json")},
}

# Keys the shipped config/nightwatch.yaml leaves out, with the values the adapters were built for,
# so that the effective config (and ``config show``) has every key.
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "store": {"mysql": {"connect_timeout": "5s", "read_timeout": "10s", "write_timeout": "10s", "pool_size": 4},
              "postgres": {"connect_timeout": "5s", "statement_timeout": "10s", "pool_size": 4, "listen": True}},
    "lock": {"redis": {"socket_timeout": "500ms", "key_prefix": "nightwatch:"}},
    "jobs": {"local": {"record_path": None},
             "fake": {"default_duration": 1, "start_delay": 0, "record_path": None}},
}

TASK_WATCHER_SCHEMA: dict[str, Any] = {
    "spec": text(), "enabled": boolean, "batch_size": integer(1, 10000), "concurrency": integer(1, 256),
    "missing_grace": duration, "count_interval": duration, "launch_per_run": integer(1, 1_000_000),
    "probe_interval": duration_or_off,
}
WATCHER_SCHEMA: dict[str, Any] = {"spec": text(), "enabled": boolean}


MIN_MISSING_GRACE = 5.0  # seconds; below, one LIST that missed a Job would fail its task


def check(config: Mapping[str, Any]) -> dict[str, Any]:
    out = _check_section("", config, SCHEMA)
    out["jobs"].setdefault("fake", {})
    _check_lock(out["lock"])
    _check_task_sync(out)
    _check_retry_delay(out["jobs"].get("defaults", {}))
    _check_auth(out["server"])
    return out


def _check_retry_delay(defaults: Mapping[str, Any]) -> None:
    delay, cap = defaults.get("retry_delay"), defaults.get("retry_delay_max")
    if delay is not None and cap is not None and delay > cap:
        raise ConfigError(f"jobs.defaults.retry_delay: must be at most jobs.defaults.retry_delay_max "
                          f"({cap:g}s), got {delay:g}s")


def _check_auth(server: Mapping[str, Any]) -> None:
    auth = server.get("auth") or {}
    if auth.get("read") and not auth.get("tokens"):
        raise ConfigError("server.auth.read: true needs a token in server.auth.tokens (none is set), "
                          "or nobody could read")


def _check_lock(lock: Mapping[str, Any]) -> None:
    if not lock["renew_interval"] < lock["renew_deadline"] < lock["ttl"]:
        raise ConfigError(
            "lock: need renew_interval < renew_deadline < ttl (so a leader steps down before its lease "
            f"can expire), got {lock['renew_interval']:g}s, {lock['renew_deadline']:g}s, {lock['ttl']:g}s"
        )
    timeout = lock.get("redis", {}).get("socket_timeout")
    if lock["backend"] == "redis" and timeout is not None:
        # a renew started just before the deadline may wait this long to connect and as long again
        # for the answer; it must be over before the lease expires
        limit = (lock["ttl"] - lock["renew_deadline"]) / 2
        if timeout > limit + 1e-9:
            raise ConfigError(
                f"lock.redis.socket_timeout: must be at most {limit:g}s, half of lock.ttl - lock.renew_deadline "
                f"({lock['ttl']:g}s - {lock['renew_deadline']:g}s), so a renew ends before the lease expires; "
                f"got {timeout:g}s"
            )


def _check_task_sync(config: Mapping[str, Any]) -> None:
    """The task watcher must see a Job (in its sync) before the Job's TTL deletes it, and may call a
    Job gone only after looking for it for a while."""
    task = config.get("watchers", {}).get("task") or {}
    if not task.get("enabled", True):
        return
    key = "watchers.task.spec"
    interval = _longest_gap(parse_schedule(task.get("spec", "@every 2s"), key), key)
    grace = task.get("missing_grace", 60.0)
    if grace < MIN_MISSING_GRACE:
        raise ConfigError(
            f"watchers.task.missing_grace: must be at least {MIN_MISSING_GRACE:g}s, so one LIST that missed "
            f"a Job does not fail its task, got {grace:g}s"
        )
    ttl = config["jobs"]["defaults"]["ttl_seconds_after_finished"]
    least = math.ceil(interval + grace)
    if ttl is not None and ttl < least:
        raise ConfigError(
            f"jobs.defaults.ttl_seconds_after_finished: must be at least {least} (the task watcher's interval "
            f"{interval:g}s + watchers.task.missing_grace {grace:g}s), or null to keep finished Jobs, got {ttl}: "
            "a Job deleted before the task watcher saw it finish fails its task with 'job not found'"
        )


def _longest_gap(schedule: Schedule, key: str) -> float:
    """Seconds between two runs at most: an ``@every`` interval, or the widest gap of a cron
    expression over its next 64 runs (enough for weekly patterns of daily runs)."""
    if isinstance(schedule, Every):
        if schedule.interval > MAX_DURATION:
            raise ConfigError(f"{key}: @every must be at most 365 days, got {schedule.interval:g}s")
        return schedule.interval
    assert isinstance(schedule, Cron)
    it = croniter(schedule.expression, datetime(2025, 1, 1), second_at_beginning=True)
    try:
        runs = [it.get_next(datetime) for _ in range(65)]
    except CroniterBadDateError:  # valid fields that name no date, such as February 31st
        raise ConfigError(f"{key}: {schedule.expression!r} never runs") from None
    return float(max((b - a).total_seconds() for a, b in zip(runs, runs[1:], strict=False)))


def _check_section(prefix: str, section: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(section, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {section!r}")
    unknown = sorted(set(section) - set(schema))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known here: {', '.join(sorted(schema))})")
    out: dict[str, Any] = {}
    for key, value in section.items():
        rule = schema[key]
        path = f"{prefix}{key}"
        if rule == "*watchers":
            out[key] = _check_watchers(path, value)
        elif isinstance(rule, dict):
            out[key] = _check_section(path + ".", value, rule)
        else:
            out[key] = rule(path, value)
    return out


def _check_watchers(prefix: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping of watcher name to settings")
    out: dict[str, Any] = {}
    for name, section in value.items():
        if name == "task":
            out[name] = _check_section(f"{prefix}.{name}.", section or {}, TASK_WATCHER_SCHEMA)
        else:  # a plug-in's own keys are its business; check what every watcher has
            if section is not None and not isinstance(section, Mapping):
                raise ConfigError(f"{prefix}.{name}: expected a mapping of settings (spec, enabled, ...), "
                                  f"got {section!r}")
            own = dict(section or {})
            known = {k: own.pop(k) for k in list(own) if k in WATCHER_SCHEMA}
            out[name] = {**own, **_check_section(f"{prefix}.{name}.", known, WATCHER_SCHEMA)}
    return out


MASK = "******"
_SECRET_KEYS = {"password", "tokens", "session_secret"}


def masked(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with secrets hidden: passwords, and the password part of URLs and DSNs."""
    def walk(key: str, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: walk(k, x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(key, x) for x in v]
        if key in _SECRET_KEYS and v:
            return MASK
        if isinstance(v, str):
            v = re.sub(r"(://[^:/@\s]*:)[^@\s]+@", rf"\1{MASK}@", v)
            v = re.sub(r"(\bpassword=)\S+", rf"\1{MASK}", v)
        return v
    return walk("", config)  # type: ignore[no-any-return]
