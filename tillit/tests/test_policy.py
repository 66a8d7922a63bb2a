"""The release policy loads only when every key is known and every reference resolves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tillit.policy import ConsentDuration, PolicyError, load_policy
from tillit.settings import REPO_ROOT

VALID = """
fields:
  email: {category: user.contact.email}
  shoe_size: {category: user.demographic.profile}
purposes:
  marketing.communications.email:
    title: Newsletter
    legal_basis: consent
    consent_lasts: P24M
    may_use: [user.contact.email, user.demographic.profile]
channels:
  email: {purposes: [marketing.communications.email]}
notices:
  marketing.communications.email:
    - version: 1
      effective: 2026-01-01T00:00:00Z
      texts:
        en: {title: Newsletter, text: We e-mail you.}
        sv: {title: Nyhetsbrev, text: Vi mejlar dig.}
        nb: {title: Nyhetsbrev, text: Vi sender deg e-post.}
        et: {title: Uudiskiri, text: Saadame sulle kirju.}
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    return directory


def write(directory: Path, text: str, name: str = "release.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_policy_loads() -> None:
    policy = load_policy(REPO_ROOT / "policies")
    assert "email" in policy.fields
    assert policy.purposes["marketing.communications.email"].legal_basis == "consent"
    assert set(policy.channels) >= {"email", "sms", "web", "ads"}


def test_a_valid_policy_loads(policy_dir: Path) -> None:
    write(policy_dir, VALID)
    policy = load_policy(policy_dir)
    assert policy.fields["shoe_size"].category == "user.demographic.profile"
    assert policy.channels["email"].purposes == ["marketing.communications.email"]


@pytest.mark.parametrize(
    ("broken", "key", "problem"),
    [
        (VALID.replace("user.contact.email}", "user.contact.mail}"), "fields.email.category", "'user.contact.mail'"),
        (
            VALID.replace("may_use: [user.contact.email,", "may_use: [user.nope,"),
            "purposes.marketing.communications.email.may_use",
            "'user.nope' is not a fideslang data category",
        ),
        (
            VALID.replace("  marketing.communications.email:\n", "  marketing.carrier_pigeon:\n"),
            "purposes.marketing.carrier_pigeon",
            "not a fideslang data use",
        ),
        (
            VALID.replace("{purposes: [marketing.communications.email]}", "{purposes: [personalize]}"),
            "channels.email.purposes",
            "'personalize' is not a purpose declared in the policy",
        ),
        (VALID.replace("    consent_lasts: P24M\n", ""), "consent_lasts", "needs consent_lasts"),
        (VALID.replace("P24M", "two years"), "consent_lasts", "is not a duration"),
        (VALID.replace("legal_basis: consent", "legal_basis: vibes"), "legal_basis", "vibes"),
        (VALID.replace("    title: Newsletter\n", "    title: Newsletter\n    colour: red\n"), "purposes", "colour"),
        ("fields: [unclosed", "(file)", "not valid YAML"),
    ],
)
def test_a_bad_policy_names_the_file_the_key_and_the_problem(
    policy_dir: Path, broken: str, key: str, problem: str
) -> None:
    path = write(policy_dir, broken)
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    assert caught.value.file == str(path)
    assert key in caught.value.key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


SECOND_VERSION = """
    - version: 2
      effective: 2027-01-01T00:00:00Z
      material: true
      texts:
        en: {title: Newsletter, text: We e-mail you daily.}
        sv: {title: Nyhetsbrev, text: Vi mejlar dig dagligen.}
        nb: {title: Nyhetsbrev, text: Vi sender deg e-post daglig.}
        et: {title: Uudiskiri, text: Saadame sulle kirju iga päev.}
"""


def test_notices_are_versioned_and_a_material_version_raises_the_floor(policy_dir: Path) -> None:
    write(policy_dir, VALID + SECOND_VERSION)
    policy = load_policy(policy_dir)
    purpose = "marketing.communications.email"
    before, after = datetime(2026, 6, 1, tzinfo=UTC), datetime(2027, 6, 1, tzinfo=UTC)
    current = policy.current_notice(purpose, before)
    assert current is not None
    assert (current.version, current.text_in("sv").title) == (1, "Nyhetsbrev")
    assert policy.reconsent_floor(purpose, before) == 1
    newest = policy.current_notice(purpose, after)
    assert newest is not None
    assert newest.version == 2
    assert policy.reconsent_floor(purpose, after) == 2
    notice = policy.notice(purpose, 2)
    assert notice is not None
    assert notice.material
    assert policy.notice(purpose, 3) is None


@pytest.mark.parametrize(
    ("broken", "key", "problem"),
    [
        (VALID.split("notices:")[0], "purposes.marketing.communications.email", "needs a notice"),
        (VALID.replace("        et: {title: Uudiskiri, text: Saadame sulle kirju.}\n", ""), "texts", "no text in et"),
        (VALID.replace("version: 1", "version: 2"), "notices.marketing.communications.email[0].version", "expected"),
        (VALID + SECOND_VERSION.replace("2027-01-01", "2025-01-01"), "[1].effective", "before the version"),
        (VALID.replace("notices:\n  marketing.communications.email", "notices:\n  marketing.nope"), "notices", "nope"),
    ],
)
def test_bad_notices_are_refused(policy_dir: Path, broken: str, key: str, problem: str) -> None:
    write(policy_dir, broken)
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    assert key in caught.value.key
    assert problem in caught.value.problem


def test_a_key_defined_in_two_files_is_refused(policy_dir: Path) -> None:
    write(policy_dir, VALID, "a.yaml")
    second = write(policy_dir, "fields:\n  email: {category: user.contact.email}\n", "b.yaml")
    with pytest.raises(PolicyError, match="already defined in") as caught:
        load_policy(policy_dir)
    assert caught.value.file == str(second)
    assert caught.value.key == "fields.email"


def test_an_empty_directory_is_refused(policy_dir: Path) -> None:
    with pytest.raises(PolicyError, match=r"no \*\.yaml policy files"):
        load_policy(policy_dir)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("P24M", datetime(2026, 1, 31, 12, tzinfo=UTC), datetime(2028, 1, 31, 12, tzinfo=UTC)),
        ("P1M", datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC)),
        ("P1Y", datetime(2028, 2, 29, tzinfo=UTC), datetime(2029, 2, 28, tzinfo=UTC)),
        ("P30D", datetime(2026, 12, 15, tzinfo=UTC), datetime(2027, 1, 14, tzinfo=UTC)),
        ("P1Y6M", datetime(2026, 8, 1, tzinfo=UTC), datetime(2028, 2, 1, tzinfo=UTC)),
    ],
)
def test_consent_lifetimes_count_calendar_months(text: str, start: datetime, end: datetime) -> None:
    assert ConsentDuration.parse(text).after(start) == end


@pytest.mark.parametrize("text", ["", "P", "24M", "P2W", "PT1H"])
def test_durations_other_than_years_months_days_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        ConsentDuration.parse(text)


CONTROLLER = """
controller:
  name: Nordvik Mode AB
  contact: Data Protection Officer
  email: dataskydd@nordvikmode.example.com
  phone: "+46 8 46 50 04 10"
  address:
    street: Exempelgatan 12
    postal_code: "111 22"
    locality: Stockholm
    country: SE
  url: https://nordvikmode.example.com/
  privacy_policy_url: https://nordvikmode.example.com/integritetspolicy
  jurisdiction: SE
"""


def test_the_shipped_policy_names_the_demo_controller() -> None:
    controller = load_policy(REPO_ROOT / "policies").controller
    assert controller is not None
    assert controller.name == "Nordvik Mode AB"
    assert controller.jurisdiction == "SE"
    assert controller.address.country == "SE"
    assert controller.email.endswith("example.com")


def test_a_policy_without_a_controller_still_loads(policy_dir: Path) -> None:
    write(policy_dir, VALID)
    assert load_policy(policy_dir).controller is None


def test_the_controller_section_loads(policy_dir: Path) -> None:
    write(policy_dir, VALID + CONTROLLER)
    controller = load_policy(policy_dir).controller
    assert controller is not None
    assert controller.phone == "+46 8 46 50 04 10"
    assert controller.address.postal_code == "111 22"
    assert controller.address.region is None
    assert controller.privacy_policy_url == "https://nordvikmode.example.com/integritetspolicy"


def test_the_controller_may_live_in_its_own_file(policy_dir: Path) -> None:
    write(policy_dir, VALID)
    write(policy_dir, CONTROLLER, "controller.yaml")
    controller = load_policy(policy_dir).controller
    assert controller is not None
    assert controller.name == "Nordvik Mode AB"


@pytest.mark.parametrize(
    ("broken", "key", "problem"),
    [
        (CONTROLLER.replace("  jurisdiction: SE\n", "  jurisdiction: SE\n  fax: '+46 8 1'\n"), "controller", "fax"),
        (CONTROLLER.replace("    country: SE\n", "    country: SE\n    planet: Earth\n"), "address", "planet"),
        (CONTROLLER.replace("  email: dataskydd@nordvikmode.example.com\n", ""), "controller", "`email`"),
        (CONTROLLER.replace("dataskydd@nordvikmode", "dataskydd-at-nordvikmode"), "controller.email", "e-mail"),
        (CONTROLLER.replace("jurisdiction: SE", "jurisdiction: Sweden"), "controller.jurisdiction", "ISO 3166 code"),
        (CONTROLLER.replace("country: SE", "country: se"), "controller.address.country", "'se' is not an ISO 3166-1"),
        (CONTROLLER.replace('"+46 8 46 50 04 10"', "08-46 50 04 10"), "controller.phone", "international form"),
        (CONTROLLER.replace('"111 22"', "11122"), "controller.address.postal_code", "Expected `str`"),
        (
            CONTROLLER.replace("https://nordvikmode.example.com/integritetspolicy", "integritetspolicy"),
            "controller.privacy_policy_url",
            "not an absolute http(s) URL",
        ),
        (
            CONTROLLER.replace("url: https://nordvikmode.example.com/\n", "url: ftp://nordvikmode.example.com/\n"),
            "controller.url",
            "not an absolute http(s) URL",
        ),
        (CONTROLLER.replace("name: Nordvik Mode AB", "name: ''"), "controller.name", "length"),
    ],
)
def test_a_bad_controller_names_the_file_the_key_and_the_problem(
    policy_dir: Path, broken: str, key: str, problem: str
) -> None:
    path = write(policy_dir, VALID + broken)
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    assert caught.value.file == str(path)
    assert key in caught.value.key
    assert problem in caught.value.problem


def test_a_controller_defined_in_two_files_is_refused(policy_dir: Path) -> None:
    first = write(policy_dir, VALID + CONTROLLER, "a.yaml")
    second = write(policy_dir, CONTROLLER, "b.yaml")
    with pytest.raises(PolicyError, match="already defined in") as caught:
        load_policy(policy_dir)
    assert caught.value.file == str(second)
    assert caught.value.key == "controller"
    assert str(first) in caught.value.problem


TRAITS = """
traits:
  style:
    type: enum
    values: [minimal, classic, street]
    category: user.demographic.profile
    description: Scored from the style quiz.
  recommended_categories:
    type: list
    values: [coats, boots]
    category: user.demographic.profile
    description: Categories to show first.
  budget_limit:
    type: number
    min: 0
    max: 1000
    category: user.demographic.profile
    description: Most the shopper wants to spend.
  motto:
    type: text
    max_length: 20
    category: user.demographic.profile
    description: A few words in the shopper's own voice.
"""


def test_the_shipped_policy_declares_the_quiz_traits() -> None:
    traits = load_policy(REPO_ROOT / "policies").traits
    assert traits["style"].values == ["minimal", "classic", "street", "outdoor"]
    assert traits["price_sensitivity"].type == "enum"
    assert traits["recommended_categories"].type == "list"
    assert all(trait.category == "user.demographic.profile" for trait in traits.values())


def test_traits_load_and_check_their_values(policy_dir: Path) -> None:
    write(policy_dir, VALID + TRAITS)
    traits = load_policy(policy_dir).traits
    style, categories = traits["style"], traits["recommended_categories"]
    limit, motto = traits["budget_limit"], traits["motto"]
    assert style.problem_with("classic") is None
    assert "not one of" in (style.problem_with("boho") or "")
    assert categories.problem_with(["coats", "boots"]) is None
    assert "not among" in (categories.problem_with(["hats"]) or "")
    assert "twice" in (categories.problem_with(["coats", "coats"]) or "")
    assert "not a list" in (categories.problem_with("coats") or "")
    assert limit.problem_with(250) is None
    assert "not between" in (limit.problem_with(1001) or "")
    assert "not a number" in (limit.problem_with(True) or "")
    assert motto.problem_with("Less but better") is None
    assert "longer than 20" in (motto.problem_with("x" * 21) or "")
    assert "non-empty text" in (motto.problem_with(" ") or "")


@pytest.mark.parametrize(
    ("broken", "key", "problem"),
    [
        (TRAITS.replace("    type: text\n", "    type: text\n    colour: red\n"), "traits", "colour"),
        (TRAITS.replace("type: text", "type: boolean"), "traits", "boolean"),
        (TRAITS.replace("  style:\n", "  Style:\n"), "$.traits (a key)", "matching regex"),
        (
            TRAITS.replace("user.demographic.profile\n    description: Scored", "user.taste\n    description: Scored"),
            "traits.style.category",
            "'user.taste' is not a fideslang data category",
        ),
        (TRAITS.replace("    values: [minimal, classic, street]\n", ""), "traits.style.values", "needs values"),
        (TRAITS.replace("    max: 1000\n", ""), "traits.budget_limit.max", "a number trait needs max"),
        (TRAITS.replace("    max: 1000\n", "    max: 0\n"), "traits.budget_limit.min", "not below max"),
        (TRAITS.replace("    max_length: 20\n", ""), "traits.motto.max_length", "needs max_length"),
        (TRAITS.replace("    max: 1000\n", "    max: 1000\n    values: [a]\n"), "budget_limit.values", "no values"),
        (TRAITS.replace("[minimal, classic, street]", "[minimal, classic, minimal]"), "traits.style.values", "twice"),
        (TRAITS.replace("description: Scored from the style quiz.", "description: ''"), "traits", "length"),
        (TRAITS.replace("  motto:\n", "  shoe_size:\n"), "traits.shoe_size", "already a profile field"),
    ],
)
def test_bad_traits_are_refused(policy_dir: Path, broken: str, key: str, problem: str) -> None:
    path = write(policy_dir, VALID + broken)
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    assert caught.value.file == str(path)
    assert key in caught.value.key
    assert problem in caught.value.problem


def test_a_trait_defined_in_two_files_is_refused(policy_dir: Path) -> None:
    write(policy_dir, VALID + TRAITS, "a.yaml")
    second = write(policy_dir, TRAITS, "b.yaml")
    with pytest.raises(PolicyError, match="already defined in") as caught:
        load_policy(policy_dir)
    assert caught.value.file == str(second)
    assert caught.value.key == "traits.style"
