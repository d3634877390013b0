"""For the API tests: a config for ``nightwatch run`` with its HTTP server on a free port,
on the embedded default (SQLite, file lock, local jobs) or PostgreSQL, and a small HTTP client
(urllib: a real HTTP request per call, nothing in-process)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemons import free_port, wait_until
from itsdangerous import TimestampSigner

TOKEN = "test-token-" + "x" * 24
SECRET = "test-session-secret-" + "y" * 24
SESSION_COOKIE = "nightwatch_session"


def api_config(workdir: Path, store: dict[str, Any], *, tokens: list[str] | None = None,
               read: bool = False) -> dict[str, Any]:
    return {
        "store": store,
        "lock": {"backend": "file", "name": "nightwatch", "ttl": "3s", "renew_interval": "500ms",
                 "renew_deadline": "2s", "retry_interval": "300ms", "file": {"path": str(workdir / "nw.lock")}},
        "jobs": {"backend": "local", "allowed_namespaces": ["default", "other"],
                 "local": {"state_dir": str(workdir / "jobs"), "record_path": str(workdir / "launches.txt")}},
        "watchers": {"task": {"spec": "@every 300ms", "batch_size": 100, "concurrency": 8, "missing_grace": "30s"}},
        "server": {"listen": "", "auth": {"tokens": [TOKEN] if tokens is None else tokens, "read": read,
                                          "session_secret": SECRET}},
        "log": {"level": "info", "format": "json"},
    }


def sqlite_store(workdir: Path) -> dict[str, Any]:
    return {"backend": "sqlite", "sqlite": {"path": str(workdir / "nightwatch.db")}}


def postgres_store(dsn: str) -> dict[str, Any]:
    return {"backend": "postgres", "postgres": {"dsn": dsn, "connect_timeout": "2s", "statement_timeout": "5s"}}


def listen_overrides() -> tuple[str, dict[str, Any]]:
    port = free_port()
    return f"http://127.0.0.1:{port}", {"server": {"listen": f"127.0.0.1:{port}"}}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Api:
    base: str
    token: str | None = None

    def call(self, method: str, path: str, body: Any = None, *, token: str | None = "default",
             headers: dict[str, str] | None = None, data: bytes | None = None, timeout: float = 10) -> Answer:
        if data is None and body is not None:
            data = json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, method=method, data=data)
        req.add_header("Content-Type", "application/json")
        bearer = self.token if token == "default" else token
        if bearer:
            req.add_header("Authorization", f"Bearer {bearer}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode())
        except urllib.error.HTTPError as e:
            return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode())

    def get(self, path: str, **kw: Any) -> Answer:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Answer:
        return self.call("POST", path, body, **kw)

    def task(self, task_id: int) -> dict[str, Any]:
        answer = self.get(f"/api/v1/tasks/{task_id}")
        assert answer.status == 200, answer
        return answer.json  # type: ignore[no-any-return]

    def wait_status(self, task_id: int, statuses: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
        return wait_until(lambda: (t := self.task(task_id))["status"] in statuses and t, timeout,
                          lambda: f"task {task_id} to reach {statuses}: {self.task(task_id)}")

    def submit(self, name: str, command: list[str], args: list[str] | None = None, **extra: Any) -> dict[str, Any]:
        answer = self.post("/api/v1/tasks", {"name": name, "namespace": "default", "image": "busybox",
                                             "command": command, "args": args or [], **extra})
        assert answer.status == 201, answer
        return answer.json  # type: ignore[no-any-return]

    def ready(self, timeout: float = 30) -> None:
        def up() -> bool:
            try:
                return self.get("/api/v1/cluster", timeout=2).status == 200
            except OSError:
                return False
        wait_until(up, timeout, f"the API on {self.base}", interval=0.2)


def session_cookie(session: dict[str, Any], secret: str = SECRET) -> str:
    """A session cookie as Starlette's SessionMiddleware signs it (itsdangerous, base64 JSON)."""
    data = base64.b64encode(json.dumps(session).encode())
    return f"{SESSION_COOKIE}={TimestampSigner(secret).sign(data).decode()}"


def signed_in_session(csrf: str, token: str = TOKEN) -> dict[str, Any]:
    """What ``auth.sign_in`` keeps in the session for ``token``."""
    import hashlib

    return {"token_sha256": hashlib.sha256(token.encode()).hexdigest(), "csrf": csrf}
