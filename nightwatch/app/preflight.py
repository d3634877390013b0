"""Start-up checks beyond the config's own values, shared by ``run`` and ``config validate``.

They build what ``run`` builds (adapters, every enabled watcher with its schedule) without
connecting or starting anything, and check that the paths the chosen backends write to can be
used, so a broken setup stops start-up with one line instead of a leader that warns every run.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from nightwatch.domain.errors import ConfigError


def check_startup(container: Any, config: dict[str, Any]) -> None:
    """ConfigError (one line) when ``run`` could not work with ``config``; nothing is started."""
    check_paths(config)
    container.watchers()  # the store, the gateway and every enabled watcher; schedules parsed
    container.lock()
    check = getattr(container.gateway(), "check", None)
    if callable(check):  # an adapter that loads its configuration lazily: fail at start, not per task
        check()


def check_paths(config: dict[str, Any]) -> None:
    """The local paths of the chosen backends: each is, or can be made, what its adapter needs."""
    if config["jobs"]["backend"] == "local":
        _directory("jobs.local.state_dir", config["jobs"]["local"]["state_dir"])
    if config["lock"]["backend"] == "file":
        _file("lock.file.path", config["lock"]["file"]["path"])
    if config["store"]["backend"] == "sqlite" and config["store"]["sqlite"]["path"] != ":memory:":
        _file("store.sqlite.path", config["store"]["sqlite"]["path"])


def _directory(key: str, path: str) -> None:
    full = os.path.abspath(path)
    if os.path.isdir(full):
        _writable(key, full, full)
    elif os.path.lexists(full):
        raise ConfigError(f"{key}: {path} is not a directory")
    else:
        _creatable(key, path, full)


def _file(key: str, path: str) -> None:
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise ConfigError(f"{key}: {path} is a directory")
    if os.path.lexists(full):
        try:
            os.close(os.open(full, os.O_RDWR | os.O_CLOEXEC))
        except OSError as e:
            raise ConfigError(f"{key}: cannot open {path} for writing: {e.strerror or e}") from None
    else:
        _creatable(key, path, full)


def _creatable(key: str, path: str, full: str) -> None:
    """The nearest existing ancestor is a directory we may create entries in."""
    ancestor = os.path.dirname(full)
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ConfigError(f"{key}: cannot create {path}: {ancestor} is not a directory")
    _writable(key, path, ancestor)


def _writable(key: str, path: str, directory: str) -> None:
    """Create and remove a scratch directory: the permission bits, a read-only mount and
    file systems that refuse even root (/proc) all answer the same way, and nothing is left."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".nightwatch-check-", dir=directory))
    except OSError as e:
        raise ConfigError(f"{key}: cannot create {path}: {directory}: {e.strerror or e}") from None
