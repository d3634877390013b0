import os
from pathlib import Path

import pytest
import yaml

from nightwatch.app.config import (
    SCHEMA,
    TASK_WATCHER_SCHEMA,
    default_config_text,
    load_config,
    masked,
)
from nightwatch.app.preflight import check_paths
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
    monkeypatch.setenv("NW_TEST_DSN", "postgresql://u:s3cr3t-pw@db:5432/x")
    c = load_config(write(tmp_path, "store:\n  backend: postgres\n  postgres: {dsn: '${NW_TEST_DSN}'}\n"
                                    "lock: {ttl: 20s, renew_deadline: 15s}\n"))
    assert c["store"]["postgres"]["dsn"] == "postgresql://u:s3cr3t-pw@db:5432/x"
    assert c["store"]["sqlite"]["path"] == "nightwatch.db"
    assert c["lock"]["ttl"] == 20.0 and c["lock"]["renew_interval"] == 2.0
    shown = masked(c)
    assert "s3cr3t-pw" not in yaml.safe_dump(shown)
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
    ("watchers: {task: {spec: 'every day'}}", "watchers.task.spec: 'every day' is not a schedule"),
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


def test_forbidden_grace_defaults_to_ten_minutes_and_reaches_the_gateway(tmp_path, monkeypatch):
    from nightwatch.app.container import build_container

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NIGHTWATCH_CONFIG", raising=False)
    assert load_config()["jobs"]["kubernetes"]["forbidden_grace"] == 600.0
    c = load_config(write(tmp_path, "jobs: {backend: kubernetes, kubernetes: {forbidden_grace: 90s}}\n"))
    assert c["jobs"]["kubernetes"]["forbidden_grace"] == 90.0
    container = build_container(c)
    try:
        assert container.gateway().forbidden_grace == 90.0
    finally:
        container.shutdown_resources()


@pytest.mark.parametrize("value", ["soon", "0s"])
def test_a_bad_forbidden_grace_is_one_line_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, f"jobs: {{kubernetes: {{forbidden_grace: {value}}}}}\n"))
    assert str(e.value).startswith("jobs.kubernetes.forbidden_grace: ") and "\n" not in str(e.value)


# -- values that load but break the daemon ----------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    # a finished Job must outlive one sync interval plus missing_grace, or its task ends "job not found"
    ("jobs: {defaults: {ttl_seconds_after_finished: 0}}",
     "jobs.defaults.ttl_seconds_after_finished: must be at least 62"),
    ("jobs: {defaults: {ttl_seconds_after_finished: 61}}",
     "jobs.defaults.ttl_seconds_after_finished: must be at least 62"),
    ("jobs: {defaults: {ttl_seconds_after_finished: 100}}\nwatchers: {task: {spec: '@every 1m'}}",
     "jobs.defaults.ttl_seconds_after_finished: must be at least 120"),
    ("jobs: {defaults: {ttl_seconds_after_finished: 100}}\nwatchers: {task: {spec: '0 */5 * * * *'}}",
     "jobs.defaults.ttl_seconds_after_finished: must be at least 360"),
    ("watchers: {task: {spec: '0 0 0 31 2 *'}}", "watchers.task.spec: '0 0 0 31 2 *' never runs"),
    ("watchers: {task: {spec: '@every 9000000h'}}", "watchers.task.spec: @every must be at most 365 days"),
    ("jobs: {kubernetes: {qps: .nan}}", "jobs.kubernetes.qps: expected a finite number"),
    ("jobs: {kubernetes: {qps: .inf}}", "jobs.kubernetes.qps: expected a finite number"),
    ("jobs: {kubernetes: {qps: 0}}", "jobs.kubernetes.qps: expected a finite number of at least 0.1"),
    ("jobs: {kubernetes: {qps: -5}}", "jobs.kubernetes.qps"),
    ("jobs: {kubernetes: {burst: 0}}", "jobs.kubernetes.burst: expected a whole number of at least 1"),
    ("lock: {backend: redis, redis: {socket_timeout: 3s}}",
     "lock.redis.socket_timeout: must be at most 1.5s"),
    ("lock: {backend: redis, ttl: 4s, renew_deadline: 3s, redis: {socket_timeout: 600ms}}",
     "lock.redis.socket_timeout: must be at most 0.5s"),
    ("watchers: {task: {missing_grace: 1ms}}", "watchers.task.missing_grace: must be at least 5s"),
    ("watchers: {task: {missing_grace: 4s}}", "watchers.task.missing_grace: must be at least 5s"),
    ("jobs: {kubernetes: {request_timeout: 1h}}",
     "jobs.kubernetes.request_timeout: must be at most 60s"),
    ("jobs: {fake: {default_duration: .nan}}", "jobs.fake.default_duration: expected a finite number"),
])
def test_a_value_that_would_break_the_daemon_is_refused_naming_the_key_and_range(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text", [
    "jobs: {defaults: {ttl_seconds_after_finished: 62}}",
    "jobs: {defaults: {ttl_seconds_after_finished: null}}",
    "jobs: {defaults: {ttl_seconds_after_finished: 5}}\nwatchers: {task: {enabled: false}}",
    "lock: {backend: redis, redis: {socket_timeout: 1500ms}}",
    "lock: {backend: redis, ttl: 4s, renew_deadline: 3s, redis: {socket_timeout: 500ms}}",
    "lock: {backend: file, redis: {socket_timeout: 3s}}",  # the Redis settings are not used
    "jobs: {kubernetes: {request_timeout: 60s, qps: 0.1, burst: 1}}",
    "watchers: {task: {missing_grace: 5s}}",
    "watchers: {task: {spec: '@every 10s', missing_grace: 10s}}",
    "watchers: {task: {spec: '@every 5m'}}",  # a grace shorter than the interval: one look suffices
    "watchers: {task: {spec: '@every 1m', missing_grace: 5s}}",
])
def test_the_limits_themselves_are_allowed(tmp_path, text):
    load_config(write(tmp_path, text))


@pytest.mark.parametrize("key", [
    "lock.ttl", "lock.renew_interval", "server.shutdown_timeout", "watchers.task.missing_grace",
    "store.mysql.connect_timeout", "jobs.kubernetes.request_timeout",
])
@pytest.mark.parametrize("value", ["[1, 2]", "{a: 1}", ".nan", ".inf", "-1", "'-1s'", "0", "null", "true",
                                   "'1000000h'"])
def test_every_duration_refuses_lists_maps_nan_and_negatives(tmp_path, key, value):
    *sections, last = key.split(".")
    text = "".join(f"{s}: {{" for s in sections) + f"{last}: {value}" + "}" * len(sections)
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert str(e.value).startswith(f"{key}: ")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("text", "message"), [
    ("watchers: {myplugin: [1, 2]}", "watchers.myplugin: expected a mapping of settings"),
    ("watchers: {myplugin: some text}", "watchers.myplugin: expected a mapping of settings"),
    ("server: {listen: 'host:99999'}", "server.listen: port 99999 is not from 1 to 65535"),
    ("server: {listen: '127.0.0.1:0'}", "server.listen: port 0 is not from 1 to 65535"),
    ("server: {listen: '::1:9090'}", "server.listen: write an IPv6 address in brackets"),
    ("server: {listen: '[::1:9090'}", "server.listen: expected host:port"),
    ("server: {listen: '[nohost]:9090'}", "server.listen: 'nohost' is not an IPv6 address"),
])
def test_more_wrong_values_are_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("listen", ["[::1]:9090", "[::]:9090", "127.0.0.1:9090", ":9090", "localhost:1",
                                    "my-host.example:65535", ""])
def test_good_listen_addresses_pass(tmp_path, listen):
    assert load_config(write(tmp_path, f"server: {{listen: '{listen}'}}"))["server"]["listen"] == listen


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_an_empty_config_file_means_the_defaults(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    assert load_config(write(tmp_path, text)) == load_config(write(tmp_path, "{}"))


def test_a_config_path_that_cannot_be_read_is_one_line(tmp_path):
    (tmp_path / "plain").write_text("x")
    (tmp_path / "latin1.yaml").write_bytes(b"lock: {name: caf\xe9}\n")
    cases = [(tmp_path, "is a directory"), (tmp_path / "plain" / "c.yaml", "cannot read"),
             (tmp_path / "latin1.yaml", "not UTF-8")]
    for path, message in cases:
        with pytest.raises(ConfigError) as e:
            load_config(str(path))
        assert message in str(e.value) and str(path) in str(e.value)
        assert "\n" not in str(e.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_config_file_is_one_line(tmp_path):
    p = Path(write(tmp_path, "{}"))
    p.chmod(0)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(p))


def test_every_key_has_an_effective_value(tmp_path):
    """``config show`` prints every key: the optional ones come with their documented defaults."""
    c = load_config(write(tmp_path, "{}"))

    def walk(prefix, schema, section):
        for key, rule in schema.items():
            if rule == "*watchers":
                continue
            assert key in section, f"{prefix}{key} has no effective value"
            if isinstance(rule, dict):
                walk(f"{prefix}{key}.", rule, section[key])

    walk("", SCHEMA, c)
    for key in TASK_WATCHER_SCHEMA:
        assert key in c["watchers"]["task"]
    assert c["lock"]["redis"]["socket_timeout"] == 0.5 and c["lock"]["redis"]["key_prefix"] == "nightwatch:"
    assert (c["store"]["mysql"]["connect_timeout"], c["store"]["mysql"]["read_timeout"],
            c["store"]["postgres"]["statement_timeout"], c["store"]["postgres"]["pool_size"]) == (5, 10, 10, 4)
    assert c["jobs"]["fake"] == {"default_duration": 1.0, "start_delay": 0.0, "record_path": None}


# -- paths checked at start-up ----------------------------------------------------------------

def paths_config(tmp_path, **sections):
    """The default config with its three paths in ``tmp_path``, changed by ``sections``."""
    doc = {"jobs": {"local": {"state_dir": str(tmp_path / "state")}},
           "lock": {"file": {"path": str(tmp_path / "nightwatch.lock")}},
           "store": {"sqlite": {"path": str(tmp_path / "nightwatch.db")}}}
    for section, value in sections.items():
        for key, sub in value.items():
            doc[section][key] = {**doc[section].get(key, {}), **sub} if isinstance(sub, dict) else sub
    return load_config(write(tmp_path, yaml.safe_dump(doc)))


def test_usable_paths_pass_and_nothing_is_created(tmp_path):
    check_paths(paths_config(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize(("sections", "message"), [
    ({"jobs": {"local": {"state_dir": "{plain}/state"}}}, "jobs.local.state_dir: cannot create"),
    ({"jobs": {"local": {"state_dir": "{plain}"}}}, "jobs.local.state_dir: {plain} is not a directory"),
    ({"lock": {"file": {"path": "{plain}/x/nightwatch.lock"}}}, "lock.file.path: cannot create"),
    ({"lock": {"file": {"path": "{tmp}"}}}, "lock.file.path: {tmp} is a directory"),
    ({"store": {"sqlite": {"path": "{plain}/nightwatch.db"}}}, "store.sqlite.path: cannot create"),
    # as root every directory is writable: /proc refuses new entries even to root
    ({"jobs": {"local": {"state_dir": "/proc/nightwatch-test/state"}}}, "jobs.local.state_dir: cannot create"),
])
def test_an_unusable_path_is_one_line_naming_the_key(tmp_path, sections, message):
    plain = tmp_path / "plain"
    plain.write_text("a regular file")
    fmt = {"plain": str(plain), "tmp": str(tmp_path)}
    sections = {s: {k: {kk: vv.format(**fmt) for kk, vv in v.items()} for k, v in sub.items()}
                for s, sub in sections.items()}
    config = paths_config(tmp_path, **sections)
    with pytest.raises(ConfigError) as e:
        check_paths(config)
    assert str(e.value).startswith(message.format(**fmt))
    assert "\n" not in str(e.value)


def test_paths_of_backends_not_chosen_are_not_checked(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    config = paths_config(tmp_path, jobs={"backend": "fake", "local": {"state_dir": f"{plain}/s"}},
                          lock={"backend": "memory", "file": {"path": f"{plain}/l"}},
                          store={"backend": "memory", "sqlite": {"path": f"{plain}/d"}})
    check_paths(config)


def test_pending_fatal_grace_and_cancel_grace_default_and_reach_the_gateways(tmp_path, monkeypatch):
    from nightwatch.app.container import build_container

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NIGHTWATCH_CONFIG", raising=False)
    defaults = load_config()["jobs"]
    assert defaults["kubernetes"]["pending_fatal_grace"] == 120.0
    assert defaults["local"]["cancel_grace"] == 10.0
    for text, attribute, expected in (
        ("jobs: {backend: kubernetes, kubernetes: {pending_fatal_grace: 45s}}\n", "pending_fatal_grace", 45.0),
        ("jobs: {backend: local, local: {cancel_grace: 3s}}\n", "cancel_grace", 3.0),
    ):
        container = build_container(load_config(write(tmp_path, text)))
        try:
            assert getattr(container.gateway(), attribute) == expected
        finally:
            container.shutdown_resources()
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "jobs: {kubernetes: {pending_fatal_grace: soon}}\n"))
    assert str(e.value).startswith("jobs.kubernetes.pending_fatal_grace: ") and "\n" not in str(e.value)
