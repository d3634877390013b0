"""FileLeaderLock: one leader among the processes of one host, by ``flock`` on a file.

The OS drops the lock when the holding process exits or dies (even by SIGKILL), so the
lease lasts exactly as long as its holder: ``acquire`` reports ``math.inf`` validity.
The holder writes its identity into the file so other processes can name it. Deleting or
replacing the file takes leadership away (the next ``renew`` notices).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import threading
import time

from nightwatch.domain.errors import BackendUnavailableError, LeadershipLostError
from nightwatch.domain.ports import LeaderLock

logger = logging.getLogger(__name__)

POLL_INTERVAL = 0.05  # how often wait() looks for a release


class FileLeaderLock(LeaderLock):
    def __init__(self, name: str, path: str, identity: str) -> None:
        self.name = name
        self.path = os.path.abspath(path)
        self.identity = identity
        self._fd: int | None = None  # open and flock()ed while we hold the lock
        self._mutex = threading.Lock()

    def _open(self) -> int:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise BackendUnavailableError(f"file lock {self.name!r}: cannot open {self.path}: {e}") from e

    def _same_file(self, fd: int) -> bool:
        """Is ``fd`` still the file at ``path`` (not deleted or replaced)?"""
        try:
            here, there = os.fstat(fd), os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError as e:  # EACCES, ESTALE ...: a backend problem, never a crash of the daemon
            raise BackendUnavailableError(f"file lock {self.name!r}: stat {self.path}: {e}") from e
        return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)

    def acquire(self) -> float | None:
        with self._mutex:
            if self._fd is not None:
                if self._same_file(self._fd):
                    return math.inf
                self._drop()
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except OSError as e:
                os.close(fd)
                raise BackendUnavailableError(f"file lock {self.name!r}: flock {self.path}: {e}") from e
            try:
                same = self._same_file(fd)
            except BackendUnavailableError:
                os.close(fd)
                raise
            if not same:  # replaced between open() and flock(): try again later
                os.close(fd)
                return None
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, self.identity.encode(), 0)
            except OSError as e:
                os.close(fd)
                raise BackendUnavailableError(f"file lock {self.name!r}: write {self.path}: {e}") from e
            self._fd = fd
            return math.inf

    def renew(self) -> float:
        with self._mutex:
            if self._fd is None:
                raise LeadershipLostError(f"file lock {self.name!r}: not held by {self.identity!r}")
            if not self._same_file(self._fd):
                self._drop()
                raise LeadershipLostError(f"file lock {self.name!r}: {self.path} was deleted or replaced")
            return math.inf

    def release(self) -> None:
        with self._mutex:
            if self._fd is None:
                return
            try:
                if self._same_file(self._fd):
                    os.ftruncate(self._fd, 0)  # tells waiters (and holder()) it is free
            except (OSError, BackendUnavailableError) as e:
                logger.warning("file lock %r: could not clear %s: %s", self.name, self.path, e)
            self._drop()

    def _drop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(fd)

    def _signature(self) -> tuple[int, bytes] | None:
        try:
            with open(self.path, "rb") as f:
                return os.fstat(f.fileno()).st_ino, f.read(4096)
        except OSError:
            return None

    def wait(self, timeout: float) -> bool:
        """Poll the file; a release empties it, a crash is found by the caller's next acquire.

        Polling reads the file instead of probing the flock, so waiting standbys never make
        a contender's non-blocking acquire fail.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        seen = self._signature()
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(POLL_INTERVAL, left))
            if self._signature() != seen:
                return True
        return False

    def holder(self) -> str | None:
        """The identity in the file, if an exclusive lock is held on it (a crashed holder's is not).

        The probe holds a shared lock for microseconds; a contender's acquire in that instant
        fails and succeeds on its next attempt.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise BackendUnavailableError(f"file lock {self.name!r}: cannot open {self.path}: {e}") from e
        try:
            try:  # if a shared lock is granted, nobody holds the exclusive one
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return os.pread(fd, 4096, 0).decode(errors="replace") or None
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def close(self) -> None:
        self.release()
