"""Process settings read from the environment (``TILLIT_*``), with local defaults.

Every process reads the same variables; the names are listed in the README. Defaults make
``tillit up`` work on a laptop: SQLite files and keys under ``.tillit/`` in the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import msgspec

__all__ = [
    "COMPONENTS",
    "DEFAULT_PORTS",
    "SERVERS",
    "SERVICES",
    "Settings",
    "load_settings",
]

SERVICES: Final = ("consent", "preferences", "rules")
COMPONENTS: Final = ("consent", "preferences", "rules", "gateway", "preference_center")
DEFAULT_PORTS: Final = {
    "gateway": 8100,
    "consent": 8101,
    "preferences": 8102,
    "rules": 8103,
    "preference_center": 8000,
}
SERVERS: Final = ("granian", "uvicorn")
REPO_ROOT: Final = Path(__file__).resolve().parent.parent


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """What one process needs to know about itself and the others."""

    component: str
    host: str = "127.0.0.1"
    port: int
    data_dir: Path
    database_url: str
    database_schema: str | None
    policy_dir: Path
    keys_dir: Path
    urls: dict[str, str]
    access_token_ttl: int = 300
    service_token_ttl: int = 60
    upstream_timeout: float = 2.0
    batch_linger_seconds: float = 0.002
    max_body_bytes: int = 64 * 1024
    log_level: str = "INFO"
    server: str = "granian"
    expiry_sweep_seconds: float = 60.0
    policy_reload_seconds: float = 1.0
    rate_limit_scale: float = 1.0
    webhook_poll_seconds: float = 2.0
    webhook_backoff_seconds: float = 30.0
    webhook_backoff_max_seconds: float = 6 * 3600.0
    webhook_max_attempts: int = 20
    webhook_timeout: float = 5.0
    webhooks_allow_insecure_loopback: bool = False
    preference_link_ttl: int = 7 * 86400
    shopper_session_ttl: int = 1800

    def url_of(self, component: str) -> str:
        return self.urls[component]


class _Environ:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def __call__(self, name: str, default: str | None = None) -> str | None:
        return self._environ.get(f"TILLIT_{name}", default)


def _database(env: _Environ, component: str, data_dir: Path) -> tuple[str, str | None]:
    """The component's own database.

    ``TILLIT_<COMPONENT>_DATABASE_URL`` wins; else ``TILLIT_DATABASE_URL`` shared by all with one
    schema per component (prefixed by ``TILLIT_DATABASE_SCHEMA_PREFIX``); else an SQLite file.
    """
    own = env(f"{component.upper()}_DATABASE_URL")
    if own:
        return own, None
    shared = env("DATABASE_URL")
    if shared:
        prefix = env("DATABASE_SCHEMA_PREFIX", "") or ""
        return shared, f"{prefix}{component}"
    return f"sqlite+aiosqlite:///{data_dir / f'{component}.sqlite3'}", None


def _server(env: _Environ) -> str:
    server = (env("SERVER") or "granian").lower()
    if server not in SERVERS:
        raise ValueError(f"TILLIT_SERVER={server!r}; expected one of {', '.join(SERVERS)}")
    return server


def _positive(env: _Environ, name: str, default: float) -> float:
    value = float(env(name) or default)
    if value <= 0:
        raise ValueError(f"TILLIT_{name}={value}; expected a number above 0")
    return value


MAX_BATCH_LINGER_SECONDS: Final = 0.05


def _batch_linger(env: _Environ) -> float:
    value = float(env("BATCH_LINGER_SECONDS") or 0.002)
    if not 0 <= value <= MAX_BATCH_LINGER_SECONDS:
        raise ValueError(f"TILLIT_BATCH_LINGER_SECONDS={value}; expected 0 (off) to {MAX_BATCH_LINGER_SECONDS} seconds")
    return value


def _port(env: _Environ, component: str) -> int:
    return int(env(f"{component.upper()}_PORT") or DEFAULT_PORTS[component])


def _flag(env: _Environ, name: str) -> bool:
    value = (env(name) or "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"TILLIT_{name}={value!r}; expected 1 or 0 (true or false)")


def load_settings(component: str, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings of ``component`` from ``environ`` (the process environment by default)."""
    env = _Environ(os.environ if environ is None else environ)
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}; expected one of {', '.join(COMPONENTS)}")
    data_dir = Path(env("DATA_DIR") or Path.cwd() / ".tillit").resolve()
    database_url, schema = _database(env, component, data_dir)
    host = env("HOST", "127.0.0.1") or "127.0.0.1"
    urls = {name: env(f"{name.upper()}_URL") or f"http://{host}:{_port(env, name)}" for name in COMPONENTS}
    return Settings(
        component=component,
        host=host,
        port=_port(env, component),
        data_dir=data_dir,
        database_url=database_url,
        database_schema=schema,
        policy_dir=Path(env("POLICY_DIR") or REPO_ROOT / "policies").resolve(),
        keys_dir=Path(env("KEYS_DIR") or data_dir / "keys").resolve(),
        urls=urls,
        access_token_ttl=int(env("ACCESS_TOKEN_TTL") or 300),
        service_token_ttl=int(env("SERVICE_TOKEN_TTL") or 60),
        upstream_timeout=float(env("UPSTREAM_TIMEOUT") or 2.0),
        batch_linger_seconds=_batch_linger(env),
        log_level=(env("LOG_LEVEL") or "INFO").upper(),
        server=_server(env),
        expiry_sweep_seconds=float(env("EXPIRY_SWEEP_SECONDS") or 60.0),
        policy_reload_seconds=float(env("POLICY_RELOAD_SECONDS") or 1.0),
        rate_limit_scale=_positive(env, "RATE_LIMIT_SCALE", 1.0),
        webhook_poll_seconds=float(env("WEBHOOK_POLL_SECONDS") or 2.0),
        webhook_backoff_seconds=float(env("WEBHOOK_BACKOFF_SECONDS") or 30.0),
        webhook_backoff_max_seconds=float(env("WEBHOOK_BACKOFF_MAX_SECONDS") or 6 * 3600.0),
        webhook_max_attempts=int(env("WEBHOOK_MAX_ATTEMPTS") or 20),
        webhook_timeout=float(env("WEBHOOK_TIMEOUT") or 5.0),
        webhooks_allow_insecure_loopback=_flag(env, "WEBHOOKS_ALLOW_INSECURE_LOOPBACK"),
        preference_link_ttl=int(env("PREFERENCE_LINK_TTL") or 7 * 86400),
        shopper_session_ttl=int(env("SHOPPER_SESSION_TTL") or 1800),
    )
