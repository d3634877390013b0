from pathlib import Path

import pytest
import yaml

from nightwatch.app.config import default_config_text, load_config, masked
from nightwatch.domain.errors import ConfigError

ROOT = Path(__file__).parents[2]


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_the_embedded_default_is_config_nightwatch_yaml():
    assert default_config_text() == (ROOT / "config" / "nightwatch.yaml").read_text()


def test_defaults_are_the_design_contract(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NIGHTWATCH_CONFIG", raising=False)
    c = load_config()
    assert (c["store"]["backend"], c["lock"]["backend"], c["jobs"]["backend"]) == ("sqlite", "file", "local")
    assert (c["lock"]["ttl"], c["lock"]["renew_interval"], c["lock"]["renew_deadline"],
            c["lock"]["retry_interval"]) == (10.0, 2.0, 7.0, 1.0)
    assert c["watchers"]["task"]["spec"] == "@every 2s"
    assert c["watchers"]["task"]["count_interval"] == 30.0
    assert c["server"]["listen"] == "127.0.0.1:9090"


def test_file_is_laid_over_defaults_with_env_interpolation(tmp_path, monkeypatch):
    monkeypatch.setenv("NW_TEST_DSN", "postgresql://u:secret@db:5432/x")
    c = load_config(write(tmp_path, "store:\n  backend: postgres\n  postgres: {dsn: '${NW_TEST_DSN}'}\n"
                                    "lock: {ttl: 20s, renew_deadline: 15s}\n"))
    assert c["store"]["postgres"]["dsn"] == "postgresql://u:secret@db:5432/x"
    assert c["store"]["sqlite"]["path"] == "nightwatch.db"
    assert c["lock"]["ttl"] == 20.0 and c["lock"]["renew_interval"] == 2.0
    shown = masked(c)
    assert "secret" not in yaml.safe_dump(shown)
    assert shown["store"]["postgres"]["dsn"] == "postgresql://u:******@db:5432/x"


def test_nightwatch_config_env_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("NIGHTWATCH_CONFIG", write(tmp_path, "jobs: {backend: fake}\n"))
    assert load_config()["jobs"]["backend"] == "fake"


@pytest.mark.parametrize(("text", "message"), [
    ("store: {backend: oracle}", "store.backend: 'oracle' is not one of memory | sqlite | mysql | postgres"),
    ("lock: {backend: zookeeper}", "lock.backend: 'zookeeper' is not one of memory | file | redis"),
    ("jobs: {backend: nomad}", "jobs.backend: 'nomad' is not one of fake | local | kubernetes"),
    ("log: {format: xml}", "log.format: 'xml' is not one of text | json"),
    ("lock: {ttl: soon}", "lock.ttl: 'soon' is not a duration"),
    ("lock: {renew_deadline: 12s}", "need renew_interval < renew_deadline < ttl"),
    ("store: {bakend: sqlite}", "store.bakend: unknown key"),
    ("store: {mysql: {port: 99999}}", "store.mysql.port: expected a whole number from 1 to 65535"),
    ("lock: {redis: {urls: [a, b]}}", "lock.redis.urls: give 1 URL"),
    ("lock: {redis: {urls: ['http://x']}}", "is not a redis:// or rediss:// URL"),
    ("watchers: {task: {spec: 'every day'}}", None),  # checked when the watcher is built
    ("watchers: {task: {batch_size: 0}}", "watchers.task.batch_size"),
    ("watchers: {task: {count_interval: 0s}}", "watchers.task.count_interval: must be longer than 0"),
    ("watchers: {task: {count_interval: often}}", "watchers.task.count_interval: 'often' is not a duration"),
    ("server: {listen: nowhere}", "server.listen: expected host:port"),
    ("store: [1, 2]", "store: expected a mapping"),
    ("store: {backend: [", "not valid YAML"),
    ("store: {sqlite: {path: '${NW_SURELY_UNSET_VAR}'}}", "NW_SURELY_UNSET_VAR"),
])
def test_a_wrong_value_is_one_line_naming_the_key(tmp_path, text, message):
    if message is None:
        load_config(write(tmp_path, text))
        return
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_the_built_in_defaults_read_the_environment_too(tmp_path, monkeypatch):
    monkeypatch.setenv("NIGHTWATCH_POSTGRES_DSN", "postgresql://u:pw@db:5432/tasks")
    monkeypatch.setenv("NIGHTWATCH_MYSQL_PASSWORD", "s3cret")
    c = load_config(write(tmp_path, "store: {backend: postgres}\n"))  # no dsn of its own
    assert c["store"]["postgres"]["dsn"] == "postgresql://u:pw@db:5432/tasks"
    assert c["store"]["mysql"]["password"] == "s3cret"
    monkeypatch.delenv("NIGHTWATCH_POSTGRES_DSN")
    assert load_config(write(tmp_path, "{}\n"))["store"]["postgres"]["dsn"] == (
        "postgresql://127.0.0.1:5432/nightwatch"
    )
