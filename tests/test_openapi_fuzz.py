"""Schemathesis over every service's and the gateway's OpenAPI, against the running processes.

The schemathesis CLI runs all its phases (coverage, fuzzing, stateful) with every check: no 5xx,
status codes, content types, headers and bodies as documented, schema-violating requests refused,
schema-valid ones accepted (see ``tests/schemathesis.toml`` for the 400 / 422 convention), auth
not ignored, ``Allow`` headers honest. A failure prints schemathesis' own report with a curl line
that reproduces it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.clients import SCOPES
from tests.platform import RunningPlatform

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = int(os.environ.get("TILLIT_FUZZ_EXAMPLES", "60"))
COMPONENTS = ("consent", "preferences", "rules", "gateway")


@pytest.mark.parametrize("component", COMPONENTS)
def test_openapi_holds_under_fuzzing(stack: RunningPlatform, component: str, tmp_path: Path) -> None:
    if component == "gateway" and "fuzz" not in stack.channels:
        # Every scope, so that every gateway endpoint is fuzzed past its scope check.
        stack.add_channel("email", list(SCOPES), name="fuzz")
    headers = stack.auth("fuzz") if component == "gateway" else stack.service_headers(component)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{stack.url(component)}/schema/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        *(argument for name, value in headers.items() for argument in ("-H", f"{name}: {value}")),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600, check=False)
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis found problems in the {component} API:\n{report}"
    assert " 0 generated" not in report, report
