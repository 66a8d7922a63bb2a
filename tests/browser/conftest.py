"""Playwright driving Debian's Chromium against the running platform (never a downloaded browser).

Without ``/usr/bin/chromium`` the browser suite is skipped on a laptop and fails under ``CI=true``.
Screenshots of every page land in ``test-artifacts/screenshots/`` at the repository root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from preference_center.assets import AXE_SCRIPT, ensure_assets
from tests.platform import RunningPlatform
from tillit.keys import LINK_KEY, load_private_key
from tillit.links import sign_preference_link
from tillit.settings import REPO_ROOT

CHROMIUM: Final = Path(os.environ.get("TILLIT_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS: Final = REPO_ROOT / "test-artifacts" / "screenshots"
PHONE: Final = {"width": 390, "height": 844}
SERIOUS: Final = ("serious", "critical")


@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Playwright]:
    """Module-scoped: while Playwright's sync API runs, this thread has an event loop, and later
    suites that call ``asyncio.run`` (creating channel clients) must not find it still there."""
    if not CHROMIUM.exists():
        message = f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    ensure_assets(dev=True)
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    arguments = ["--no-sandbox"] if os.geteuid() == 0 else []
    chromium = playwright_instance.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=arguments)
    yield chromium
    chromium.close()


@dataclass
class Shopper:
    """One browser context (one shopper's cookies) and every request it made."""

    context: BrowserContext
    page: Page
    origin: str
    requests: list[str] = field(default_factory=list)

    def goto(self, path: str) -> None:
        response = self.page.goto(self.origin + path)
        assert response is not None

    def third_party_requests(self) -> list[str]:
        return [url for url in self.requests if not url.startswith((self.origin + "/", "data:"))]


@pytest.fixture
def open_shopper(browser: Browser) -> Iterator[Any]:
    contexts: list[BrowserContext] = []

    def open_(stack: RunningPlatform, *, javascript: bool = True, locale: str = "en-GB") -> Shopper:
        context = browser.new_context(
            viewport=PHONE, java_script_enabled=javascript, locale=locale, is_mobile=True, has_touch=True
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        shopper = Shopper(context, page, stack.url("preference_center"))
        page.on("request", lambda request: shopper.requests.append(request.url))
        return shopper

    yield open_
    for context in contexts:
        context.close()


def link_url(stack: RunningPlatform, subject_id: str) -> str:
    """A preference link as the e-mail channel gets it from the gateway."""
    response = httpx.post(
        f"{stack.gateway}/v1/subjects/{subject_id}/preference-link", json={}, headers=stack.auth("email")
    )
    assert response.status_code == 200, response.text
    return str(response.json()["url"])


def expired_link_url(stack: RunningPlatform, subject_id: str) -> str:
    token, _ = sign_preference_link(
        load_private_key(stack.keys_dir, LINK_KEY),
        issuer=stack.gateway,
        subject_id=subject_id,
        client_id="test",
        now=datetime.now(UTC) - timedelta(days=8),
        lifetime=timedelta(days=7),
    )
    return f"{stack.url('preference_center')}/link/{token}"


def check_axe(page: Page, name: str) -> None:
    """axe-core (from the npm registry) inside the page: no serious or critical violation.

    It is evaluated over the DevTools protocol, so the page's CSP (no inline scripts) stays in force.
    """
    page.evaluate(AXE_SCRIPT.read_text())
    violations = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations.map(v => ({
            id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 3)
        }))"""
    )
    serious = [violation for violation in violations if violation["impact"] in SERIOUS]
    assert not serious, f"{name}: {serious}"


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"), full_page=True)


def check_page(page: Page, name: str) -> None:
    """Every page a test visits: a screenshot for the artifacts, then axe."""
    screenshot(page, name)
    check_axe(page, name)
