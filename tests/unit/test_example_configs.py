"""The example configs in config/examples load, take their secrets from the environment,
and wire real adapters (constructing them connects to nothing)."""

from pathlib import Path

import pytest

from nightwatch.app.config import load_config, masked
from nightwatch.app.container import build_container
from nightwatch.domain.errors import ConfigError

EXAMPLES = Path(__file__).parents[2] / "config" / "examples"
SECRETS = {
    "NIGHTWATCH_MYSQL_PASSWORD": "my-S3cret",
    "NIGHTWATCH_POSTGRES_DSN": "postgresql://nightwatch:pg-S3cret@db.example:5432/nightwatch",
}
ENV = ("NIGHTWATCH_MYSQL_PASSWORD", "NIGHTWATCH_POSTGRES_DSN", "NIGHTWATCH_REDIS_URL",
       "NIGHTWATCH_MYSQL_HOST", "NIGHTWATCH_MYSQL_USER", "NIGHTWATCH_CONFIG")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def example(name):
    return str(EXAMPLES / name)


@pytest.mark.parametrize("name, store", [("mysql-redis.yaml", "mysql"), ("postgres-redis.yaml", "postgres")])
def test_example_loads_with_its_secrets_from_the_environment(monkeypatch, name, store):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    c = load_config(example(name))
    assert (c["store"]["backend"], c["lock"]["backend"], c["jobs"]["backend"]) == (store, "redis", "kubernetes")
    assert c["lock"]["redis"]["urls"] == ["redis://127.0.0.1:6379/0"]  # the default when unset
    assert (c["lock"]["ttl"], c["lock"]["renew_interval"], c["lock"]["renew_deadline"],
            c["lock"]["retry_interval"]) == (10.0, 2.0, 7.0, 1.0)
    if store == "mysql":
        assert c["store"]["mysql"]["password"] == "my-S3cret"
    else:
        assert c["store"]["postgres"]["dsn"] == SECRETS["NIGHTWATCH_POSTGRES_DSN"]
    assert "S3cret" not in repr(masked(c))  # `nightwatch config show` does not print them


@pytest.mark.parametrize("name", ["mysql-redis.yaml", "postgres-redis.yaml"])
def test_redis_url_comes_from_the_environment(monkeypatch, name):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NIGHTWATCH_REDIS_URL", "redis://:r3dis-pw@redis.example:6380/2")
    c = load_config(example(name))
    assert c["lock"]["redis"]["urls"] == ["redis://:r3dis-pw@redis.example:6380/2"]
    assert "r3dis-pw" not in repr(masked(c))


@pytest.mark.parametrize("name, secret", [
    ("mysql-redis.yaml", "NIGHTWATCH_MYSQL_PASSWORD"),
    ("postgres-redis.yaml", "NIGHTWATCH_POSTGRES_DSN"),
])
def test_a_missing_secret_stops_start_up_naming_the_variable(monkeypatch, name, secret):
    for key, value in SECRETS.items():
        if key != secret:
            monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=secret):
        load_config(example(name))


def test_mysql_host_and_user_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("NIGHTWATCH_MYSQL_PASSWORD", "pw")
    monkeypatch.setenv("NIGHTWATCH_MYSQL_HOST", "mariadb.db.svc")
    monkeypatch.setenv("NIGHTWATCH_MYSQL_USER", "scheduler")
    mysql = load_config(example("mysql-redis.yaml"))["store"]["mysql"]
    assert (mysql["host"], mysql["user"], mysql["password"]) == ("mariadb.db.svc", "scheduler", "pw")


@pytest.mark.parametrize("name, dialect", [
    ("mysql-redis.yaml", "mysql"),
    ("postgres-redis.yaml", "postgresql"),
])
def test_example_wires_the_real_store_and_lock_without_connecting(monkeypatch, name, dialect):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NIGHTWATCH_MYSQL_HOST", "db.invalid")  # nothing answers there
    monkeypatch.setenv("NIGHTWATCH_REDIS_URL", "redis://redis.invalid:6379/0")
    container = build_container(load_config(example(name)))
    try:
        store = container.store()
        assert (type(store).__name__, store.engine.dialect.name) == ("SQLTaskStore", dialect)
        lock = container.lock()
        assert type(lock).__name__ == "RedisLeaderLock"
        assert (lock.name, lock.ttl) == ("nightwatch", 10.0)
    finally:
        container.shutdown_resources()


def test_the_retired_switch_that_turned_fencing_off_is_refused(monkeypatch):
    """Production has no way to turn fencing off; a deployment still setting the old test-only
    variable is refused in one line instead of being silently believed."""
    monkeypatch.setenv("NIGHTWATCH_TEST_DISABLE_FENCING", "1")
    with pytest.raises(ConfigError, match="NIGHTWATCH_TEST_DISABLE_FENCING is set: fencing cannot be turned off"):
        build_container(load_config(None, {"store": {"backend": "memory"}}))
