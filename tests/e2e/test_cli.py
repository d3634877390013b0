"""The CLI as a user runs it: subprocesses on the embedded default (SQLite, file lock, local jobs)."""

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest
import yaml

from nightwatch.app.config import default_config_text

NIGHTWATCH = [sys.executable, "-m", "nightwatch"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh directory with the embedded default, its HTTP port moved off 9090."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "nightwatch.yaml").write_text(
        default_config_text().replace("127.0.0.1:9090", f"127.0.0.1:{free_port()}")
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NIGHTWATCH_CONFIG", raising=False)
    return tmp_path


def cli(*args, check=True):
    proc = subprocess.run([*NIGHTWATCH, *args], capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (value := predicate()):
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def rows(db):
    with sqlite3.connect(db) as conn:
        return {name: (status, message) for name, status, message in
                conn.execute("SELECT name, status, message FROM task")}


def test_run_with_no_flags_takes_inserted_rows_to_their_terminal_status_and_exits_0_on_sigterm(workdir):
    log = open(workdir / "daemon.log", "w")  # noqa: SIM115 - open for the daemon's whole life
    daemon = subprocess.Popen([*NIGHTWATCH, "run"], stdout=log, stderr=subprocess.STDOUT)
    try:
        db = workdir / "nightwatch.db"

        def table_ready():
            try:
                with sqlite3.connect(db) as conn:
                    return conn.execute("SELECT count(*) FROM task").fetchone() is not None
            except sqlite3.Error:
                return False

        wait_for(table_ready, 20, "the daemon to create its database")
        with sqlite3.connect(db) as conn:  # another program, as the user's web form would
            conn.executemany(
                "INSERT INTO task (name, namespace, info, status, user_id) VALUES (?, ?, ?, 'Normal', 1)",
                [("sleeper", "default", '{"image": "alpine", "command": ["sleep"], "args": ["1"]}'),
                 ("loser", "default", '{"image": "alpine", "command": ["false"]}'),
                 ("broken", "default", '{"image": "alpine", "command": ')],
            )
        final = wait_for(lambda: (r := rows(db)) and all(s in ("Succeeded", "Failed") for s, _ in r.values())
                         and r, 30, "every task to finish")
        assert final["sleeper"][0] == "Succeeded"
        assert final["loser"][0] == "Failed" and "exit code 1" in final["loser"][1]
        assert final["broken"][0] == "Failed" and "not valid JSON" in final["broken"][1]
        assert (workdir / ".nightwatch").is_dir()  # the local jobs' state and logs
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=15)
        log.close()
    assert code == 0, (workdir / "daemon.log").read_text()


def test_task_commands_and_json_output(workdir):
    cli("db", "migrate")
    cli("db", "migrate")  # idempotent
    out = cli("task", "submit", "--name", "hello", "--namespace", "default", "--image", "alpine",
              "--command", "echo", "--arg", "hi", "--user-id", "7", "--json").stdout
    task = json.loads(out)
    assert task["status"] == "Normal" and task["user_id"] == 7
    assert json.loads(task["info"]) == {"image": "alpine", "command": ["echo"], "args": ["hi"]}
    listed = json.loads(cli("task", "list", "--json").stdout)
    assert [t["name"] for t in listed] == ["hello"]
    assert json.loads(cli("task", "list", "--status", "Failed", "--json").stdout) == []
    assert json.loads(cli("task", "get", str(task["id"]), "--json").stdout)["name"] == "hello"
    assert "hello" in cli("task", "list").stdout
    missing = cli("task", "get", "999", check=False)
    assert missing.returncode == 1 and missing.stderr.strip() == "nightwatch: no task with id 999"
    dup = cli("task", "submit", "--name", "hello", "--namespace", "default", "--image", "a", check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    assert cli("run", "--once").returncode == 0
    got = json.loads(cli("task", "get", str(task["id"]), "--json").stdout)
    assert got["status"] in ("Pending", "Running", "Succeeded")


def test_config_show_masks_secrets(workdir, monkeypatch):
    monkeypatch.setenv("NIGHTWATCH_MYSQL_PASSWORD", "hunter2")
    out = cli("config", "show").stdout
    assert "hunter2" not in out and "password: '******'" in out
    assert "backend: sqlite" in out


def test_a_broken_config_stops_startup_with_one_line(workdir):
    (workdir / "bad.yaml").write_text("store:\n  backend: oracle\n")
    proc = cli("run", "--config", "bad.yaml", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "nightwatch: config error: store.backend: 'oracle' is not one of memory | sqlite | mysql | postgres"
    ]


def test_python_dash_m_and_version():
    assert cli("--version").stdout.startswith("nightwatch ")


def test_an_unreadable_kubeconfig_stops_startup_with_one_line(workdir):
    (workdir / "k8s.yaml").write_text(
        "jobs: {backend: kubernetes, kubernetes: {kubeconfig: /nonexistent/kubeconfig}}\nserver: {listen: ''}\n"
    )
    proc = cli("run", "--config", "k8s.yaml", check=False)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nightwatch: config error: jobs.kubernetes: cannot load the client configuration")
    assert "Traceback" not in proc.stderr


def test_config_before_the_subcommand_is_honoured(workdir):
    (workdir / "other.yaml").write_text("store: {sqlite: {path: other.db}}\nserver: {listen: ''}\n")
    cli("--config", "other.yaml", "task", "submit", "--name", "x", "--namespace", "default", "--image", "a")
    assert (workdir / "other.db").exists() and not (workdir / "nightwatch.db").exists()
    bad = cli("task", "submit", "--name", "y", "--namespace", "default", "--image", "a", "--env", "NOEQ",
              check=False)
    assert bad.returncode == 64 and "expected NAME=VALUE" in bad.stderr  # a usage error, not a config error


def one_config_error(proc, *expected):
    """Exit 2 and a single line on stderr that starts 'nightwatch: config error: ' and holds ``expected``."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("nightwatch: config error: "), lines
    for text in expected:
        assert text in lines[0], lines
    return lines[0]


def test_usage_errors_exit_64_and_config_errors_exit_2(workdir):
    for argv in (["bogus"], ["task", "get", "abc"], ["task", "submit", "--name", "x"], ["run", "--nope"]):
        proc = cli(*argv, check=False)
        assert proc.returncode == 64, (argv, proc.stderr)
        assert "usage: nightwatch" in proc.stderr and "Traceback" not in proc.stderr
    (workdir / "bad.yaml").write_text("store: {backend: oracle}\n")
    one_config_error(cli("config", "show", "--config", "bad.yaml", check=False), "store.backend")


@pytest.mark.parametrize(("text", "expected"), [
    ("server: {listen: '127.0.0.1:99999'}\n", "server.listen: port 99999 is not from 1 to 65535"),
    ("watchers: {myplugin: [1, 2]}\n", "watchers.myplugin: expected a mapping"),
    ("lock: {ttl: [1, 2]}\n", "lock.ttl:"),
    ("lock: {ttl: {a: 1}}\n", "lock.ttl:"),
    ("jobs: {kubernetes: {qps: .nan}}\n", "jobs.kubernetes.qps"),
    ("jobs: {defaults: {ttl_seconds_after_finished: 0}}\n", "jobs.defaults.ttl_seconds_after_finished"),
])
@pytest.mark.parametrize("command", [("run",), ("run", "--once"), ("config", "validate")])
def test_a_config_that_would_break_the_daemon_stops_it_with_one_line(workdir, text, expected, command):
    (workdir / "bad.yaml").write_text(text)
    one_config_error(cli(*command, "--config", "bad.yaml", check=False), expected)


def test_a_config_path_that_is_a_directory_or_unreadable_is_one_line(workdir):
    (workdir / "plain").write_text("x")
    one_config_error(cli("run", "--config", str(workdir), check=False), "is a directory", str(workdir))
    one_config_error(cli("config", "show", "--config", "plain/c.yaml", check=False), "cannot read")


def test_an_empty_config_file_means_the_defaults(workdir):
    (workdir / "empty.yaml").write_text("")
    proc = cli("config", "show", "--config", "empty.yaml")
    assert "backend: sqlite" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("section", "key"), [
    ("jobs: {local: {state_dir: plain/state}}", "jobs.local.state_dir"),
    ("lock: {file: {path: plain/nightwatch.lock}}", "lock.file.path"),
])
@pytest.mark.parametrize("command", [("run",), ("run", "--once"), ("config", "validate")])
def test_an_unusable_path_stops_startup_with_one_line(workdir, section, key, command):
    (workdir / "plain").write_text("a regular file where a directory should be")
    (workdir / "paths.yaml").write_text(section + "\nserver: {listen: ''}\n")
    one_config_error(cli(*command, "--config", "paths.yaml", check=False), f"{key}: cannot create")
    assert not (workdir / "nightwatch.db").exists()  # refused before the store was touched


def test_config_validate_creates_no_directory_and_first_use_does(workdir):
    (workdir / "nested.yaml").write_text("store: {sqlite: {path: data/sub/nightwatch.db}}\nserver: {listen: ''}\n")
    assert cli("config", "validate", "--config", "nested.yaml").returncode == 0
    assert not (workdir / "data").exists()
    assert cli("task", "list", "--config", "nested.yaml").returncode == 0
    assert (workdir / "data" / "sub" / "nightwatch.db").is_file()


def test_config_validate_checks_schedules_without_starting(workdir):
    ok = cli("config", "validate")
    assert ok.stdout.strip() == f"config OK: read from {workdir / 'config' / 'nightwatch.yaml'}"
    assert not (workdir / "nightwatch.db").exists() and not (workdir / ".nightwatch").exists()
    assert not (workdir / "nightwatch.lock").exists()
    (workdir / "cron.yaml").write_text("watchers: {task: {spec: '*/5 * * * *'}}\n")  # five fields
    one_config_error(cli("config", "validate", "--config", "cron.yaml", check=False),
                     "watchers.task.spec: '*/5 * * * *' is not a schedule")
    (workdir / "plugin.yaml").write_text("watchers: {nosuch: {spec: '@every 1s'}}\n")
    one_config_error(cli("config", "validate", "--config", "plugin.yaml", check=False),
                     "watchers.nosuch: no such watcher")


def test_config_show_names_its_file_and_prints_every_key(workdir):
    out = cli("config", "show").stdout
    assert out.splitlines()[0] == f"# read from {workdir / 'config' / 'nightwatch.yaml'}"
    shown = yaml.safe_load(out)
    assert shown["lock"]["redis"]["socket_timeout"] == 0.5
    assert shown["store"]["mysql"]["connect_timeout"] == 5 and shown["jobs"]["local"]["record_path"] is None
    (workdir / "config" / "nightwatch.yaml").unlink()
    assert cli("config", "show").stdout.splitlines()[0] == "# built-in defaults (no config file)"
    assert json.loads(cli("config", "show", "--json").stdout)["lock"]["ttl"] == 10.0


def test_run_serves_http_on_an_ipv6_literal(workdir):
    port = free_port()
    (workdir / "v6.yaml").write_text(f"server: {{listen: '[::1]:{port}'}}\n")
    log = open(workdir / "daemon.log", "w")  # noqa: SIM115 - open for the daemon's whole life
    daemon = subprocess.Popen([*NIGHTWATCH, "run", "--config", "v6.yaml"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def healthz():
            try:
                return urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=1).read()
            except OSError:
                return None

        assert wait_for(healthz, 20, "/healthz on [::1]") == b"ok\n"
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=15)
        log.close()
    assert code == 0, (workdir / "daemon.log").read_text()


PLUGIN = '''
class Hello:
    def __init__(self, deps, config):
        self.spec = config.get("spec", "@every 5s")

    def run(self, ctx):
        pass
'''


def test_config_validate_checks_a_plug_in_watchers_schedule(workdir, monkeypatch):
    """A real installed distribution (a .dist-info on PYTHONPATH) with an entry point."""
    site = workdir / "site"
    (site / "nw_hello-1.0.dist-info").mkdir(parents=True)
    (site / "nw_hello_mod.py").write_text(PLUGIN)
    (site / "nw_hello-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: nw_hello\nVersion: 1.0\n")
    (site / "nw_hello-1.0.dist-info" / "entry_points.txt").write_text(
        "[nightwatch.watchers]\nhello = nw_hello_mod:Hello\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    assert cli("config", "validate").returncode == 0
    (workdir / "hello.yaml").write_text("watchers: {hello: {spec: 'whenever'}}\n")
    one_config_error(cli("config", "validate", "--config", "hello.yaml", check=False),
                     "watchers.hello.spec: 'whenever' is not a schedule")
    (workdir / "hello.yaml").write_text("watchers: {hello: [1, 2]}\n")
    one_config_error(cli("config", "validate", "--config", "hello.yaml", check=False),
                     "watchers.hello: expected a mapping of settings")
