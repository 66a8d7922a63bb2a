"""Reloading the policy of a running process when its files change or on SIGHUP, atomically.

A new policy replaces ``app.state.policy`` in one assignment, and only once it has loaded, validated
and passed the component's own checks; until then, and whenever it does not, every request keeps
deciding with the policy in force. A refused policy is logged as a warning naming the file, the key
and the problem. Watching is a cheap poll of the files' modification times (no extra dependency,
works on every file system and in a Kubernetes ConfigMap volume, whose updates swap a symlink).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from litestar import Litestar

from tillit.policy import Policy, PolicyError, load_policy

__all__ = ["PolicyCheck", "PolicyReloader"]

PolicyCheck = Callable[[Litestar, Policy], Any]
"""A component's own condition on a policy (sync or async); raising refuses the policy."""

_log = logging.getLogger("tillit.policy")
Fingerprint = tuple[tuple[str, int, int, int], ...]


class PolicyReloader:
    """Watches ``policy_dir`` for ``app`` every ``interval`` seconds (0: on SIGHUP only)."""

    def __init__(
        self,
        app: Litestar,
        policy_dir: Path,
        checks: Sequence[PolicyCheck] = (),
        interval: float = 1.0,
    ) -> None:
        self.app = app
        self.policy_dir = policy_dir
        self.checks = list(checks)
        self.interval = interval
        self._seen = self.fingerprint()
        policy: Policy | None = app.state.get("policy")
        if policy is not None and any(mtime > policy.loaded_at.timestamp() * 1e9 for _, mtime, _, _ in self._seen):
            self._seen = ()  # edited between loading and watching: the first look reloads
        self._hangup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._signal_installed = False

    def fingerprint(self) -> Fingerprint:
        """What changes when a policy file is edited, replaced, added or removed."""
        stats = []
        for path in sorted(self.policy_dir.glob("*.yaml")):
            with contextlib.suppress(OSError):
                stat = path.stat()
                stats.append((path.name, stat.st_mtime_ns, stat.st_size, stat.st_ino))
        return tuple(stats)

    async def reload(self, why: str) -> bool:
        """Load, validate and check the policy; install it if all pass. True when it was installed."""
        try:
            policy = await asyncio.to_thread(load_policy, self.policy_dir)
            for check in self.checks:
                outcome = check(self.app, policy)
                if hasattr(outcome, "__await__"):
                    await outcome
        except PolicyError as exc:
            _log.warning(
                "policy reload refused (%s): %s: %s: %s; the policy in force stays", why, exc.file, exc.key, exc.problem
            )
            return False
        except Exception as exc:
            _log.warning("policy reload refused (%s): %s; the policy in force stays", why, exc)
            return False
        self.app.state.policy = policy
        _log.info("policy reloaded (%s) from %s", why, ", ".join(policy.sources))
        return True

    async def poll(self, *, hangup: bool = False) -> bool:
        """One look at the files: reload when they changed or on ``hangup``. True when a policy was installed."""
        current = self.fingerprint()
        if not hangup and current == self._seen:
            return False
        self._seen = current
        return await self.reload("SIGHUP" if hangup else "a policy file changed")

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hangup.wait(), timeout=self.interval if self.interval > 0 else None)
            hangup = self._hangup.is_set()
            self._hangup.clear()
            try:
                await self.poll(hangup=hangup)
            except Exception:
                _log.exception("policy watch failed; it will look again")

    def start(self) -> None:
        """Watch in the background; handle SIGHUP where this process may (the main thread)."""
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._hangup.set)
            self._signal_installed = True
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            _log.info("SIGHUP does not reload the policy in this process (%s); file changes still do", exc)
        self._task = loop.create_task(self._watch())

    async def stop(self) -> None:
        if self._signal_installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._signal_installed = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
