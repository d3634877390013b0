"""The web console in a real headless Chromium against a real daemon: sign in, submit a task
through the form and watch it finish without reloading, read its log, cancel a long task
with the button, retry a failed one. Jobs that must still be running when the test looks
wait for a gate file the test creates, so no step depends on how fast the machine is."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from browser_pages import (
    TOKEN,
    Console,
    click,
    gated,
    mark_page,
    not_reloaded,
    sign_in,
    submit,
    text_of,
    wait,
    wait_text,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

HOSTILE = "<script>window.__pwned=1</script><b>bold</b>&amp;"  # must come back as text, never markup


def row_status(driver: Any, task_id: int) -> str:
    return text_of(driver, f'#tasks tr[data-task-id="{task_id}"] td.status')


def test_signing_in_is_required_when_reads_need_a_token(console: Console, driver: Any, screenshot: Any) -> None:
    driver.delete_all_cookies()
    driver.get(console.url + "/")
    wait(driver).until(lambda d: d.find_elements(By.ID, "login-form"))
    assert "/login" in driver.current_url
    field = driver.find_element(By.ID, "token")
    field.send_keys("not-the-token", Keys.ENTER)  # the keyboard is enough
    wait_text(driver, "#problem", "That token is not valid.")
    screenshot("login-refused")
    driver.find_element(By.ID, "token").send_keys(TOKEN, Keys.ENTER)
    wait(driver).until(lambda d: d.find_elements(By.ID, "tasks"))
    assert driver.find_elements(By.ID, "sign-out")


def test_a_task_submitted_through_the_form_reaches_succeeded_without_reload(
        console: Console, driver: Any, screenshot: Any) -> None:
    sign_in(driver, console.url)
    gate = console.gate("submit")
    task_id = submit(driver, console.url, name="hello-console", namespace="default", image="busybox:1.36",
                     env="GREETING=hello from the console", **gated(gate, 'echo "$GREETING"'))
    assert text_of(driver, "#status") != "Succeeded"  # it waits for the gate: not finished yet
    driver.get(console.url + "/")
    mark_page(driver)
    assert row_status(driver, task_id) in {"Normal", "Pending", "Running"}
    gate.touch()
    wait(driver).until(lambda d: row_status(d, task_id) == "Succeeded")
    assert not_reloaded(driver), "the list page reloaded: the status must change in place"


def test_the_task_page_shows_the_log_and_the_timeline(console: Console, driver: Any, screenshot: Any) -> None:
    sign_in(driver, console.url)
    gate = console.gate("log")
    task_id = submit(driver, console.url, name="log-console", namespace="default", image="busybox:1.36",
                     **gated(gate, f"echo 'line two'; echo '{HOSTILE}'"))
    mark_page(driver)
    wait(driver).until(lambda d: "waiting" in text_of(d, "#log"))  # the log follows the running job
    gate.touch()
    wait_text(driver, "#status", "Succeeded")
    wait(driver).until(lambda d: HOSTILE in text_of(d, "#log"))
    assert not_reloaded(driver)
    assert driver.execute_script("return window.__pwned === undefined;"), "log text ran as markup"
    assert not driver.find_elements(By.CSS_SELECTOR, "#log b")
    events = text_of(driver, "#events")
    assert "Running" in events and "Succeeded" in events
    assert driver.find_elements(By.CSS_SELECTOR, '#attempts tr[data-attempt="1"]')
    assert not driver.find_elements(By.ID, "cancel")  # finished: only "Run again" (a forced retry) is left
    assert text_of(driver, "#retry") == "Run again"
    assert str(task_id) in driver.find_element(By.TAG_NAME, "h1").text
    driver.set_window_size(1280, 1500)  # the whole page, for docs/screenshots
    screenshot("console-task")
    driver.set_window_size(1280, 900)


def test_cancelling_a_long_task_with_the_button(console: Console, driver: Any, screenshot: Any) -> None:
    sign_in(driver, console.url)
    task_id = submit(driver, console.url, name="long-console", namespace="default", image="busybox:1.36",
                     command="sleep", args="600")
    wait_text(driver, "#status", "Running")
    mark_page(driver)
    click(driver, "#cancel")  # a form POST: the page after it is new
    wait(driver).until(lambda d: "done=cancel" in d.current_url)
    wait_text(driver, "#status", "Cancelled")
    assert not driver.find_elements(By.ID, "cancel")
    assert driver.find_elements(By.ID, "retry")  # a cancelled task may be retried
    screenshot("task-cancelled")
    driver.get(f"{console.url}/?status=Cancelled")
    assert row_status(driver, task_id) == "Cancelled"


def test_retrying_a_failed_task_with_the_button(console: Console, driver: Any, screenshot: Any) -> None:
    sign_in(driver, console.url)
    submit(driver, console.url, name="fails-console", namespace="default", image="busybox:1.36", command="false")
    wait_text(driver, "#status", "Failed")
    assert text_of(driver, "#attempt") == "1"
    click(driver, "#retry")
    wait(driver).until(lambda d: "done=retry" in d.current_url)
    wait_text(driver, "#attempt", "2")
    wait_text(driver, "#status", "Failed")  # `false` fails again: attempt 2 ran and finished
    wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")) == 2)
    screenshot("task-retried")


def test_a_bad_submission_is_refused_in_the_page_and_escaped(console: Console, driver: Any, screenshot: Any) -> None:
    sign_in(driver, console.url)
    driver.get(console.url + "/submit")
    driver.find_element(By.ID, "name").send_keys("ok-name")
    driver.find_element(By.ID, "namespace").clear()
    driver.find_element(By.ID, "namespace").send_keys("<b>elsewhere</b>")
    driver.find_element(By.ID, "image").send_keys("busybox")
    driver.find_element(By.ID, "submit").click()
    wait(driver).until(lambda d: d.find_elements(By.ID, "problem"))
    assert "'<b>elsewhere</b>' is not allowed" in text_of(driver, "#problem")
    assert not driver.find_elements(By.CSS_SELECTOR, "#problem b")
    assert driver.find_element(By.ID, "name").get_attribute("value") == "ok-name"  # the form is kept
    screenshot("submit-refused")


def test_the_list_shows_a_task_added_elsewhere_and_the_cluster_page(
        console: Console, driver: Any, screenshot: Any) -> None:
    sign_in(driver, console.url)
    driver.get(console.url + "/")
    mark_page(driver)
    out = subprocess.run([sys.executable, "-m", "nightwatch", "task", "submit", "--config",
                          str(console.config), "--name", "from-the-cli", "--namespace",
                          "default", "--image", "busybox", "--command", "true", "--json"],
                         cwd=console.workdir, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    task_id = int(json.loads(out.stdout)["id"])
    wait(driver).until(lambda d: row_status(d, task_id) == "Succeeded")
    assert not_reloaded(driver)
    driver.set_window_size(390, 844)  # a phone
    screenshot("task-list-phone")
    driver.set_window_size(1280, 900)
    driver.get(console.url + "/")  # the tasks of every test so far, for docs/screenshots
    wait(driver).until(lambda d: row_status(d, task_id) == "Succeeded")
    screenshot("console-list")
    driver.get(console.url + "/cluster")
    assert text_of(driver, "#leader")
    assert text_of(driver, "#epoch").isdigit()
    assert "Succeeded" in driver.find_element(By.ID, "counts").text


def test_a_standby_serves_the_same_tasks_and_its_cancel_is_carried_out_by_the_leader(
        console: Console, standby: Console, driver: Any, screenshot: Any) -> None:
    sign_in(driver, standby.url)  # one session secret for both replicas: the sign-in holds on either
    driver.get(standby.url + "/cluster")
    assert text_of(driver, "#served-by") == "standby-1"
    assert text_of(driver, "#leader") == "leader-1"
    task_id = submit(driver, standby.url, name="via-standby", namespace="default", image="busybox:1.36",
                     command="sleep", args="600")
    wait_text(driver, "#status", "Running")  # launched by the leader, read by the standby from the store
    click(driver, "#cancel")
    wait_text(driver, "#status", "Cancelled")
    events = text_of(driver, "#events")
    assert "by leader-1" in events and "by standby-1" not in events  # the leader wrote every move
    driver.get(f"{console.url}/tasks/{task_id}")
    wait_text(driver, "#status", "Cancelled")
    screenshot("standby-cancel")
