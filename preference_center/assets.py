"""Front-end assets from the npm registry (htmx; axe-core for the browser tests), never committed.

``preference_center/package.json`` and its ``package-lock.json`` pin them; :func:`ensure_assets`
runs ``npm ci`` when they are missing, as ``tillit up`` and the browser tests do.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Final

__all__ = [
    "ASSET_FILES",
    "AXE_SCRIPT",
    "HTMX_SCRIPT",
    "NODE_MODULES",
    "STATIC_DIR",
    "asset_version",
    "ensure_assets",
    "local_static",
]

PACKAGE_DIR: Final = Path(__file__).parent
STATIC_DIR: Final = PACKAGE_DIR / "static"
NODE_MODULES: Final = PACKAGE_DIR / "node_modules"
HTMX_SCRIPT: Final = NODE_MODULES / "htmx.org" / "dist" / "htmx.min.js"
AXE_SCRIPT: Final = NODE_MODULES / "axe-core" / "axe.min.js"
ASSET_FILES: Final = (HTMX_SCRIPT.parent,)
"""Directories the ``/static`` route also serves from (htmx's ``dist``)."""


def ensure_assets(*, dev: bool = False) -> None:
    """Install the pinned npm packages unless they are there already (``dev``: axe-core too)."""
    wanted = [HTMX_SCRIPT, *([AXE_SCRIPT] if dev else [])]
    if all(path.exists() for path in wanted):
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed once to install the preference center's htmx (Node.js >= 18)")
    command = [npm, "ci", "--prefix", str(PACKAGE_DIR), "--no-audit", "--no-fund", "--loglevel=error"]
    if not dev:
        command.append("--omit=dev")
    subprocess.run(command, check=True, cwd=PACKAGE_DIR)  # noqa: S603 - npm from PATH, fixed arguments


@cache
def asset_version() -> str:
    """A short fingerprint of the static files, appended to their URLs so caches see a change at once."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.read_bytes())
    if HTMX_SCRIPT.exists():
        digest.update(HTMX_SCRIPT.read_bytes())
    return digest.hexdigest()[:10]


@cache
def local_static(url: str) -> bool:
    """``url`` is a file the preference center serves itself under ``/static/``."""
    if not url.startswith("/static/") or ".." in url or "\\" in url:
        return False
    return (STATIC_DIR / url.removeprefix("/static/").split("?", 1)[0]).is_file()
