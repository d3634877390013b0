#!/usr/bin/env bash
# Runs `ruff check`, `mypy` and then nightwatch's whole test suite in its own virtual environment
# (.venv, made if missing).
# Real backends are found as tests/conftest.py says: NIGHTWATCH_TEST_* URLs first (exported
# below for servers answering on their standard local ports), then a Docker engine, else the
# backend tests skip -- or fail when NIGHTWATCH_REQUIRE_BACKENDS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

port_open() { .venv/bin/python -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1" 2>/dev/null; }
if [ -z "${NIGHTWATCH_TEST_MYSQL_URL:-}" ] && port_open 3306; then
  export NIGHTWATCH_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306
fi
if [ -z "${NIGHTWATCH_TEST_POSTGRES_DSN:-}" ] && port_open 5432; then
  export NIGHTWATCH_TEST_POSTGRES_DSN=postgresql://postgres@127.0.0.1:5432/postgres
fi
if [ -z "${NIGHTWATCH_TEST_REDIS_URL:-}" ] && port_open 6379; then
  export NIGHTWATCH_TEST_REDIS_URL=redis://127.0.0.1:6379/0
fi

# Lint and type-check first, so neither can rot unnoticed (mypy's files are in pyproject.toml).
.venv/bin/ruff check
.venv/bin/mypy

set +e
# Four workers (pytest-xdist) even on 2 cores: most tests wait on real daemons and servers, not
# on a CPU. NIGHTWATCH_TEST_WORKERS=0 runs everything in this one process.
.venv/bin/python -m pytest -n "${NIGHTWATCH_TEST_WORKERS:-4}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$rc"
