"""The cancel of a local Job (see ``local.py`` for the layout): the ``cancelled`` marker, SIGTERM
to the Job's process group, SIGKILL after the grace, and the removal of its directory once
nothing of it is left -- by the canceller's own thread, or by whoever observes it later."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from nightwatch.adapters.jobs._local_files import group_alive, kill_group, mtime, read_int

CANCEL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL of a cancelled Job (jobs.local.cancel_grace)
MARKER = "cancelled"


def mark_cancelled(job_dir: str, now: float) -> bool:
    """Write the marker (its time, Unix seconds); False when it was there already or the Job is
    gone. Other OSErrors propagate."""
    try:
        fd = os.open(os.path.join(job_dir, MARKER), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except (FileExistsError, FileNotFoundError):
        return False
    try:
        os.write(fd, f"{now:.6f}\n".encode())
    finally:
        os.close(fd)
    return True


def is_cancelled(job_dir: str) -> bool:
    return os.path.exists(os.path.join(job_dir, MARKER))


def reap_cancelled(job_dir: str, pid: int | None, grace: float, *, reap: Callable[[], None], use_proc: bool,
                   remove: Callable[[str], None]) -> None:
    """A cancel's second half, on its own thread: SIGKILL the group after ``grace`` if anything
    of it is still there, then remove the Job. ``reap`` collects our own exited children."""
    if pid is not None:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reap()
            if not group_alive(pid, use_proc=use_proc):
                break
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        else:
            kill_group(pid)
        for _ in range(100):  # SIGKILL takes effect at once; the zombies wait to be reaped
            reap()
            if not group_alive(pid, use_proc=use_proc):
                break
            time.sleep(0.01)
    remove(job_dir)


def finish_cancel(job_dir: str, now: float, grace: float, *, use_proc: bool, remove: Callable[[str], None]) -> None:
    """For a Job cancelled by someone else (another replica, or this one before a restart):
    SIGKILL its group once the grace is over (plus a second), remove it when nothing is left."""
    cancelled = mtime(os.path.join(job_dir, MARKER))
    over = cancelled is not None and now - cancelled >= grace + 1
    pid = read_int(os.path.join(job_dir, "pid"))
    if pid is not None and group_alive(pid, use_proc=use_proc):
        if over:
            kill_group(pid)
        return
    if over:
        remove(job_dir)
