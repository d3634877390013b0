"""Logs read line by line in bounded memory, whatever their size: the splitter of a streamed log
(Kubernetes) and the readers of log files from their end (local)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

LINE_LIMIT = 64 * 1024  # bytes; a longer line is cut there (with "…") and the rest of it skipped
BLOCK = 64 * 1024  # bytes read at a time


def lines(chunks: Iterable[bytes], limit: int = LINE_LIMIT) -> Iterator[str]:
    """Split a byte stream into lines (without newlines), decoded leniently; a last line without
    a newline counts; a line longer than ``limit`` bytes is cut there (with "…")."""
    partial = bytearray()
    skipping = False
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if not skipping:
                partial += piece
                if len(partial) > limit:
                    yield partial[:limit].decode("utf-8", "replace") + "…"
                    partial.clear()
                    skipping = True
            if end < 0:
                break
            if not skipping:
                yield partial.decode("utf-8", "replace")
            partial.clear()
            skipping = False
            start = end + 1
    if partial and not skipping:
        yield partial.decode("utf-8", "replace")


def chunks(f: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """The bytes of ``f`` from ``start`` to ``end``, a block at a time."""
    f.seek(start)
    left = end - start
    while left > 0:
        block = f.read(min(BLOCK, left))
        if not block:
            return
        left -= len(block)
        yield block


def tail_start(f: BinaryIO, end: int, n: int | None) -> tuple[int, int]:
    """``(offset, lines)``: where the last ``n`` lines before ``end`` start (None: all of them),
    and how many lines that is (fewer when the file has fewer). Reads backwards a block at a
    time, keeping nothing but the count."""
    if n is None:
        return 0, -1
    if n <= 0 or end <= 0:
        return end, 0
    f.seek(end - 1)
    pos = end - 1 if f.read(1) == b"\n" else end  # where the last line ends (its newline excluded)
    seen = 0
    while pos > 0:
        size = min(BLOCK, pos)
        f.seek(pos - size)
        block = f.read(size)
        at = len(block)
        while (at := block.rfind(b"\n", 0, at)) >= 0:
            seen += 1
            if seen == n:
                return pos - size + at + 1, n
        pos -= size
    return 0, seen + 1


def size_of(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except (FileNotFoundError, NotADirectoryError):
        return None


def complete_end(f: BinaryIO, start: int, end: int) -> int:
    """Where the last complete line before ``end`` ends (just past its newline), looking back at
    most ``LINE_LIMIT`` bytes; ``end`` itself when the unfinished line is already that long."""
    low = max(start, end - LINE_LIMIT)
    pos = end
    while pos > low:
        size = min(BLOCK, pos - low)
        f.seek(pos - size)
        at = f.read(size).rfind(b"\n")
        if at >= 0:
            return pos - size + at + 1
        pos -= size
    return end if end - start >= LINE_LIMIT else start


def read_logs(paths: list[str], tail: int | None, follow: bool, ended: Callable[[], bool],
              poll: float = 0.2, stop: threading.Event | None = None) -> Iterator[str]:
    """The lines of the files ``paths`` in turn (stdout, then stderr): the last ``tail`` of them
    all (counted from the end of the last file), then, with ``follow``, new complete lines of
    each as they come, until ``ended()`` or ``stop`` is set (checked at every poll)."""
    stop = stop or threading.Event()
    files: list[BinaryIO | None] = []
    try:
        for path in paths:
            try:
                files.append(open(path, "rb"))  # noqa: SIM115 - closed below, after the last yield
            except (FileNotFoundError, NotADirectoryError):
                files.append(None)
        done = ended() if follow else True
        ends = [_end(f, done) for f in files]
        starts = [e for e in ends]
        left = tail
        for i in reversed(range(len(files))):
            f = files[i]
            if f is None or (left is not None and left <= 0):
                continue
            starts[i], found = tail_start(f, ends[i], left)
            left = None if left is None else left - found
        for f, start, end in zip(files, starts, ends, strict=True):
            if f is not None:
                yield from lines(chunks(f, start, end))
        while follow and not done:
            if stop.wait(poll):
                return
            done = ended()
            for i, f in enumerate(files):
                if f is None:
                    try:
                        f = files[i] = open(paths[i], "rb")  # noqa: SIM115
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                new_end = _end(f, done, ends[i])
                yield from lines(chunks(f, ends[i], new_end))
                ends[i] = new_end
    finally:
        for f in files:
            if f is not None:
                f.close()


def _end(f: BinaryIO | None, done: bool, start: int = 0) -> int:
    if f is None:
        return 0
    size = os.fstat(f.fileno()).st_size
    return size if done else complete_end(f, start, size)
