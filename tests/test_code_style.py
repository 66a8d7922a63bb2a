"""ruff's lint and format rules (configured in pyproject.toml) hold for the whole repository."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tillit.settings import REPO_ROOT


@pytest.mark.parametrize("arguments", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff_is_clean(arguments: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
