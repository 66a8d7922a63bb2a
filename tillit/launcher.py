"""Starting, watching and stopping the platform's processes (``tillit up`` and the test suites)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Final

import httpx

from tillit.settings import COMPONENTS, load_settings

__all__ = ["APP_FACTORIES", "Platform", "PlatformError", "PortTaken", "taken_ports"]

APP_FACTORIES: Final = {
    "consent": "services.consent.app:create_app",
    "preferences": "services.preferences.app:create_app",
    "rules": "services.rules.app:create_app",
    "gateway": "gateway.app:create_app",
    "preference_center": "preference_center.app:create_app",
}


class PlatformError(RuntimeError):
    """A process did not come up; the message says which and shows the end of its log."""


class PortTaken(PlatformError):
    pass


def taken_ports(ports: Mapping[str, int], host: str = "127.0.0.1") -> list[tuple[str, int]]:
    """Ports something listens on. SO_REUSEADDR, as the servers use it, so that connections of a
    platform stopped a moment ago (TIME_WAIT) do not count as taken."""
    taken = []
    for component, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                taken.append((component, port))
    return taken


class Platform:
    """The processes of one running platform, all configured through the same environment."""

    def __init__(
        self,
        env: Mapping[str, str],
        components: Iterable[str] = COMPONENTS,
        log_dir: Path | None = None,
    ) -> None:
        self.env = dict(env)
        self.components = list(components)
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self.settings = {name: load_settings(name, self.env) for name in self.components}

    def url(self, component: str) -> str:
        return self.settings[component].url_of(component)

    def log_path(self, component: str) -> Path | None:
        return self.log_dir / f"{component}.log" if self.log_dir else None

    def check_ports(self) -> None:
        ports = {name: self.settings[name].port for name in self.components}
        taken = taken_ports(ports, next(iter(self.settings.values())).host)
        if taken:
            listed = ", ".join(f"{port} ({name})" for name, port in taken)
            raise PortTaken(f"port already in use: {listed}; stop what holds it or set TILLIT_<COMPONENT>_PORT")

    def start(self, components: Iterable[str] | None = None) -> None:
        for component in components or self.components:
            self.start_one(component)

    def start_one(self, component: str) -> None:
        output: IO[bytes] | None = None
        path = self.log_path(component)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            output = path.open("ab")
            self._logs[component] = output
        self.processes[component] = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "tillit", "serve", component],
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=output is not None,
        )

    def wait_ready(self, timeout: float = 60.0, components: Iterable[str] | None = None) -> None:
        pending = list(components or self.components)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for component in list(pending):
                    process = self.processes[component]
                    if process.poll() is not None:
                        raise PlatformError(
                            f"{component} exited with status {process.returncode} while starting{self._tail(component)}"
                        )
                    try:
                        if client.get(f"{self.url(component)}/health/ready").status_code == 200:
                            pending.remove(component)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    raise PlatformError(f"not ready after {timeout:.0f}s: {', '.join(pending)}")
                if pending:
                    time.sleep(0.1)

    def _tail(self, component: str) -> str:
        path = self.log_path(component)
        if path is None or not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines()[-25:]
        return "\n--- end of " + str(path) + " ---\n" + "\n".join(lines)

    def stop_one(self, component: str, timeout: float = 15.0, *, signalled: bool = False) -> int | None:
        """Stop one process: SIGTERM once (a second one cuts a graceful shutdown short), then wait."""
        process = self.processes.pop(component, None)
        if process is None:
            return None
        if process.poll() is None:
            if not signalled:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log = self._logs.pop(component, None)
        if log is not None:
            log.close()
        return process.returncode

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process at once, then wait for each (they shut down in parallel)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return {component: self.stop_one(component, signalled=True) for component in list(self.processes)}
