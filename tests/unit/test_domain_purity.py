"""The domain imports nothing outside the standard library (and itself)."""

import ast
import sys
from pathlib import Path

import nightwatch.domain

DOMAIN = Path(nightwatch.domain.__file__).parent


def test_domain_imports_only_stdlib():
    offenders = []
    for path in DOMAIN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if name.startswith("nightwatch.domain") or top == "__future__":
                    continue
                if top not in sys.stdlib_module_names:
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
    assert len(list(DOMAIN.glob("*.py"))) >= 5  # the walk did look at the domain
