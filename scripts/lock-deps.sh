#!/usr/bin/env bash
# Regenerates requirements.lock: exact pins of nightwatch's runtime dependencies (pyproject.toml's
# [project].dependencies and everything they pull in) plus its build requirement (setuptools),
# which the Dockerfile installs in one layer of their own. Run it after changing the dependencies
# in pyproject.toml; pins already in the lock are kept unless you pass --upgrade (all) or
# --upgrade-package NAME. Other arguments go to `uv pip compile`.
#
# The resolution is universal (markers kept, e.g. async-timeout only below Python 3.11.3), so
# the one file serves the image's Python whichever 3.11 it is. uv is used from PATH, else from
# .venv, else it is installed into a cache of its own.
set -euo pipefail
cd "$(dirname "$0")/.."

uv=$(command -v uv || true)
if [ -z "$uv" ] && [ -x .venv/bin/uv ]; then
  uv=.venv/bin/uv
fi
if [ -z "$uv" ]; then
  tools="${XDG_CACHE_HOME:-$HOME/.cache}/nightwatch-image/uv"
  if [ ! -x "$tools/bin/uv" ]; then
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check 'uv>=0.5,<1'
  fi
  uv="$tools/bin/uv"
fi

# The build requirement comes from [build-system].requires, so the image can install nightwatch
# itself without an index and without an isolated build environment.
build_requires=$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')

printf '%s\n' "$build_requires" | "$uv" pip compile pyproject.toml - \
  --universal --python-version 3.11 --quiet \
  --custom-compile-command scripts/lock-deps.sh \
  --output-file requirements.lock "$@"
echo "requirements.lock: $(grep -c '^[a-zA-Z]' requirements.lock) pinned packages"
