"""The repository is ruff-clean (lint and format) and type-checks with mypy (package, tests, benchmarks).

Each tool runs as CI runs it, from the repository root with this interpreter (``python -m ...``), with
the configuration in pyproject.toml; a failure shows the tool's own report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "args",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "aso_workflows", "tests", "benchmarks"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_static_check_passes(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.fail(
            f"$ python -m {' '.join(args)}  (exit {proc.returncode})\n{proc.stdout}{proc.stderr}",
            pytrace=False,
        )
