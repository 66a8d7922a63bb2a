"""The preference center in a real browser on the real platform: a shopper on a phone, start to finish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import Shopper, check_page, expired_link_url, link_url, screenshot
from tests.platform import RunningPlatform

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.parametrize("stack", ["sqlite"], indirect=True)]

EMAIL = "marketing.communications.email"
PROFILED = "personalize.content.profiled"


def release(stack: RunningPlatform, subject_id: str, purpose: str = EMAIL) -> dict[str, Any]:
    """What a channel registered for ``purpose`` gets (e-mail for the newsletter, web for personalization)."""
    channel = "email" if purpose == EMAIL else "web"
    response = httpx.get(
        f"{stack.gateway}/v1/subjects/{subject_id}/profile", params={"purpose": purpose}, headers=stack.auth(channel)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def navigate(page: Page, section: str) -> None:
    page.get_by_role("navigation").get_by_role("link", name=section, exact=True).click()


def answer_current_question(page: Page) -> None:
    step = page.locator("#quiz-step")
    for kind in ("radio", "checkbox"):
        choices = step.locator(f"input[type={kind}]")
        if choices.count():
            choices.first.check()
            break
    label = page.locator("#progress-label").inner_text()
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#progress-label")).not_to_have_text(label)


def test_link_quiz_preferences_and_a_withdrawal_that_the_gateway_honours_at_once(
    stack: RunningPlatform, open_shopper: Any
) -> None:
    subject = stack.new_shopper(
        {"email": "ebba@example.com", "first_name": "Ebba", "preferred_language": "en"}, consents=((EMAIL, "give"),)
    )
    assert release(stack, subject)["fields"]["email"] == "ebba@example.com"
    shopper: Shopper = open_shopper(stack)
    page = shopper.page

    page.goto(link_url(stack, subject))
    assert page.url == f"{shopper.origin}/", "the link token does not stay in the address bar"
    expect(page.get_by_role("heading", name="What we know about you")).to_be_visible()
    expect(page.get_by_text("ebba@example.com")).to_be_visible()
    check_page(page, "overview")

    # The quiz: one question per step, swapped in by htmx (the page itself never reloads), with back.
    navigate(page, "Style quiz")
    check_page(page, "quiz-list")
    page.get_by_role("button", name="Find your style").click()
    expect(page.locator("#progress-label")).to_contain_text("Question 1")
    page.evaluate("window.stillTheSamePage = true")
    check_page(page, "quiz-step")
    answer_current_question(page)
    expect(page.locator("#progress-label")).to_contain_text("Question 2")
    page.get_by_role("button", name="Back").click()
    expect(page.locator("#progress-label")).to_contain_text("Question 1")
    for _ in range(20):
        if page.get_by_role("button", name="Save my answers").count():
            break
        if page.locator("#quiz-step img").count():
            images = page.locator("#quiz-step img")
            assert all(images.nth(index).get_attribute("alt") for index in range(images.count()))
            check_page(page, "quiz-image-choice")
        answer_current_question(page)
    check_page(page, "quiz-last")
    page.get_by_role("button", name="Save my answers").click()
    expect(page.get_by_role("heading", name="Done. Thank you!")).to_be_visible()
    assert page.evaluate("window.stillTheSamePage") is True, "htmx swapped the steps in; no full page load"
    check_page(page, "quiz-done")

    navigate(page, "Preferences")
    page.get_by_label("Tops", exact=True).select_option("L")
    page.get_by_label("Favourite brands").fill("Filippa K, Acne Studios")
    page.get_by_role("checkbox", name="Jeans").check()
    page.get_by_label("E-mail", exact=True).select_option("monthly")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_text("Saved. Thank you.")).to_be_visible()
    expect(page.get_by_label("Favourite brands")).to_have_value("Filippa K, Acne Studios")
    check_page(page, "preferences")
    assert release(stack, subject)["fields"]["favourite_brands"] == ["Filippa K", "Acne Studios"]

    # Withdrawal: one click on the same page, effective at once.
    navigate(page, "Consents")
    card = page.locator("#purpose-marketing-communications-email")
    expect(card.get_by_text("On since")).to_be_visible()
    check_page(page, "consents")
    card.get_by_role("button", name="Withdraw").click()
    expect(card.get_by_text("Withdrawn. From now on we no longer use your data for this.")).to_be_visible()
    expect(card.get_by_role("button", name="Allow")).to_be_visible()
    check_page(page, "consents-withdrawn")
    withheld = release(stack, subject)
    assert withheld["fields"] == {}
    assert {item["field"]: item["reason"] for item in withheld["withheld"]}["email"] == "consent_withdrawn"

    card.locator("details.history summary").click()
    with page.expect_download() as download:
        card.get_by_role("link", name="Signed receipt").first.click()
    assert download.value.suggested_filename.startswith("consent-receipt-")
    assert Path(download.value.path()).read_text().count(".") == 2, "a compact JWS"

    # Giving it again is a double opt-in: pending until the shopper confirms from the e-mail.
    card.get_by_role("button", name="Allow").click()
    expect(card.get_by_text("Almost done: we have sent you an e-mail.")).to_be_visible()
    expect(card.get_by_text("Pending", exact=True)).to_be_visible()
    assert release(stack, subject)["fields"] == {}, "pending does not count"

    assert shopper.third_party_requests() == [], "no request leaves the preference center's origin"


def test_without_javascript_the_toggle_and_the_quiz_work_by_full_page_posts(
    stack: RunningPlatform, open_shopper: Any
) -> None:
    subject = stack.new_shopper({"email": "nojs@example.com", "first_name": "Noa", "favourite_categories": ["jeans"]})
    shopper: Shopper = open_shopper(stack, javascript=False)
    page = shopper.page
    page.goto(link_url(stack, subject))

    shopper.goto("/consents")
    card = page.locator("#purpose-personalize-content-profiled")
    expect(card.get_by_text("Off: you have not said yes.")).to_be_visible()
    card.get_by_role("button", name="Allow").click()
    expect(card.get_by_text("Saved. Thank you.")).to_be_visible()
    expect(card.get_by_text("On since")).to_be_visible()
    screenshot(page, "nojs-consents-given")
    assert release(stack, subject, PROFILED)["fields"], "given without JavaScript: released at once"
    card.get_by_role("button", name="Withdraw").click()
    expect(card.get_by_text("Withdrawn.")).to_be_visible()
    assert release(stack, subject, PROFILED)["fields"] == {}

    shopper.goto("/quiz")
    page.get_by_role("button", name="Find the right gift").click()
    expect(page.locator("#progress-label")).to_contain_text("Question 1")
    page.locator("#quiz-step input[type=radio]").first.check()
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#progress-label")).to_contain_text("Question 2")
    page.get_by_role("button", name="Back").click()
    expect(page.locator("#progress-label")).to_contain_text("Question 1")
    screenshot(page, "nojs-quiz")
    assert shopper.third_party_requests() == []


LANGUAGES = {"sv": "Samtycken", "nb": "Samtykker", "et": "Nõusolekud", "en": "Consents"}


def test_every_language_renders_and_every_page_passes_axe(stack: RunningPlatform, open_shopper: Any) -> None:
    subject = stack.new_shopper(
        {
            "email": "lang@example.com",
            "first_name": "Lin",
            "preferred_language": "et",
            "sizes": {"shoes": 39.5},
            "price_range": {"min": 30, "max": 2500, "currency": "EUR"},
        },
        consents=((EMAIL, "give"), (PROFILED, "give"), (PROFILED, "withdraw")),
    )
    shopper: Shopper = open_shopper(stack)
    page = shopper.page
    page.goto(link_url(stack, subject))
    expect(page.locator("html")).to_have_attribute("lang", "et")
    expect(page.get_by_text("39,5")).to_be_visible()
    for path in ("/", "/consents", "/preferences", "/quiz", "/data", "/delete"):
        shopper.goto(path)
        check_page(page, f"et{path.replace('/', '-') or '-overview'}")

    shopper.goto("/consents")
    for language, consents in LANGUAGES.items():
        page.locator("#lang-select").select_option(language)
        page.locator("form.lang button").click()
        expect(page.locator("html")).to_have_attribute("lang", language)
        expect(page.get_by_role("navigation").get_by_role("link", name=consents)).to_be_visible()
        check_page(page, f"consents-{language}")
    profile = httpx.get(
        f"{stack.url('preferences')}/v1/subjects/{subject}/profile", headers=stack.service_headers("preferences")
    ).json()
    assert profile["fields"]["preferred_language"] == "en", "the switch is kept in the profile"
    assert shopper.third_party_requests() == []


def test_tampered_and_expired_links_get_a_friendly_page_and_a_way_to_a_new_one(
    stack: RunningPlatform, open_shopper: Any
) -> None:
    subject = stack.new_shopper({"email": "old@example.com"})
    shopper: Shopper = open_shopper(stack, locale="sv-SE")
    page = shopper.page

    shopper.goto("/")
    expect(page.locator("html")).to_have_attribute("lang", "sv")
    check_page(page, "home-sv")
    shopper.goto("/consents")
    expect(page.get_by_role("heading", name="Din session har avslutats")).to_be_visible()
    check_page(page, "session-over-sv")

    good = link_url(stack, subject)
    page.goto(good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"))
    expect(page.get_by_role("heading", name="Länken fungerar inte")).to_be_visible()
    check_page(page, "link-tampered")

    page.goto(expired_link_url(stack, subject))
    expect(page.get_by_role("heading", name="Länken har gått ut")).to_be_visible()
    check_page(page, "link-expired")
    page.get_by_role("button", name="Skicka en ny länk till mig").click()
    expect(page.get_by_role("heading", name="En ny länk är på väg")).to_be_visible()
    check_page(page, "link-sent")
    assert shopper.third_party_requests() == []


def test_my_data_download_and_a_deletion_request_with_its_due_date(stack: RunningPlatform, open_shopper: Any) -> None:
    subject = stack.new_shopper({"email": "gone@example.com", "first_name": "Gun"}, consents=((EMAIL, "give"),))
    shopper: Shopper = open_shopper(stack)
    page = shopper.page
    page.goto(link_url(stack, subject))

    shopper.goto("/data")
    check_page(page, "data")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download my data (JSON)").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["subject_id"] == subject
    assert exported["profile"]["email"]["value"] == "gone@example.com"

    page.get_by_role("link", name="Ask us to delete everything we hold about you").click()
    check_page(page, "delete")
    page.get_by_label("Yes, delete everything you hold about me").check()
    page.get_by_role("button", name="Delete my data").click()
    expect(page.get_by_role("heading", name="Your deletion request")).to_be_visible()
    expect(page.get_by_text("due by")).to_be_visible()
    check_page(page, "delete-requested")
    assert shopper.third_party_requests() == []


def test_the_keyboard_alone_skips_to_the_content_and_toggles_a_purpose(
    stack: RunningPlatform, open_shopper: Any
) -> None:
    subject = stack.new_shopper({"email": "keys@example.com", "favourite_categories": ["jeans"]})
    shopper: Shopper = open_shopper(stack)
    page = shopper.page
    page.goto(link_url(stack, subject))
    shopper.goto("/consents")

    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"

    allow = page.locator("#purpose-personalize-content-profiled").get_by_role("button", name="Allow")
    for _ in range(40):  # tab forward until the purpose's button has the focus
        page.keyboard.press("Tab")
        if allow.evaluate("button => button === document.activeElement"):
            break
    else:
        pytest.fail("the Allow button cannot be reached with Tab")
    page.keyboard.press("Enter")
    card = page.locator("#purpose-personalize-content-profiled")
    expect(card.get_by_text("Saved. Thank you.")).to_be_visible()
    assert release(stack, subject, PROFILED)["fields"], "given from the keyboard, released at once"

    # The session ends while the page is open: the next click shows why, instead of doing nothing.
    shopper.context.clear_cookies(name="tillit_pc")
    card.get_by_role("button", name="Withdraw").click()
    expect(page.get_by_role("heading", name="Your session has ended")).to_be_visible()
    check_page(page, "session-over")
