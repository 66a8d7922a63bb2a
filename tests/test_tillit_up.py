"""``tillit up`` as a shop developer meets it: one command, every process, demo data, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.platform import free_port
from tillit.launcher import taken_ports
from tillit.settings import COMPONENTS

pytestmark = pytest.mark.slow


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TILLIT_")}
    env["TILLIT_DATA_DIR"] = str(tmp_path / "data")
    env["TILLIT_LOG_LEVEL"] = "WARNING"
    for component in COMPONENTS:
        env[f"TILLIT_{component.upper()}_PORT"] = str(free_port())
    return env


def ports(env: dict[str, str]) -> dict[str, int]:
    return {component: int(env[f"TILLIT_{component.upper()}_PORT"]) for component in COMPONENTS}


def run_tillit(arguments: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tillit", *arguments], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


class Up:
    """A running ``tillit up`` whose output is read until it says it is ready."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tillit", "up"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []

    def wait_for(self, text: str, timeout: float = 90.0) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                break
            self.output.append(line)
            if text in line:
                return "".join(self.output)
        raise AssertionError(f"{text!r} never appeared:\n{''.join(self.output)}")

    def stop(self, signum: int) -> tuple[int, str]:
        self.process.send_signal(signum)
        rest, _ = self.process.communicate(timeout=60)
        return self.process.returncode, "".join(self.output) + rest


@pytest.fixture
def started(up_env: dict[str, str], tmp_path: Path) -> Iterator[Up]:
    up = Up(up_env, tmp_path)
    yield up
    if up.process.poll() is None:
        up.process.kill()
        up.process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_up_starts_everything_with_demo_data_and_stops_every_child(
    started: Up, up_env: dict[str, str], signum: int
) -> None:
    welcome = started.wait_for("Press Ctrl-C to stop.")
    for component, port in ports(up_env).items():
        assert f"{component:<18} http://127.0.0.1:{port}" in welcome
        assert httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200
    for channel in ("email", "sms", "web", "ads"):
        assert f"client_id=demo-{channel}" in welcome
    secret = welcome.split("client_id=demo-email  client_secret=", 1)[1].split()[0]
    gateway = f"http://127.0.0.1:{up_env['TILLIT_GATEWAY_PORT']}"
    token = httpx.post(
        f"{gateway}/oauth/token", data={"grant_type": "client_credentials"}, auth=("demo-email", secret)
    ).json()["access_token"]
    release = httpx.get(
        f"{gateway}/v1/subjects/shopper-astrid/profile",
        params={"purpose": "marketing.communications.email"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert release.status_code == 200
    assert release.json()["fields"]["first_name"] == "Astrid"

    code, output = started.stop(signum)
    assert code == 0, output
    assert "stopping every process" in output
    stopped = output.rsplit("tillit up: stopped (", 1)[1].split(")", 1)[0]
    assert stopped == ", ".join(f"{component}=0" for component in COMPONENTS), "a process did not exit cleanly"
    assert taken_ports(ports(up_env)) == []


def test_a_second_up_reuses_the_data_and_prints_the_same_credentials(up_env: dict[str, str], tmp_path: Path) -> None:
    first = Up(up_env, tmp_path)
    welcome = first.wait_for("Press Ctrl-C to stop.")
    assert first.stop(signal.SIGTERM)[0] == 0
    second = Up(up_env, tmp_path)
    again = second.wait_for("Press Ctrl-C to stop.")
    assert second.stop(signal.SIGTERM)[0] == 0
    line = next(line for line in welcome.splitlines() if "client_id=demo-email" in line)
    assert line in again


def test_a_taken_port_is_named_and_up_exits_non_zero(up_env: dict[str, str], tmp_path: Path) -> None:
    port = int(up_env["TILLIT_RULES_PORT"])
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run_tillit(["up"], up_env, tmp_path)
    assert result.returncode != 0
    assert f"{port} (rules)" in result.stderr
    assert taken_ports({name: p for name, p in ports(up_env).items() if name != "rules"}) == []


def test_a_bad_policy_stops_start_up_naming_file_key_and_problem(up_env: dict[str, str], tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    bad = policies / "release.yaml"
    bad.write_text("fields:\n  email: {category: user.contact.mail}\n", encoding="utf-8")
    env = {**up_env, "TILLIT_POLICY_DIR": str(policies)}
    for command in (["up"], ["policy", "check"], ["serve", "gateway"]):
        result = subprocess.run(
            [sys.executable, "-m", "tillit", *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0, command
        output = result.stdout + result.stderr
        assert f"{bad}: fields.email.category: 'user.contact.mail' is not a fideslang data category" in output
    assert taken_ports(ports(up_env)) == []
