"""Notices and re-consent, double opt-in, Global Privacy Control and receipts, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.consent.confirmations import CONFIRMATION_LIFETIME, issue_confirmation
from services.consent.receipts import verify_receipt
from services.consent.schemas import ConfirmConsent, Evidence
from services.consent.tests.support import KEYS, POLICY, PROFILED, SMS, consent_service, record, verify
from tillit.db import Database
from tillit.policy import Policy, PolicyError, load_policy
from tillit.problems import Conflict, NotFound, Unprocessable
from tillit.settings import REPO_ROOT

pytestmark = pytest.mark.anyio

EMAIL = "marketing.communications.email"
ADS = "marketing.advertising.third_party.targeted"


@pytest.fixture
def material_change(tmp_path: Path) -> Policy:
    """The shipped policy plus a material version 2 of the personalisation notice, in effect now."""
    directory = tmp_path / "policies"
    directory.mkdir()
    for source in (REPO_ROOT / "policies").glob("*.yaml"):
        text = source.read_text(encoding="utf-8")
        if source.name == "notices.yaml":
            marker = "  marketing.advertising.third_party.targeted:\n"
            version_2 = """    - version: 2
      effective: 2026-06-01T00:00:00Z
      material: true
      texts:
        en: {title: Personalised shop pages, text: We now also use your browsing history.}
        sv: {title: Personligt anpassade butikssidor, text: Vi använder nu även din webbhistorik.}
        nb: {title: Tilpassede butikksider, text: Vi bruker nå også nettleserhistorikken din.}
        et: {title: Isikupärastatud poeleheküljed, text: Kasutame nüüd ka sinu sirvimisajalugu.}
"""
            text = text.replace(marker, version_2 + marker, 1)
        (directory / source.name).write_text(text, encoding="utf-8")
    return load_policy(directory)


async def test_a_consent_records_the_current_notice_and_the_history_shows_its_text(database: Database) -> None:
    recorded = await record(database, "astrid", evidence=Evidence(language="sv"))
    assert recorded.event.notice_version == 1
    async with consent_service(database) as service:
        history = await service.history("astrid")
    notice = history.events[0].notice
    assert notice is not None
    assert (notice.version, notice.language, notice.title) == (1, "sv", "Personligt anpassade butikssidor")
    assert "storlekar" in notice.text


async def test_an_unpublished_notice_version_is_refused(database: Database) -> None:
    with pytest.raises(Unprocessable, match="notice version 7 of purpose"):
        await record(database, "astrid", notice_version=7)
    assert (await verify(database)).events == 0


async def test_a_material_notice_suspends_older_consents_until_consent_is_given_again(
    database: Database, material_change: Policy
) -> None:
    before = datetime(2026, 3, 1, tzinfo=UTC)
    await record(database, "astrid", notice_version=1, collected_at=before, policy=material_change)
    async with consent_service(database, material_change) as service:
        state = (await service.current("astrid")).consents[0]
        needed = await service.reconsent("astrid")
    assert (state.status, state.active, state.needs_reconsent) == ("given", False, True)
    assert [(item.purpose, item.consented_version, item.current.version) for item in needed.purposes] == [
        (PROFILED, 1, 2)
    ]
    again = await record(database, "astrid", policy=material_change)
    assert again.event.notice_version == 2
    assert (again.state.active, again.state.needs_reconsent) == (True, False)
    async with consent_service(database, material_change) as service:
        assert (await service.reconsent("astrid")).purposes == []


async def test_double_opt_in_counts_only_after_confirmation(database: Database) -> None:
    given = await record(database, "astrid", EMAIL)
    assert (given.event.action, given.state.status, given.state.active) == ("pending", "pending", False)
    assert given.receipt is None
    assert given.confirmation is not None
    async with consent_service(database) as service:
        confirmed = await service.confirm(ConfirmConsent(token=given.confirmation.token))
    assert (confirmed.event.action, confirmed.event.source) == ("confirmed", "double_opt_in")
    assert (confirmed.state.status, confirmed.state.active) == ("given", True)
    assert confirmed.receipt is not None
    async with consent_service(database) as service:
        with pytest.raises(Conflict, match="no longer applies"):
            await service.confirm(ConfirmConsent(token=given.confirmation.token))


async def test_an_import_vouches_for_its_own_double_opt_in(database: Database) -> None:
    imported = await record(database, "astrid", EMAIL, source="import")
    assert (imported.state.status, imported.state.active) == ("given", True)


async def test_a_confirmation_after_a_withdrawal_does_not_revive_the_consent(database: Database) -> None:
    given = await record(database, "astrid", EMAIL)
    await record(database, "astrid", EMAIL, action="withdraw")
    assert given.confirmation is not None
    async with consent_service(database) as service:
        with pytest.raises(Conflict):
            await service.confirm(ConfirmConsent(token=given.confirmation.token))
        assert (await service.current("astrid")).consents[0].status == "withdrawn"


async def test_expired_and_forged_confirmations_are_refused(database: Database) -> None:
    given = await record(database, "astrid", EMAIL)
    issued = datetime.now(UTC) - CONFIRMATION_LIFETIME - timedelta(minutes=1)
    old, _ = issue_confirmation(KEYS.private, "astrid", EMAIL, given.event.id, issued)
    async with consent_service(database) as service:
        with pytest.raises(Unprocessable, match="expired") as expired:
            await service.confirm(ConfirmConsent(token=old))
        assert expired.value.slug == "confirmation-expired"
        assert given.confirmation is not None
        forged = given.confirmation.token[:-4] + ("AAAA" if not given.confirmation.token.endswith("AAAA") else "BBBB")
        with pytest.raises(Unprocessable, match="not valid"):
            await service.confirm(ConfirmConsent(token=forged))
        assert (await service.current("astrid")).consents[0].status == "pending"


async def test_gpc_refuses_sale_and_sharing_and_a_later_explicit_opt_in_wins(database: Database) -> None:
    await record(database, "astrid", ADS, source="import")
    first = await record(database, "astrid", SMS, gpc=True)
    async with consent_service(database) as service:
        states = {state.purpose: state for state in (await service.current("astrid")).consents}
    assert states[ADS].status == "refused"
    assert states[SMS].status == "given"
    async with consent_service(database) as service:
        history = await service.history("astrid")
    gpc_event = next(event for event in history.events if event.source == "gpc")
    assert gpc_event.evidence.gpc is True
    assert first.event.evidence.gpc is True

    opted_in = await record(database, "astrid", ADS)
    assert opted_in.state.status == "given"
    async with consent_service(database) as service:
        outcome = await service.apply_gpc("astrid", Evidence())
        assert outcome.refused == []
        assert {s.purpose: s.status for s in (await service.current("astrid")).consents}[ADS] == "given"


async def test_gpc_on_an_explicit_opt_in_request_leaves_that_purpose_given(database: Database) -> None:
    recorded = await record(database, "astrid", ADS, gpc=True)
    assert recorded.state.status == "given"


async def test_repeated_gpc_signals_write_nothing_new(database: Database) -> None:
    async with consent_service(database) as service:
        assert len((await service.apply_gpc("astrid", Evidence())).refused) == 1
    async with consent_service(database) as service:
        assert (await service.apply_gpc("astrid", Evidence())).refused == []
    assert (await verify(database)).events == 1


async def test_given_and_withdrawn_events_come_with_a_verifiable_receipt(database: Database) -> None:
    given = await record(database, "astrid", evidence=Evidence(language="nb"))
    withdrawn = await record(database, "astrid", action="withdraw")
    refused = await record(database, "astrid", SMS, action="refuse")
    assert refused.receipt is None
    assert given.receipt is not None
    assert withdrawn.receipt is not None
    payload = verify_receipt(given.receipt, KEYS.public)
    assert payload["consentReceiptID"] == given.event.id
    assert payload["tillit:ledgerHash"] == given.event.hash
    assert payload["language"] == "nb"
    assert payload["piiPrincipalId"] == "astrid"
    assert POLICY.controller is not None
    assert payload["piiControllers"][0]["piiController"] == POLICY.controller.name
    assert verify_receipt(withdrawn.receipt, KEYS.public)["tillit:action"] == "withdrawn"
    async with consent_service(database) as service:
        again = await service.receipt("astrid", given.event.id)
        assert again.receipt == given.receipt
        with pytest.raises(NotFound):
            await service.receipt("astrid", refused.event.id)
        with pytest.raises(NotFound):
            await service.receipt("lars", given.event.id)


async def test_a_published_notice_text_cannot_change(database: Database, tmp_path: Path) -> None:
    async with consent_service(database) as service:
        await service.register_notices()
    async with consent_service(database) as service:
        await service.register_notices()
    edited = tmp_path / "edited"
    edited.mkdir()
    for source in (REPO_ROOT / "policies").glob("*.yaml"):
        text = source.read_text(encoding="utf-8")
        (edited / source.name).write_text(text.replace("About two e-mails a week", "Daily e-mails"), encoding="utf-8")
    with pytest.raises(PolicyError, match="version 1 was published with other content") as caught:
        async with consent_service(database, load_policy(edited)) as service:
            await service.register_notices()
    assert caught.value.key == "notices.marketing.communications.email[0]"
    assert caught.value.file.endswith("notices.yaml")
