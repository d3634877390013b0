"""What a person does in the console, as Selenium steps with explicit waits (no sleeps)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

TOKEN = "browser-test-token-0123456789"
WAIT = 20.0  # seconds an explicit wait may take before the test fails (a slow, shared machine)
NO_RELOAD_MARK = "window.__nightwatchNoReload"


@dataclass
class Console:
    """The daemon under test: its base URL, a directory the tests' jobs can see, its log."""

    url: str
    workdir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    config: Path

    def gate(self, name: str) -> Path:
        """A file a job waits for (``until_opened``): the test decides when the job ends."""
        return self.workdir / "gates" / name

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def wait(driver: Any, timeout: float = WAIT) -> WebDriverWait:  # type: ignore[type-arg]
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,))


def text_of(driver: Any, css: str) -> str:
    """The text of the first element ``css`` finds ("" when none). The live updates replace parts
    of a page, so an element found may be gone before it is read: then it is looked up again."""
    for _ in range(20):
        found = driver.find_elements(By.CSS_SELECTOR, css)
        try:
            return str(found[0].text).strip() if found else ""
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css!r} keeps being replaced on {driver.current_url}")


def click(driver: Any, css: str) -> None:
    """Click the element ``css``, looked up again if a live update replaced it meanwhile."""
    for _ in range(20):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css!r} keeps being replaced on {driver.current_url}")


def wait_text(driver: Any, css: str, expected: str, timeout: float = WAIT) -> None:
    """Until the element ``css`` reads exactly ``expected``; the failure names what it read."""
    try:
        wait(driver, timeout).until(lambda d: text_of(d, css) == expected)
    except Exception as e:
        raise AssertionError(f"{css!r} reads {text_of(driver, css)!r}, not {expected!r}, "
                             f"after {timeout:g}s on {driver.current_url}") from e


def sign_in(driver: Any, url: str, token: str = TOKEN, *, then: str = "/") -> None:
    driver.get(f"{url}/login?next={then}")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "sign-in-button").click()
    wait(driver).until(lambda d: "/login" not in d.current_url or d.find_elements(By.ID, "problem"))


def submit(driver: Any, url: str, **fields: str) -> int:
    """Fill the submit form (name, namespace, image, command, args, env) and send it; the id of
    the task page it lands on."""
    driver.get(f"{url}/submit")
    form = driver.find_element(By.ID, "submit-form")
    for name, value in fields.items():
        box = form.find_element(By.NAME, name)
        box.clear()
        box.send_keys(value)
    driver.find_element(By.ID, "submit").click()
    wait(driver).until(lambda d: re.search(r"/tasks/\d+", d.current_url) or d.find_elements(By.ID, "problem"))
    found = re.search(r"/tasks/(\d+)", driver.current_url)
    assert found, f"submit did not reach a task page: {text_of(driver, '#problem')}"
    return int(found.group(1))


def mark_page(driver: Any) -> None:
    """Mark the loaded document: a reload or navigation would lose the mark."""
    driver.execute_script(f"{NO_RELOAD_MARK} = true;")


def not_reloaded(driver: Any) -> bool:
    return bool(driver.execute_script(f"return {NO_RELOAD_MARK} === true;"))


def gated(gate: Any, then: str) -> dict[str, str]:
    """Form fields for a job that waits until the test creates ``gate``, then runs ``then``."""
    return {"command": "sh -c",
            "args": f"echo waiting; while [ ! -e '{gate}' ]; do sleep 0.05; done; {then}"}
