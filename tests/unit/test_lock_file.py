"""requirements.lock (made by scripts/lock-deps.sh, installed by the Dockerfile) pins every
runtime dependency of pyproject.toml, the packages their extras pull in, and the build
requirement, at versions the specifiers allow. After changing the dependencies, rerun
scripts/lock-deps.sh."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def pins(lock_text: str) -> dict[str, Version]:
    found = {}
    for line in lock_text.splitlines():
        if not line.strip() or line.startswith((" ", "#")):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"requirements.lock: {line!r} is not an exact pin"
        found[canonicalize_name(req.name)] = Version(spec.version)
    return found


def extra_requirements(req: Requirement) -> list[Requirement]:
    """What the extras of ``req`` add, from the installed distribution's metadata."""
    if not req.extras:
        return []
    out = []
    for text in metadata.requires(req.name) or []:  # the test environment has them installed
        extra_req = Requirement(text)
        if extra_req.marker and any(extra_req.marker.evaluate({"extra": extra}) for extra in req.extras):
            out.append(extra_req)
    return out


def uncovered(requirements: list[str], lock_text: str) -> list[str]:
    """Each requirement (and what its extras add) that the lock does not pin at an allowed version."""
    pinned = pins(lock_text)
    problems = []
    for text in requirements:
        req = Requirement(text)
        for needed in [req, *extra_requirements(req)]:
            version = pinned.get(canonicalize_name(needed.name))
            if version is None:
                problems.append(f"{needed.name} is not pinned")
            elif not needed.specifier.contains(version, prereleases=True):
                problems.append(f"{needed.name}=={version} does not satisfy {needed.specifier}")
    return problems


def test_lock_covers_the_runtime_and_build_requirements() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lock = (ROOT / "requirements.lock").read_text()
    required = project["project"]["dependencies"] + project["build-system"]["requires"]
    assert uncovered(required, lock) == [], "rerun scripts/lock-deps.sh"


def test_a_missing_or_outdated_pin_is_reported() -> None:
    lock = "pyyaml==6.0.2\nredis==4.6.0\n    # via nightwatch\n"
    assert uncovered(["PyYAML>=6", "redis>=5.0,<9", "SQLAlchemy>=2"], lock) == [
        "redis==4.6.0 does not satisfy <9,>=5.0",
        "SQLAlchemy is not pinned",
    ]
    # An extra's packages must be pinned too (psycopg[binary] pulls in psycopg-binary).
    assert "psycopg-binary is not pinned" in uncovered(["psycopg[binary]>=3.1"], "psycopg==3.2.0\n")
