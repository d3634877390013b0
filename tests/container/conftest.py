"""The container image, built once per session by scripts/build-image.sh on the local Debian
base (cached between runs under ~/.cache/nightwatch-image), and run with podman as its users
run it. Without podman these tests skip -- or fail when NIGHTWATCH_REQUIRE_BACKENDS=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from podman_run import Containers, podman

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("NIGHTWATCH_REQUIRE_BACKENDS") == "1"


@pytest.fixture(scope="session")
def image() -> Iterator[str]:
    """The image reference: built (or found up to date) once per session."""
    if shutil.which("podman") is None:
        msg = "podman is not installed (apt-get install podman runc mmdebstrap)"
        if REQUIRE:
            pytest.fail(f"NIGHTWATCH_REQUIRE_BACKENDS=1 but {msg}", pytrace=False)
        pytest.skip(msg)
    env = {**os.environ, "NIGHTWATCH_ENGINE": "podman"}
    started = time.monotonic()
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-image.sh"), "--base", "local",
         "--tag", f"localhost/nightwatch-test:{os.getpid()}"],
        capture_output=True, text=True, timeout=900, env=env,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        pytest.fail(f"scripts/build-image.sh failed ({result.returncode}):\n{tail}", pytrace=False)
    print(f"image built in {time.monotonic() - started:.1f}s")
    ref = result.stdout.strip().splitlines()[-1]
    yield ref
    # Removed, or the session's images pile up; --no-prune keeps the cached layers (the parent
    # images) the next session's build reuses.
    podman("rmi", "--no-prune", ref, check=False)


@pytest.fixture
def containers() -> Iterator[Containers]:
    made = Containers()
    try:
        yield made
    finally:
        made.remove_all()
