"""The launch record both job gateways can keep: one line per real create, for tests that
count launches across several processes (``record_path``)."""

from __future__ import annotations

import os


def append_line(path: str, line: str) -> None:
    """One ``write`` on an O_APPEND descriptor: lines from several processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
