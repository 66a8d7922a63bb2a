"""A baseline app (``bench._raw_insert_app``, ``bench._bare_app``) in its own process, like a component."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.platform import free_port
from tillit.launcher import PlatformError
from tillit.settings import REPO_ROOT

__all__ = ["serve_baseline"]


@contextmanager
def serve_baseline(module: str, settings: Mapping[str, str], log_path: Path) -> Iterator[tuple[str, int]]:
    """Run ``python -m module`` until ``/health`` answers; (url, pid).

    ``settings`` are its ``BENCH_*`` environment; it learns its port from ``BENCH_PORT``.
    """
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TILLIT_", "BENCH_"))}
    env.update({**settings, "BENCH_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=env,
            cwd=REPO_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            with httpx.Client(timeout=2.0) as client:
                while True:
                    if process.poll() is not None:
                        tail = log_path.read_text(errors="replace")[-3000:]
                        raise PlatformError(f"{module} exited with {process.returncode}:\n{tail}")
                    try:
                        if client.get(f"{url}/health").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise PlatformError(f"{module} is not ready after 60 s")
                    time.sleep(0.1)
            yield url, process.pid
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
