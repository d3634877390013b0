"""A small thread-safe pool of PyMySQL connections (PyMySQL has none of its own).

A connection that failed at the connection level is thrown away together with every
idle one (after a server restart they are all dead), so the next call reconnects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pymysql

from nightwatch.domain.errors import BackendUnavailableError

_SERVER_GONE = frozenset({1053, 1927})  # server shutdown in progress; connection was killed


def broken(e: BaseException) -> bool:
    """Whether ``e`` means the connection itself is unusable (not just the statement)."""
    if isinstance(e, pymysql.err.InterfaceError | OSError):
        return True
    if isinstance(e, pymysql.err.MySQLError) and e.args and isinstance(e.args[0], int):
        return e.args[0] >= 2000 or e.args[0] in _SERVER_GONE
    return False


class MySQLPool:
    def __init__(self, connect: Callable[[], pymysql.Connection], size: int, wait: float, where: str) -> None:
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[pymysql.Connection] = []
        self._mutex = threading.Lock()
        self._wait = wait
        self._where = where
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[pymysql.Connection]:
        if not self._slots.acquire(timeout=self._wait):
            raise BackendUnavailableError(f"{self._where}: no free connection in the pool for {self._wait:g}s")
        try:
            with self._mutex:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            try:
                yield conn
            except BaseException as e:
                if broken(e):
                    self._discard(conn)
                    self.drain()
                else:
                    try:
                        conn.rollback()  # leave no transaction open for the next user
                    except Exception:
                        self._discard(conn)
                    else:
                        self._put(conn)
                raise
            self._put(conn)
        finally:
            self._slots.release()

    def _put(self, conn: pymysql.Connection) -> None:
        with self._mutex:
            if not self._closed:
                self._idle.append(conn)
                return
        self._discard(conn)

    @staticmethod
    def _discard(conn: pymysql.Connection) -> None:
        with suppress(Exception):
            conn.close()

    def drain(self) -> None:
        """Close every idle connection; in-use ones are closed if they fail."""
        with self._mutex:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)

    def close(self) -> None:
        with self._mutex:
            self._closed = True
        self.drain()
