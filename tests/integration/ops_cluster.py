"""Helpers for the operations tests: `nightwatch run` replicas as subprocesses, their JSON logs
and HTTP endpoints, a plug-in watcher installed through an entry point, and a TCP proxy that
can cut a daemon off from its database."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
NIGHTWATCH = [sys.executable, "-m", "nightwatch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# -- metrics ---------------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> tuple[set[str], Samples]:
    """Family names (counters keep their ``_total``) and every sample by (name, labels)."""
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as Prometheus would show no series)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every sample of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))


# -- a plug-in watcher, installed through the nightwatch.watchers entry point ----------------

SLOW_PLUGIN = '''
"""A watcher whose runs take ``seconds``: waiting on its cancellation, or sleeping through it."""
import logging
import time

logger = logging.getLogger("slowpkg")


class SlowWatcher:
    def __init__(self, spec, seconds, honour):
        self.name, self.spec, self.seconds, self.honour = "slow", spec, seconds, honour

    def run(self, ctx):
        logger.info("slow run started (epoch %s)", ctx.epoch)
        if self.honour:
            if ctx.cancelled.wait(self.seconds):
                logger.info("slow run cancelled")
                return
        else:
            time.sleep(self.seconds)
        logger.info("slow run finished")


def make(deps, config):
    return SlowWatcher(config.get("spec", "@every 1s"), float(config.get("seconds", 30)),
                       bool(config.get("honour_cancel", True)))
'''


def install_slow_plugin(directory: Path) -> Path:
    """A directory that, on PYTHONPATH, provides the ``slow`` watcher as a third party would."""
    dist = directory / "slowpkg-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: slowpkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nightwatch.watchers]\nslow = slowpkg:make\n")
    (directory / "slowpkg.py").write_text(SLOW_PLUGIN)
    return directory


# -- replicas --------------------------------------------------------------------------------


class Replica:
    """One `nightwatch run` process with its own config file, port and JSON log."""

    def __init__(self, name: str, workdir: Path, config: Mapping[str, Any], *,
                 pythonpath: Path | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.config = {**config, "server": {**config.get("server", {}), "listen": f"127.0.0.1:{self.port}"},
                       "log": {"level": "info", "format": "json"}}
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.log_path = workdir / f"{name}.log"
        self.env = {**os.environ, "NIGHTWATCH_REPLICA": name}
        if pythonpath is not None:
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")]))
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Replica:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*NIGHTWATCH, "run", "--config", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.workdir)
        return self

    def signal(self, signum: int) -> float:
        """Send ``signum``; the wall-clock time just before, as the logs' ``ts`` count it."""
        assert self.proc is not None
        sent = time.time()
        self.proc.send_signal(signum)
        return sent

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.url + path)

    def answers(self) -> bool:
        try:
            return self.get("/healthz")[0] == 200
        except OSError:
            return False

    def metrics(self) -> tuple[set[str], Samples]:
        code, body = self.get("/metrics")
        assert code == 200, body
        return parse_metrics(body)

    def raw_log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """Every log line, parsed (a line that is not a JSON object fails the test)."""
        out = []
        for line in self.raw_log().splitlines():
            doc = json.loads(line)
            assert isinstance(doc, dict), line
            out.append(doc)
        return out

    def find(self, fragment: str, logger: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.raw_log().splitlines():
            if fragment in line:
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if fragment in doc.get("msg", "") and (logger is None or doc.get("logger") == logger):
                        found.append(doc)
        return found

    def is_leader(self) -> bool:
        return bool(self.find(f"{self.name}: became leader"))


def ts(record: Mapping[str, Any]) -> float:
    """A log record's ``ts`` as Unix seconds."""
    from datetime import datetime

    return datetime.fromisoformat(record["ts"]).timestamp()


@contextlib.contextmanager
def replicas(*members: Replica) -> Iterator[tuple[Replica, ...]]:
    for r in members:
        r.start()
    try:
        yield members
    finally:
        for r in members:
            if r.proc is not None and r.proc.poll() is None:
                r.signal(signal.SIGKILL)
            r.kill()


def leader_and_standby(a: Replica, b: Replica, timeout: float = 20) -> tuple[Replica, Replica]:
    """Wait until one leads and the other answers /readyz as a standby."""
    leader = wait_for(lambda: next((r for r in (a, b) if r.is_leader()), None), timeout, "a leader")
    standby = b if leader is a else a
    wait_for(lambda: standby.answers() and standby.get("/readyz")[1].startswith("standby"), timeout,
             f"{standby.name} to stand by")
    return leader, standby


# -- a TCP proxy that can cut the line -------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` drops every connection and refuses
    new ones, ``mend()`` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._mutex = threading.Lock()

    def mend(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        with self._mutex:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._mutex:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
