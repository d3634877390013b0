"""Small file and process helpers of the local job gateway (see ``local.py`` for the layout)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
from typing import Any

from nightwatch.domain.errors import ConfigError

MESSAGE_LIMIT = 200
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def is_wrapper_of(pid: int, job_dir: str, *, use_proc: bool) -> bool:
    """Is ``pid`` alive and still the wrapper of the Job in ``job_dir``? With ``/proc`` a
    zombie or a pid reused after a reboot does not count (the wrapper's argv names the dir)."""
    if use_proc:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            return False
        return b"\0" + job_dir.encode() + b"\0" in b"\0" + cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


WRAPPER_TOOLS = ("sh", "mkdir", "mv")


@functools.cache
def wrapper_tools(search_path: str = SYSTEM_PATH) -> tuple[str, str, str]:
    """Absolute paths of ``sh``, ``mkdir`` and ``mv`` in ``search_path``, so the Job's own PATH
    cannot change what the wrapper runs. ConfigError (one line) naming what is missing."""
    found = [shutil.which(tool, path=search_path) for tool in WRAPPER_TOOLS]
    missing = [tool for tool, path in zip(WRAPPER_TOOLS, found, strict=True) if path is None]
    if missing:
        raise ConfigError(f"jobs.backend local: the job wrapper needs {', '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not in {search_path}")
    sh, mkdir, mv = (os.path.abspath(path) for path in found if path is not None)
    return sh, mkdir, mv


def kill_group(pid: int) -> None:
    signal_group(pid, signal.SIGKILL)


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def group_alive(pgid: int, *, use_proc: bool) -> bool:
    """Whether any process of the group is left. With ``/proc`` zombies do not count (dead, only
    waiting for their parent -- often init, for the Job's orphans -- to reap them)."""
    if not use_proc:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid).encode() and fields[0] != b"Z":
            return True
    return False


def read_text(path: str) -> str | None:
    """The stripped content of a small file; None when missing or still empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(4096).strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return text or None


def read_int(path: str) -> int | None:
    text = read_text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None


def last_line(path: str) -> str:
    """The last non-empty line of a log, trimmed to ``MESSAGE_LIMIT`` characters."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= MESSAGE_LIMIT else line[: MESSAGE_LIMIT - 1] + "…"
