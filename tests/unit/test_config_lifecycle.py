"""The config keys of retries and history: defaults, wiring, one line naming a bad key."""

import pytest

from nightwatch.app.config import load_config
from nightwatch.app.container import build_container
from nightwatch.domain.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


@pytest.fixture
def defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NIGHTWATCH_CONFIG", raising=False)
    return load_config()


def test_the_defaults(defaults):
    d = defaults["jobs"]["defaults"]
    assert (d["retries"], d["retry_delay"], d["retry_delay_max"]) == (0, 10.0, 600.0)
    assert defaults["history"]["retention"] == 30 * 86400.0
    assert defaults["watchers"]["history"] == {"spec": "@every 10m", "enabled": True}


def test_the_keys_reach_the_watchers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load_config(write(tmp_path, "store: {backend: memory}\nlock: {backend: memory}\njobs: {backend: fake,"
                                    " defaults: {retries: 4, retry_delay: 3s, retry_delay_max: 1m}}\n"
                                    "history: {retention: 7d}\nwatchers: {history: {spec: '@every 1h'}}\n"))
    container = build_container(c)
    try:
        watchers = {w.name: w for w in container.watchers()}
        task, history = watchers["task"], watchers["history"]
        assert task._lifecycle._retries == 4
        policy = task._lifecycle._policy
        assert (policy.base, policy.cap) == (3.0, 60.0)
        assert history.spec == "@every 1h" and history._retention == 7 * 86400.0
        assert container.gateway().defaults.backoff_limit == 0  # the gateways' keys still reach them
    finally:
        container.shutdown_resources()


def test_the_history_watcher_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load_config(write(tmp_path, "store: {backend: memory}\nlock: {backend: memory}\njobs: {backend: fake}\n"
                                    "watchers: {history: {enabled: false}}\n"))
    container = build_container(c)
    try:
        assert [w.name for w in container.watchers()] == ["task"]
    finally:
        container.shutdown_resources()


@pytest.mark.parametrize(("text", "message"), [
    ("jobs: {defaults: {retries: -1}}", "jobs.defaults.retries: expected a whole number from 0 to 100"),
    ("jobs: {defaults: {retries: 101}}", "jobs.defaults.retries: expected a whole number from 0 to 100"),
    ("jobs: {defaults: {retries: yes}}", "jobs.defaults.retries: expected a whole number"),
    ("jobs: {defaults: {retry_delay: soon}}", "jobs.defaults.retry_delay: 'soon' is not a duration"),
    ("jobs: {defaults: {retry_delay: 0s}}", "jobs.defaults.retry_delay: must be longer than 0"),
    ("jobs: {defaults: {retry_delay_max: 0s}}", "jobs.defaults.retry_delay_max: must be longer than 0"),
    ("jobs: {defaults: {retry_delay: 20m}}",
     "jobs.defaults.retry_delay: must be at most jobs.defaults.retry_delay_max (600s), got 1200s"),
    ("history: {retention: forever}", "history.retention: 'forever' is not a duration"),
    ("history: {retention: 400d}", "history.retention: must be at most 365 days"),
    ("history: {keep: 1d}", "history.keep: unknown key"),
    ("watchers: {history: {spec: 'every day'}}", "watchers.history.spec"),
    ("watchers: {history: {enabled: maybe}}", "watchers.history.enabled: expected true or false"),
])
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)  # the default backends' files, should any be made
    with pytest.raises(ConfigError) as e:
        c = load_config(write(tmp_path, text + "\n"))
        build_container(c).watchers()  # a bad schedule is found when the watchers are built
    assert message in str(e.value) and "\n" not in str(e.value)
