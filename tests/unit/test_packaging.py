"""Packaging to convention: the licence as an SPDX expression with its full text beside it, the
version written once and reported by `nightwatch --version`, and the tooling that keeps the code
honest (a bare `mypy` checks the package; scripts/test.sh lints and type-checks before pytest)."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nightwatch

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
BIN = Path(sys.executable).parent


def test_the_license_is_an_spdx_expression_with_the_full_apache_text() -> None:
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])  # PEP 639 forbids both
    text = (ROOT / "LICENSE").read_text()
    assert re.match(r"\s*Apache License\s+Version 2\.0, January 2004\s", text)
    sections = re.findall(r"^\s+(\d+)\. (Definitions|Grant of Copyright License|Grant of Patent License|"
                          r"Redistribution|Submission of Contributions|Trademarks|Disclaimer of Warranty|"
                          r"Limitation of Liability|Accepting Warranty or Additional Liability)\.", text, re.M)
    assert [int(n) for n, _ in sections] == list(range(1, 10))
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    build = PYPROJECT["build-system"]["requires"]
    (setuptools,) = [r for r in build if r.startswith("setuptools")]
    assert int(re.search(r">=(\d+)", setuptools)[1]) >= 77  # the first to take an SPDX string
    assert importlib.metadata.metadata("nightwatch")["License-Expression"] == "Apache-2.0"


def test_the_version_is_written_once_and_reported_by_the_cli() -> None:
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "nightwatch.__version__"}
    assert importlib.metadata.version("nightwatch") == nightwatch.__version__
    out = subprocess.run([str(BIN / "nightwatch"), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"nightwatch {nightwatch.__version__}"


def test_urls_and_classifiers() -> None:
    assert {"Homepage", "Source", "Issues"} <= set(PROJECT["urls"])
    classifiers = PROJECT["classifiers"]
    assert "Typing :: Typed" in classifiers and "Programming Language :: Python :: 3.11" in classifiers
    assert f">={classifiers_min(classifiers)}" == PROJECT["requires-python"]


def classifiers_min(classifiers: list[str]) -> str:
    versions = [c.rsplit(":: ", 1)[1] for c in classifiers
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    return min(versions, key=lambda v: int(v.split(".")[1]))


def test_a_bare_mypy_checks_the_package() -> None:
    out = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    checked = re.search(r"Success: no issues found in (\d+) source files", out.stdout)
    assert checked, out.stdout
    assert int(checked[1]) >= len(list((ROOT / "nightwatch").rglob("*.py")))


def test_the_test_command_lints_and_type_checks_before_pytest() -> None:
    steps = [line.strip() for line in (ROOT / "scripts" / "test.sh").read_text().splitlines()
             if re.match(r"\s*\.venv/bin/(ruff|mypy|python -m pytest)\b", line)]
    assert [s.split()[0].rsplit("/", 1)[1] for s in steps] == ["ruff", "mypy", "python"], steps
    assert steps[0] == ".venv/bin/ruff check" and steps[1] == ".venv/bin/mypy"
