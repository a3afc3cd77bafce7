"""The layering in docs/architecture.md is executable: import-linter checks it, and a planted
import that breaks it makes the check fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copy_of_tree(tmp_path) -> Path:
    shutil.copytree(
        ROOT / "cacheproxy", tmp_path / "cacheproxy", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")


def test_the_package_keeps_its_layers():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(
    "module, line, broken",
    [
        # The Simple API reaching up into the web layer.
        (
            "cacheproxy.protocol.names",
            "import cacheproxy.http.views",
            "cacheproxy.protocol is not allowed to import cacheproxy.http",
        ),
        # The store reaching up into a service.
        (
            "cacheproxy.storage.records",
            "import cacheproxy.pages.service",
            "cacheproxy.storage is not allowed to import cacheproxy.pages",
        ),
        # Two siblings that must stay independent.
        (
            "cacheproxy.files.service",
            "import cacheproxy.jsonapi.service",
            "cacheproxy.files is not allowed to import cacheproxy.jsonapi",
        ),
        # diskcache outside the storage port.
        (
            "cacheproxy.pages.rules",
            "import diskcache",
            "cacheproxy.pages is not allowed to import diskcache",
        ),
        # aiohttp's server in a service.
        (
            "cacheproxy.files.ranges",
            "import aiohttp.web",
            "cacheproxy.files is not allowed to import aiohttp",
        ),
    ],
)
def test_a_planted_violation_breaks_the_contract(copy_of_tree, module, line, broken):
    _plant(copy_of_tree, module, line)
    result = _lint(copy_of_tree)
    assert result.returncode != 0
    assert broken in " ".join(result.stdout.split())
