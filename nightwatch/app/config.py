"""Loading and checking the YAML config (DESIGN §5).

Files are read by dependency-injector's ``Configuration.from_yaml`` (which also does the
``${VAR}`` / ``${VAR:default}`` interpolation), laid over the built-in defaults, then
checked here key by key so a wrong value stops start-up with one line naming the key
and what is allowed. The result has durations as float seconds.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from dependency_injector import providers

from nightwatch.app.durations import parse_duration
from nightwatch.domain.errors import ConfigError

DEFAULT_LOCATION = Path("config") / "nightwatch.yaml"
Check = Callable[[str, Any], Any]


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


def load_config(explicit: str | None = None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The effective, checked config. ConfigError (one line) on any problem."""
    defaults = _read(None)  # interpolated too: its secrets come from the environment
    path = find_config(explicit)
    merged = _merge(defaults, _read(path) if path is not None else {})
    if overrides:
        merged = _merge(merged, dict(overrides))
    return check(merged)


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# -- checks ---------------------------------------------------------------------------------

def one_of(*allowed: str) -> Check:
    def check_(key: str, v: Any) -> Any:
        if v not in allowed:
            raise ConfigError(f"{key}: {v!r} is not one of {' | '.join(allowed)}")
        return v
    return check_


def text(empty_ok: bool = False, null_ok: bool = False) -> Check:
    def check_(key: str, v: Any) -> Any:
        if v is None and null_ok:
            return None
        if isinstance(v, int | float) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or (not v and not empty_ok):
            raise ConfigError(f"{key}: expected a {'' if empty_ok else 'non-empty '}string, got {v!r}")
        return v
    return check_


def integer(low: int, high: int | None = None, null_ok: bool = False) -> Check:
    def check_(key: str, v: Any) -> Any:
        if v is None and null_ok:
            return None
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < low or (high is not None and v > high):
            limits = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise ConfigError(f"{key}: expected a whole number {limits}{', or null' if null_ok else ''}, "
                              f"got {v!r}")
        return v
    return check_


def number(minimum: float) -> Check:
    def check_(key: str, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float) or v < minimum:
            raise ConfigError(f"{key}: expected a number of at least {minimum}, got {v!r}")
        return float(v)
    return check_


def duration(key: str, v: Any) -> float:
    try:
        seconds = parse_duration(v)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: {v!r} is not a duration (like 10s, 500ms, 2m)") from None
    if seconds <= 0:
        raise ConfigError(f"{key}: must be longer than 0, got {v!r}")
    return seconds


def boolean(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key}: expected true or false, got {v!r}")
    return v


def strings(key: str, v: Any) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise ConfigError(f"{key}: expected a list of non-empty strings, got {v!r}")
    return list(v)


def redis_urls(key: str, v: Any) -> list[str]:
    urls = strings(key, v)
    if len(urls) not in (1, 3, 5, 7):
        raise ConfigError(f"{key}: give 1 URL (single node) or 3, 5 or 7 (Redlock quorum), got {len(urls)}")
    for url in urls:
        if not re.match(r"^(redis|rediss|unix)://", url):
            raise ConfigError(f"{key}: {url!r} is not a redis:// or rediss:// URL")
    return urls


def listen(key: str, v: Any) -> str:
    if v in (None, ""):
        return ""
    if not isinstance(v, str) or not re.match(r"^[\w.\-\[\]:]*:\d{1,5}$", v):
        raise ConfigError(f"{key}: expected host:port (like 127.0.0.1:9090) or empty for off, got {v!r}")
    return v


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
                     "pool_size": integer(1, 64)},
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
                     "active_deadline_seconds": integer(1, null_ok=True)},
        "local": {"state_dir": text(), "record_path": text(null_ok=True)},
        "fake": {"default_duration": number(0), "start_delay": number(0), "record_path": text(null_ok=True)},
        "kubernetes": {"kubeconfig": text(null_ok=True), "context": text(null_ok=True), "qps": number(0.1),
                       "burst": integer(1), "request_timeout": duration},
    },
    "watchers": "*watchers",
    "server": {"listen": listen, "shutdown_timeout": duration},
    "log": {"level": one_of("debug", "info", "warning", "error"), "format": one_of("text", "json")},
}

TASK_WATCHER_SCHEMA: dict[str, Any] = {
    "spec": text(), "enabled": boolean, "batch_size": integer(1, 10000), "concurrency": integer(1, 256),
    "missing_grace": duration, "count_interval": duration,
}
WATCHER_SCHEMA: dict[str, Any] = {"spec": text(), "enabled": boolean}


def check(config: Mapping[str, Any]) -> dict[str, Any]:
    out = _check_section("", config, SCHEMA)
    out["jobs"].setdefault("fake", {})
    lock = out["lock"]
    if not lock["renew_interval"] < lock["renew_deadline"] < lock["ttl"]:
        raise ConfigError(
            "lock: need renew_interval < renew_deadline < ttl (so a leader steps down before its lease "
            f"can expire), got {lock['renew_interval']:g}s, {lock['renew_deadline']:g}s, {lock['ttl']:g}s"
        )
    return out


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
            own = dict(section or {})
            known = {k: own.pop(k) for k in list(own) if k in WATCHER_SCHEMA}
            out[name] = {**own, **_check_section(f"{prefix}.{name}.", known, WATCHER_SCHEMA)}
    return out


MASK = "******"
_SECRET_KEYS = {"password"}


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
