"""Finding real backends: an env URL first, then pytest-docker when a Docker engine
answers, else skip -- or fail when NIGHTWATCH_REQUIRE_BACKENDS=1 (CI sets it)."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REQUIRE = os.environ.get("NIGHTWATCH_REQUIRE_BACKENDS") == "1"


@functools.cache
def docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _missing(what: str, env: str) -> None:
    msg = f"no {what}: set {env} or run a Docker engine (tests/docker-compose.yml)"
    if REQUIRE:
        pytest.fail(f"NIGHTWATCH_REQUIRE_BACKENDS=1 but {msg}", pytrace=False)
    pytest.skip(msg)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(HERE / "docker-compose.yml")


def _from_docker(request: pytest.FixtureRequest, service: str, port: int, url: str) -> str:
    services = request.getfixturevalue("docker_services")
    host_port = services.port_for(service, port)
    services.wait_until_responsive(
        timeout=90, pause=1, check=lambda: _port_open("127.0.0.1", host_port)
    )
    return url.format(port=host_port)


@pytest.fixture(scope="session")
def mysql_url(request: pytest.FixtureRequest) -> str:
    """mysql://user:password@host:port (no database: each test makes its own)."""
    if url := os.environ.get("NIGHTWATCH_TEST_MYSQL_URL"):
        return url
    if docker_engine_answers():
        return _from_docker(request, "mariadb", 3306, "mysql://root:nightwatch@127.0.0.1:{port}")
    _missing("MySQL/MariaDB server", "NIGHTWATCH_TEST_MYSQL_URL")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def postgres_dsn(request: pytest.FixtureRequest) -> str:
    """A DSN of a database the tests may create other databases from."""
    if dsn := os.environ.get("NIGHTWATCH_TEST_POSTGRES_DSN"):
        return dsn
    if docker_engine_answers():
        return _from_docker(
            request, "postgres", 5432, "postgresql://postgres:nightwatch@127.0.0.1:{port}/postgres"
        )
    _missing("PostgreSQL server", "NIGHTWATCH_TEST_POSTGRES_DSN")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    if url := os.environ.get("NIGHTWATCH_TEST_REDIS_URL"):
        return url
    if docker_engine_answers():
        return _from_docker(request, "redis", 6379, "redis://127.0.0.1:{port}/0")
    _missing("Redis server", "NIGHTWATCH_TEST_REDIS_URL")
    raise AssertionError("unreachable")


@pytest.fixture
def unique_name() -> str:
    """A short unique name for a database, key prefix or lock."""
    return "nwt_" + uuid.uuid4().hex[:12]
