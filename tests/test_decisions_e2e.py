"""Personalization decisions end to end on real processes (SQLite and PostgreSQL).

The web channel asks the gateway for a decision; the shopper withdraws the consent behind the
field a segment reads; the very next decision no longer matches the segment, shows another variant
and other products — because the field never reaches the rules service.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import msgspec
import pytest
from sqlalchemy import inspect, text

from tests.platform import RunningPlatform
from tests.test_release_e2e import ASTRID, assert_problem
from tillit.db import Database

pytestmark = pytest.mark.slow

PROFILED = "personalize.content.profiled"


def product(id: str, brand: str, category: str, *, on_sale: bool = False) -> dict[str, Any]:
    return {"id": id, "brand": brand, "category": category, "department": "womens", "price": 999.0, "on_sale": on_sale}


CANDIDATES = [
    product("coat-1", "Arket", "coats"),
    product("jeans-1", "Hope", "jeans"),
    product("jeans-2", "Nudie Jeans", "jeans", on_sale=True),
    product("boots-1", "Hope", "boots"),
]


def define(stack: RunningPlatform, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{stack.url('rules')}/v1/definitions", json=body, headers=stack.service_headers("rules"))
    assert response.status_code == 201, response.text
    return response.json()


def decide(stack: RunningPlatform, subject: str, body: dict[str, Any], **params: Any) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway}/v1/subjects/{subject}/decisions",
        params={"purpose": PROFILED, **params},
        json=body,
        headers=stack.auth("web"),
    )


def jeans_definitions(stack: RunningPlatform) -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    segment, rule, slot = f"jeans-{tag}", f"only-jeans-{tag}", f"e2e{tag}.hero"
    common = {"purpose": PROFILED}
    define(
        stack,
        {
            **common,
            "kind": "segment",
            "key": segment,
            "title": "Interested in jeans",
            "when": {"field": "profile.favourite_categories", "op": "contains", "value": "jeans"},
        },
    )
    define(
        stack,
        {
            **common,
            "kind": "rule",
            "key": rule,
            "title": "Only jeans for jeans lovers",
            "action": "filter",
            "priority": 500,
            "when": {"segment": segment},
            "match": {"field": "product.category", "op": "ne", "value": "jeans"},
        },
    )
    define(
        stack,
        {
            **common,
            "kind": "slot",
            "key": slot,
            "title": "Hero",
            "default": "editorial",
            "variants": [{"key": "denim", "when": {"segment": segment}}],
        },
    )
    return segment, rule, slot


def test_withdrawing_consent_changes_the_decision(stack: RunningPlatform) -> None:
    segment, rule, slot = jeans_definitions(stack)
    subject = stack.new_shopper({**ASTRID, "favourite_categories": ["jeans"]}, consents=((PROFILED, "give"),))
    body = {"context": {"page": "home", "visit_count": 4}, "slots": [slot], "candidates": CANDIDATES}

    before = decide(stack, subject, body)
    assert before.status_code == 200, before.text
    decided = before.json()
    assert segment in decided["segments"]
    assert decided["variants"] == {slot: "denim"}
    assert decided["products"] == ["jeans-1", "jeans-2"]
    assert any(r["rule"] == f"rule:{rule}@1" and "hid 2 products" in r["explanation"] for r in decided["reasons"])
    assert "favourite_categories" not in before.text  # the decision, never the profile

    withdrawn = httpx.post(
        f"{stack.gateway}/v1/subjects/{subject}/consents",
        json={"purpose": PROFILED, "action": "withdraw"},
        headers=stack.auth("web"),
    )
    assert withdrawn.status_code == 201, withdrawn.text

    after = decide(stack, subject, body).json()
    assert segment not in after["segments"]
    assert after["variants"] == {slot: "editorial"}
    assert sorted(after["products"]) == sorted(p["id"] for p in CANDIDATES)
    assert not any(r["rule"] == f"rule:{rule}@1" for r in after["reasons"])

    audit = httpx.get(
        f"{stack.gateway}/v1/audit/releases", params={"subject_id": subject}, headers=_auditor(stack)
    ).json()["items"]
    assert [entry["release_id"] for entry in audit] == [decided["release_id"], after["release_id"]]
    assert "favourite_categories" in audit[0]["released"]
    assert audit[1]["released"] == []


def test_ab_assignment_is_stable_per_shopper_and_counted_as_aggregates(stack: RunningPlatform) -> None:
    tag = uuid.uuid4().hex[:8]
    slot, experiment = f"ab{tag}.banner", f"banner-{tag}"
    define(
        stack,
        {
            "kind": "slot",
            "key": slot,
            "title": "Banner test",
            "purpose": PROFILED,
            "default": "control",
            "experiment": {"key": experiment, "holdout_percent": 10, "arms": {"control": 1, "bold": 1}},
        },
    )
    shoppers = [stack.new_shopper(ASTRID, consents=((PROFILED, "give"),)) for _ in range(6)]
    first = {s: decide(stack, s, {"slots": [slot], "candidates": []}).json()["variants"][slot] for s in shoppers}
    again = {s: decide(stack, s, {"slots": [slot], "candidates": []}).json()["variants"][slot] for s in shoppers}
    assert first == again
    assert set(first.values()) <= {"control", "bold"}

    deadline = time.monotonic() + 10
    while True:
        counts = httpx.get(
            f"{stack.url('rules')}/v1/experiments/{experiment}/exposures", headers=stack.service_headers("rules")
        ).json()
        if sum(row["count"] for row in counts) == 12 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sum(row["count"] for row in counts) == 12
    assert all(set(row) == {"experiment", "arm", "day", "count"} for row in counts)
    assert not any(s in str(counts) for s in shoppers)


def test_the_rules_service_keeps_no_subject_and_no_profile(stack: RunningPlatform) -> None:
    """After decisions, every row of every rules table holds definitions and counts only."""
    _, _, slot = jeans_definitions(stack)
    marker = f"Marker{uuid.uuid4().hex[:10]}"
    subject = stack.new_shopper(
        {**ASTRID, "favourite_brands": [marker], "favourite_categories": ["jeans"]}, consents=((PROFILED, "give"),)
    )
    assert decide(stack, subject, {"slots": [slot, "home.hero"], "candidates": CANDIDATES}).status_code == 200
    httpx.get(f"{stack.url('rules')}/v1/experiments/hero-quiz-promo/exposures", headers=stack.service_headers("rules"))
    stored = asyncio.run(_rules_rows(stack))
    assert "definition" in stored
    assert "exposure" in stored
    assert subject not in stored
    assert marker not in stored


async def _rules_rows(stack: RunningPlatform) -> str:
    settings = stack.platform.settings["rules"]
    database = Database(settings.database_url, settings.database_schema)
    try:
        async with database.engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            dump = []
            for table in tables:
                query = text(f'SELECT * FROM "{table}"')  # noqa: S608 - names from the catalogue
                rows = (await connection.execute(query)).all()
                dump.append(f"{table}: {rows!r}")
            return "\n".join(dump)
    finally:
        await database.dispose()


def test_bad_decision_requests_are_refused(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(ASTRID, consents=((PROFILED, "give"),))
    too_many = {"candidates": [product(f"p{n}", "Hope", "jeans") for n in range(501)]}
    assert_problem(decide(stack, subject, too_many), 400, "validation")
    assert_problem(decide(stack, subject, {"context": {"weather": "rain"}}), 400, "validation")
    assert_problem(decide(stack, subject, {"candidates": [{"id": "x"}]}), 400, "validation")
    bad_id = {"candidates": [product("p1", "Hope", "jeans"), product("p 2", "Hope", "jeans")]}
    assert assert_problem(decide(stack, subject, bad_id), 400, "validation")["detail"].endswith("`$.candidates[1].id`")
    slots = {"context": {"slots": [f"s{n}" for n in range(10)]}, "slots": ["extra"]}
    assert_problem(decide(stack, subject, slots), 422, "too-many-slots")
    plain = httpx.post(
        f"{stack.gateway}/v1/subjects/{subject}/decisions",
        params={"purpose": PROFILED},
        content=b"{}",
        headers={**stack.auth("web"), "content-type": "text/plain"},
    )
    assert plain.status_code == 415


def test_the_candidates_ranked_are_those_the_gateway_checked(stack: RunningPlatform) -> None:
    """The gateway forwards the candidates' bytes as sent: the same list its decoder kept (the last of
    a repeated key), never another part of the body."""
    subject = stack.new_shopper(ASTRID, consents=((PROFILED, "give"),))
    first = msgspec.json.encode([product("first-1", "Hope", "jeans")])
    second = msgspec.json.encode([product("second-1", "Arket", "coats"), product("second-2", "Hope", "jeans")])
    response = httpx.post(
        f"{stack.gateway}/v1/subjects/{subject}/decisions",
        params={"purpose": PROFILED},
        content=b'{"candidates": ' + first + b', "limit": 5, "candidates": ' + second + b"}",
        headers={**stack.auth("web"), "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert sorted(response.json()["products"]) == ["second-1", "second-2"]


def test_a_restarted_rules_service_gets_the_candidate_list_again(stack: RunningPlatform) -> None:
    """After the first decision the gateway names the list by its SHA-256 alone; a restarted rules
    service holds no table for it and leaves that decision to POST /v1/decide, where the gateway
    sends the list once more: the caller sees the same decision."""
    segment, _, slot = jeans_definitions(stack)
    subject = stack.new_shopper({**ASTRID, "favourite_categories": ["jeans"]}, consents=((PROFILED, "give"),))
    tag = uuid.uuid4().hex[:8]
    listed = [{**item, "id": f"{item['id']}-{tag}"} for item in CANDIDATES]
    body = {"context": {"page": "home"}, "slots": [slot], "candidates": listed}

    def decided() -> dict[str, Any]:
        response = decide(stack, subject, body)
        assert response.status_code == 200, response.text
        answer = dict(response.json())
        del answer["release_id"]
        return answer

    expected = decided()
    assert segment in expected["segments"]
    assert expected["products"] == [f"jeans-1-{tag}", f"jeans-2-{tag}"]
    assert "candidates_held" not in expected
    assert decided() == expected  # the digest alone
    stack.restart("rules")
    assert decided() == expected  # not held: the list again
    assert decided() == expected


def _auditor(stack: RunningPlatform) -> dict[str, str]:
    if "auditor" not in stack.channels:
        stack.add_channel("email", ["audit:read"], name="auditor")
    return stack.auth("auditor")
