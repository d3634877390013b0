"""The rules ``config.SCHEMA`` checks each value with: ``rule(key, value)`` returns the value
to use (durations as float seconds) or raises ConfigError, one line naming the key and what
is allowed."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any

from nightwatch.app.durations import parse_duration
from nightwatch.domain.errors import ConfigError

Check = Callable[[str, Any], Any]


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
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < minimum:
            raise ConfigError(f"{key}: expected a finite number of at least {minimum:g}, got {v!r}")
        return float(v)
    return check_


MAX_DURATION = 365 * 86400.0  # longer waits overflow the stdlib's timeouts, and mean a typo


def duration(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise ConfigError(f"{key}: expected a duration (like 10s, 500ms, 2m), got {v!r}")
    try:
        seconds = parse_duration(v)
    except ValueError:
        raise ConfigError(f"{key}: {v!r} is not a duration (like 10s, 500ms, 2m)") from None
    if seconds <= 0:
        raise ConfigError(f"{key}: must be longer than 0, got {v!r}")
    if seconds > MAX_DURATION:
        raise ConfigError(f"{key}: must be at most 365 days, got {v!r}")
    return seconds


def duration_or_off(key: str, v: Any) -> float:
    """A duration, or 0 (``0``, ``0s``) for "not at all"."""
    if not isinstance(v, bool) and isinstance(v, str | int | float):
        try:
            if parse_duration(v) == 0:
                return 0.0
        except ValueError:
            pass
    return duration(key, v)


def duration_up_to(maximum: float, why: str) -> Check:
    def check_(key: str, v: Any) -> Any:
        seconds = duration(key, v)
        if seconds > maximum:
            raise ConfigError(f"{key}: must be at most {maximum:g}s ({why}), got {v!r}")
        return seconds
    return check_


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
    """``host:port``, ``:port`` (every IPv4 address) or ``[ipv6]:port``; empty = off."""
    if v in (None, ""):
        return ""
    if not isinstance(v, str):
        raise ConfigError(f"{key}: expected host:port (like 127.0.0.1:9090) or empty for off, got {v!r}")
    _, port = split_listen(key, v)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} is not from 1 to 65535, got {v!r}")
    return v


def split_listen(key: str, v: str) -> tuple[str, int]:
    """(host, port) of a checked ``server.listen``; the host of ``[::1]:9090`` is ``::1``."""
    m = re.fullmatch(r"\[([^\[\]]*)\]:(\d{1,5})|([\w.\-:]*):(\d{1,5})", v)
    if not m:
        raise ConfigError(f"{key}: expected host:port (like 127.0.0.1:9090 or [::1]:9090) or empty for off, "
                          f"got {v!r}")
    if m.group(1) is not None:
        try:
            ipaddress.IPv6Address(m.group(1))
        except ValueError:
            raise ConfigError(f"{key}: {m.group(1)!r} is not an IPv6 address, got {v!r}") from None
        return m.group(1), int(m.group(2))
    if ":" in m.group(3):
        raise ConfigError(f"{key}: write an IPv6 address in brackets, like [::1]:9090, got {v!r}")
    return m.group(3), int(m.group(4))


MIN_TOKEN_LENGTH = 16  # characters: a shorter bearer token is guessable
PLACEHOLDER = "change-me"  # how the example Secret's values start (deploy/kubernetes/secret.example.yaml)


def tokens(key: str, v: Any) -> list[str]:
    """API tokens: a list of strings; empty ones (an unset ``${VAR:}``) are left out."""
    if v is None:
        return []
    if isinstance(v, str):  # one token from one variable
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{key}: expected a list of tokens (strings, like \"${{NIGHTWATCH_API_TOKEN:}}\"), got "
                          f"a {type(v).__name__}")
    out = [x for x in v if x]
    for i, token in enumerate(out):  # never echo a token into a log
        _not_a_placeholder(f"{key}[{i}]", token)
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise ConfigError(f"{key}[{i}]: a token must be at least {MIN_TOKEN_LENGTH} characters without "
                              f"spaces (it has {len(token)}); make one with: openssl rand -hex 32")
    return out


def _not_a_placeholder(key: str, value: str) -> None:
    """The example Secret's values (``change-me-...``) are long enough to pass: refuse them."""
    if value.lower().startswith(PLACEHOLDER):
        raise ConfigError(f"{key}: still the example's placeholder ({PLACEHOLDER}...): set a real value, "
                          "made with: openssl rand -hex 32")


def session_secret(key: str, v: Any) -> str | None:
    if v in (None, ""):
        return None
    if isinstance(v, str):
        _not_a_placeholder(key, v)
    if not isinstance(v, str) or len(v) < 32:
        raise ConfigError(f"{key}: expected a string of at least 32 characters (openssl rand -hex 32), or null "
                          "for a random one per process")
    return v
