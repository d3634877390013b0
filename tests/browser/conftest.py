"""Browser tests: a real ``nightwatch run`` (the embedded default: SQLite, file lock, local
jobs, in a temporary directory, the task watcher every 200 ms) with its server on a free port
and a token, driven by Debian's headless Chromium through chromium-driver (Selenium).

One daemon and one browser serve the whole module (starting Chromium costs a second);
each test signs in afresh or not, as it needs. Every test saves a screenshot of what it saw
last in ``$NIGHTWATCH_SCREENSHOTS`` (default: the session's temporary directory).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from browser_pages import TOKEN, WAIT, Console

SESSION_SECRET = "browser-tests-session-secret-0123456789abcdef"

_SCRUB = ("NIGHTWATCH_CONFIG", "NIGHTWATCH_REPLICA")


def _missing(what: str) -> None:
    message = f"{what} not found: apt-get install chromium chromium-driver"
    if os.environ.get("NIGHTWATCH_REQUIRE_BACKENDS") == "1":
        pytest.fail(f"NIGHTWATCH_REQUIRE_BACKENDS=1 but {message}", pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
            return int(answer.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def console_config(workdir: Path, port: int, identity: str, auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "store": {"backend": "sqlite", "sqlite": {"path": str(workdir / "nightwatch.db")}},
        "lock": {"backend": "file", "file": {"path": str(workdir / "nightwatch.lock")}, "identity": identity,
                 "renew_interval": "500ms", "retry_interval": "300ms"},
        "jobs": {"backend": "local", "allowed_namespaces": ["default", "team-a"],
                 "local": {"state_dir": str(workdir / "jobs")}},
        "watchers": {"task": {"spec": "@every 200ms"}},
        "server": {"listen": f"127.0.0.1:{port}", "auth": auth},
        "log": {"level": "info", "format": "text"},
    }


def _start(workdir: Path, identity: str) -> Console:
    """``nightwatch run`` as ``identity`` on the shared database, lock and job directory, once it
    answers /readyz (a leader, or a standby that sees the leader)."""
    port = _free_port()
    config = workdir / f"{identity}.yaml"
    auth = {"tokens": [TOKEN], "read": True, "session_secret": SESSION_SECRET}  # one sign-in for both
    config.write_text(yaml.safe_dump(console_config(workdir, port, identity, auth)))
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    log = workdir / f"{identity}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nightwatch", "run", "--config", str(config)],
                                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    served = Console(f"http://127.0.0.1:{port}", workdir, proc, log, config)
    deadline = time.monotonic() + WAIT
    while not _ready(served.url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise AssertionError(f"nightwatch run ({identity}) did not become ready:\n{served.log_text()}")
        time.sleep(0.1)
    return served


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The leader (the first replica up)."""
    workdir = tmp_path_factory.mktemp("console")
    (workdir / "gates").mkdir()
    served = _start(workdir, "leader-1")
    try:
        yield served
    finally:
        _stop(served.proc)
        _stop_jobs(workdir / "jobs")


@pytest.fixture(scope="module")
def standby(console: Console) -> Iterator[Console]:
    """A second replica on the same store and lock: it serves the console but does not lead."""
    served = _start(console.workdir, "standby-1")
    try:
        yield served
    finally:
        _stop(served.proc)


def _stop_jobs(state_dir: Path) -> None:
    """Kill what a test's jobs left running (a job outlives its daemon on purpose)."""
    for pid_file in state_dir.glob("jobs/*/*/pid"):
        with contextlib.suppress(ValueError, OSError):
            os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium:
        _missing("chromium")
    if not chromedriver:
        _missing("chromedriver (chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run",
                "--disable-background-networking", "--lang=en-US"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=str(chromedriver)), options=options)
    browser.implicitly_wait(0)  # every wait is explicit
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = Path(os.environ.get("NIGHTWATCH_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def screenshot(driver: Any, screenshot_dir: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[str], Path]]:
    """``screenshot(name)`` saves the page now; the test's last page is saved at its end too."""
    taken: list[Path] = []

    def take(name: str) -> Path:
        path = screenshot_dir / f"{name}.png"
        driver.save_screenshot(str(path))
        taken.append(path)
        return path

    yield take
    take(request.node.name)
