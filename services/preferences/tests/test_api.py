"""The preferences API over HTTP: 400 vs 422 naming the field, history, export and erasure answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from litestar.testing import AsyncTestClient

from services.preferences.api import ProfileController, SubjectDataController
from services.preferences.app import MIGRATIONS
from services.preferences.quizzes.api import QUIZ_CONTROLLERS, load_stored_quizzes
from services.preferences.quizzes.definitions import QUIZ_DIR
from services.preferences.quizzes.service import QuizCatalogue
from tillit.app import create_app
from tillit.keys import SERVICE_TOKEN_KEY, ensure_signing_key, load_private_key, load_public_keys
from tillit.policy import load_policy
from tillit.problems import PROBLEM_MEDIA_TYPE
from tillit.service_tokens import ServiceTokenIssuer, ServiceTokenVerifier
from tillit.settings import load_settings

pytestmark = pytest.mark.anyio

PROFILE = "/v1/subjects/astrid/profile"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = load_settings("preferences", {"TILLIT_DATA_DIR": str(tmp_path)})
    ensure_signing_key(settings.keys_dir, SERVICE_TOKEN_KEY)
    verifier = ServiceTokenVerifier(load_public_keys(settings.keys_dir, SERVICE_TOKEN_KEY), audience="preferences")
    issuer = ServiceTokenIssuer(load_private_key(settings.keys_dir, SERVICE_TOKEN_KEY))
    policy = load_policy(settings.policy_dir)
    app = create_app(
        settings,
        title="preferences under test",
        description="The preferences controllers.",
        route_handlers=[ProfileController, SubjectDataController, *QUIZ_CONTROLLERS],
        migrations=MIGRATIONS,
        on_startup=[load_stored_quizzes],
        state={
            "policy": policy,
            "quizzes": QuizCatalogue.from_files(QUIZ_DIR, policy),
            "quiz_session_lifetime": timedelta(hours=72),
        },
        service_tokens=verifier,
    )
    async with AsyncTestClient(app=app) as client:
        client.headers.update(issuer.headers_for("preferences"))
        yield client


def problem(response: Any, status: int, slug: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
    assert response.json()["type"] == f"urn:tillit:problem:{slug}"
    detail: str = response.json()["detail"]
    return detail


async def test_schema_mismatches_are_400_and_refusals_422_each_naming_the_field(client: AsyncTestClient[Any]) -> None:
    unknown = await client.patch(PROFILE, json={"fields": {"shoe_sizes": 38}, "source": "import"})
    assert "shoe_sizes" in problem(unknown, 400, "validation")
    bad_size = await client.patch(PROFILE, json={"fields": {"sizes": {"dresses": 37}}, "source": "import"})
    assert "$.fields.sizes.dresses" in problem(bad_size, 400, "validation")
    lenient = await client.patch(PROFILE, json={"fields": {"sizes": {"shoes": "38"}}, "source": "import"})
    problem(lenient, 400, "validation")
    prices = {"min": 900, "max": 100, "currency": "SEK"}
    refused = await client.patch(PROFILE, json={"fields": {"price_range": prices}, "source": "import"})
    assert problem(refused, 422, "invalid-price-range").startswith("fields.price_range")
    email = await client.patch(PROFILE, json={"fields": {"email": "astrid@shop.invalid"}, "source": "import"})
    assert problem(email, 422, "invalid-email").startswith("fields.email")
    problem(await client.get(PROFILE), 404, "profile-not-found")


async def test_history_export_and_erasure_over_http(client: AsyncTestClient[Any]) -> None:
    for size in (38, 39, 40):
        body = {"fields": {"sizes": {"shoes": size}}, "source": "preference_page"}
        assert (await client.patch(PROFILE, json=body)).status_code == 200
    page = (await client.get(f"{PROFILE}/history", params={"limit": 2})).json()
    assert ([c["new_value"]["shoes"] for c in page["changes"]], page["more"]) == ([40, 39], True)
    problem(await client.get(f"{PROFILE}/history", params={"limit": 201}), 400, "validation")
    export = (await client.get("/v1/subjects/astrid/export")).json()
    assert export["sections"]["profile"]["fields"] == {"sizes": {"shoes": 40}}
    assert len(export["sections"]["profile_history"]) == 3
    erased = await client.delete("/v1/subjects/astrid")
    assert erased.status_code == 200
    assert erased.json()["rows_erased"] == {
        "quiz_session": 0,
        "profile_change": 3,
        "profile_value": 1,
        "profile_subject": 1,
    }
    again = await client.delete("/v1/subjects/astrid")
    assert (again.status_code, set(again.json()["rows_erased"].values())) == (200, {0})
    empty = (await client.get("/v1/subjects/astrid/export")).json()["sections"]
    assert empty == {"profile": {"fields": {}, "provenance": {}}, "profile_history": [], "quiz_sessions": []}


async def test_every_endpoint_needs_the_gateway_token(client: AsyncTestClient[Any]) -> None:
    del client.headers["Authorization"]
    for method, path in (("GET", PROFILE), ("GET", "/v1/subjects/astrid/export"), ("DELETE", "/v1/subjects/astrid")):
        problem(await client.request(method, path), 401, "unauthorized")


async def test_the_quiz_catalogue_lists_serves_and_takes_new_versions(client: AsyncTestClient[Any]) -> None:
    listed = (await client.get("/v1/quizzes")).json()["quizzes"]
    assert [(quiz["id"], quiz["version"]) for quiz in listed] == [("gift-finder", 1), ("style", 1)]
    assert set(listed[1]["title"]) == {"en", "sv", "nb", "et"}
    style = (await client.get("/v1/quizzes/style")).json()
    assert (style["id"], style["version"], style["start"]) == ("style", 1, "department")
    problem(await client.get("/v1/quizzes/style", params={"version": 2}), 404, "quiz-version-not-found")
    problem(await client.get("/v1/quizzes/horoscope"), 404, "quiz-not-found")
    definition = yaml.safe_load((QUIZ_DIR / "style.yaml").read_text(encoding="utf-8"))
    problem(await client.post("/v1/quizzes", json=definition), 409, "quiz-version-exists")
    broken = {**definition, "version": 2, "start": "nowhere"}
    assert "start 'nowhere'" in problem(await client.post("/v1/quizzes", json=broken), 422, "invalid-quiz")
    unknown_trait = {**definition, "version": 2}
    unknown_trait["questions"] = [dict(q) for q in definition["questions"]]
    unknown_trait["questions"][0]["options"] = [
        {**option, "effects": [{"set": "horoscope", "to": "leo"}]} for option in definition["questions"][0]["options"]
    ]
    refused = await client.post("/v1/quizzes", json=unknown_trait)
    assert "question department" in problem(refused, 422, "invalid-quiz")
    assert refused.json()["errors"][0]["question"] == "department"
    added = await client.post("/v1/quizzes", json={**definition, "version": 2})
    assert added.status_code == 201, added.text
    assert (await client.get("/v1/quizzes/style")).json()["version"] == 2
    assert (await client.get("/v1/quizzes/style", params={"version": 1})).json()["version"] == 1
    problem(await client.post("/v1/quizzes", json={**definition, "version": 2}), 409, "quiz-version-exists")


async def test_a_quiz_session_over_http_ends_in_the_profile(client: AsyncTestClient[Any]) -> None:
    started = await client.post("/v1/subjects/astrid/quiz-sessions", json={"quiz_id": "style", "locale": "et"})
    assert started.status_code == 201, started.text
    session = started.json()
    assert (session["status"], session["current_question"]["id"]) == ("in_progress", "department")
    answers = f"/v1/quiz-sessions/{session['id']}/answers"
    wrong = await client.post(answers, json={"question_id": "everyday", "answer": "clean"})
    assert "'department'" in problem(wrong, 409, "not-the-current-question")
    bad = await client.post(answers, json={"question_id": "department", "answer": "aliens"})
    assert "'aliens'" in problem(bad, 422, "invalid-answer")
    steps = [("department", "mens"), ("everyday", "graphic"), ("weekend", "concert"), ("colours", ["monochrome"])]
    steps += [("fit", 5), ("budget", "deals"), ("deal_picks", ["outlet"])]
    for question, answer in steps:
        response = await client.post(answers, json={"question_id": question, "answer": answer})
        assert response.status_code == 200, response.text
    assert response.json()["current_question"] is None
    back = await client.post(f"/v1/quiz-sessions/{session['id']}/back")
    assert back.json()["current_question"]["id"] == "deal_picks", back.text
    response = await client.post(answers, json={"question_id": "deal_picks", "answer": ["outlet"]})
    assert response.status_code == 200, response.text
    completed = await client.post(f"/v1/quiz-sessions/{session['id']}/complete")
    assert completed.status_code == 200, completed.text
    assert completed.json()["traits"]["style"] == "street"
    again = await client.post(answers, json={"question_id": "deal_picks", "answer": ["outlet"]})
    problem(again, 409, "quiz-session-completed")
    profile = (await client.get(PROFILE)).json()
    assert profile["fields"]["style"] == "street"
    assert profile["provenance"]["style"]["source"].startswith("quiz:style.v1.")
    problem(await client.get("/v1/quiz-sessions/7b0a3c53-3f59-4d55-9d7c-2b0a4e1f1a11"), 404, "quiz-session-not-found")
    unknown = await client.post(
        "/v1/subjects/astrid/quiz-sessions", json={"quiz_id": "style", "locale": "en", "version": 9}
    )
    assert "no version 9" in problem(unknown, 422, "quiz-version-not-found")
    traits_by_patch = await client.patch(PROFILE, json={"fields": {"style": "classic"}, "source": "import"})
    problem(traits_by_patch, 400, "validation")
    analytics = (await client.get("/v1/quizzes/style/analytics")).json()
    assert analytics["versions"][0]["starts"] == 1
    assert analytics["versions"][0]["completion_rate"] == 1.0
    export = (await client.get("/v1/subjects/astrid/export")).json()
    assert [s["id"] for s in export["sections"]["quiz_sessions"]] == [session["id"]]
    alone = (await client.get("/v1/subjects/astrid/quiz-sessions")).json()
    assert alone == {"sessions": export["sections"]["quiz_sessions"]}
    assert (await client.get("/v1/subjects/nobody/quiz-sessions")).json() == {"sessions": []}
