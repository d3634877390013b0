"""Durations as the config writes them: ``10s``, ``500ms``, ``2m``, ``1h30m``, ``30d``."""

from __future__ import annotations

import math
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``. Plain numbers are seconds. ValueError when it is not a duration."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a duration")
    if isinstance(text, int | float):
        if not math.isfinite(text) or text < 0:
            raise ValueError(f"{text!r} is not a duration (negative or not finite)")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration like 10s, 500ms, 2m, 1h30m or 30d")
    s = text.strip().replace(" ", "")
    if not s or _PART.sub("", s):
        raise ValueError(f"{text!r} is not a duration like 10s, 500ms, 2m, 1h30m or 30d")
    seconds = sum(float(n) * _UNIT[u] for n, u in _PART.findall(s))
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is too long a duration")
    return seconds
