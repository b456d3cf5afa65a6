"""Every module of every package imports, and every ``archsearch`` import names a real module.

mypy runs with ``ignore_missing_imports`` (for third-party packages without stubs) and checks
the source folders by path, so it does not notice an import of a project module that was moved
or removed; this test does, including imports inside functions (read from the source).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

PACKAGES = ("server", "search", "spaces", "surrogates", "worker", "fleet")
REPO = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(f"archsearch.{pkg}")
        names.append(mod.__name__)
        names += [m.name for m in pkgutil.iter_modules(mod.__path__, f"{mod.__name__}.")]
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_every_archsearch_import_in_the_source_resolves() -> None:
    missing = []
    for folder in (*PACKAGES, "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "archsearch."
                ):
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names if a.name.startswith("archsearch.")]
                else:
                    continue
                for name in names:
                    if importlib.util.find_spec(name) is None:
                        missing.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)
