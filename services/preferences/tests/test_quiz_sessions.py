"""Quiz sessions: answering, going back, completing into the profile, expiry, races, analytics, export, erasure."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from services.preferences.quizzes.definitions import QUIZ_DIR
from services.preferences.quizzes.purge import PURGE_GRACE, purge_once
from services.preferences.quizzes.repository import QuizRepository
from services.preferences.quizzes.schemas import AnswerIn, SessionOut, StartSession
from services.preferences.quizzes.service import Gone, QuizCatalogue, QuizService, quiz_source
from services.preferences.repository import ProfileRepository
from services.preferences.schemas import SourceName
from services.preferences.service import ProfileService
from services.preferences.tests.support import patch, profile_service, subject_rows
from tillit.db import Database
from tillit.policy import load_policy
from tillit.problems import Conflict, NotFound, Unprocessable
from tillit.settings import REPO_ROOT

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LIFETIME = timedelta(hours=72)
POLICY = load_policy(REPO_ROOT / "policies")
WOMENS_MINIMAL: list[tuple[str, Any]] = [
    ("department", "womens"),
    ("everyday", "clean"),
    ("weekend", "city"),
    ("colours", ["neutrals"]),
    ("fit", 2),
    ("budget", "invest"),
    ("investment", "coat"),
]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def catalogue() -> QuizCatalogue:
    return QuizCatalogue.from_files(QUIZ_DIR, POLICY)


@asynccontextmanager
async def quiz_service(
    database: Database, catalogue: QuizCatalogue, clock: Clock, repository: type[QuizRepository] = QuizRepository
) -> AsyncIterator[QuizService]:
    """A service on one transaction that commits when the block ends, as a request's does."""
    async with database.sessionmaker() as session, session.begin():
        profiles = ProfileService(ProfileRepository(session), clock=clock)
        yield QuizService(repository(session), profiles, catalogue, LIFETIME, clock=clock)


Work = Callable[[QuizService], Awaitable[Any]]


class Harness:
    def __init__(self, database: Database, catalogue: QuizCatalogue, clock: Clock) -> None:
        self.database, self.catalogue, self.clock = database, catalogue, clock

    async def run(self, work: Work) -> Any:
        async with quiz_service(self.database, self.catalogue, self.clock) as service:
            return await work(service)

    async def start(self, subject: str = "astrid", quiz: str = "style", locale: str = "sv") -> SessionOut:
        data = StartSession(quiz_id=quiz, locale=locale)  # type: ignore[arg-type]
        return await self.run(lambda service: service.start(subject, data))

    async def answer(self, session_id: str, question: str, answer: Any) -> SessionOut:
        return await self.run(lambda service: service.answer(session_id, AnswerIn(question, answer)))

    async def back(self, session_id: str) -> SessionOut:
        return await self.run(lambda service: service.back(session_id))

    async def complete(self, session_id: str) -> SessionOut:
        return await self.run(lambda service: service.complete(session_id))

    async def finish(self, subject: str, answers: list[tuple[str, Any]], *, complete: bool = True) -> SessionOut:
        session = await self.start(subject)
        for question, answer in answers:
            session = await self.answer(session.id, question, answer)
        return await self.complete(session.id) if complete else session


@pytest.fixture
def quiz(database: Database, catalogue: QuizCatalogue, clock: Clock) -> Harness:
    return Harness(database, catalogue, clock)


async def test_a_session_runs_through_the_style_quiz_into_the_profile_with_provenance(quiz: Harness) -> None:
    session = await quiz.start()
    assert (session.status, session.version, session.current_question and session.current_question.id) == (
        "in_progress",
        1,
        "department",
    )
    assert session.current_question is not None
    assert (
        session.current_question.text
        == QuizCatalogue.from_files(QUIZ_DIR, POLICY).quizzes[("style", 1)].questions[0].text["sv"]
    )
    assert session.progress.answered == 0
    assert session.expires_at == T0 + LIFETIME
    for number, (question, answer) in enumerate(WOMENS_MINIMAL, start=1):
        assert session.current_question is not None
        assert session.current_question.id == question
        session = await quiz.answer(session.id, question, answer)
        assert session.progress.answered == number
    assert session.current_question is None
    resumed = await quiz.run(lambda service: service.get(session.id))
    assert resumed.answers == dict(WOMENS_MINIMAL)
    done = await quiz.complete(session.id)
    assert done.status == "completed"
    assert done.traits is not None
    assert done.traits["style"] == "minimal"
    async with profile_service(quiz.database) as profiles:
        profile = await profiles.get("astrid")
        history = await profiles.history("astrid", 50)
    source = quiz_source("style", 1, session.id)
    assert profile.fields["style"] == "minimal"
    assert profile.fields["recommended_categories"] == ["knitwear", "trousers", "coats"]
    assert {name: p.source for name, p in profile.provenance.items()} == dict.fromkeys(done.traits, source)
    assert {change.field for change in history.changes} == set(done.traits)
    assert {change.source for change in history.changes} == {source}


async def test_the_source_fits_the_profile_source_pattern() -> None:
    pattern = SourceName.__metadata__[0].pattern
    source = quiz_source("gift-finder", 1_000_000, "7b0a3c53-3f59-4d55-9d7c-2b0a4e1f1a11")
    assert re.match(pattern, source)
    assert len(source) <= 80


async def test_only_the_current_question_may_be_answered(quiz: Harness) -> None:
    session = await quiz.start()
    with pytest.raises(Conflict, match="'department', not 'everyday'"):
        await quiz.answer(session.id, "everyday", "clean")


async def test_an_answer_that_does_not_fit_is_refused_and_nothing_is_written(quiz: Harness) -> None:
    session = await quiz.start()
    session = await quiz.answer(session.id, "department", "womens")
    session = await quiz.answer(session.id, "everyday", "clean")
    session = await quiz.answer(session.id, "weekend", "city")
    for answer, problem in ((["neutrals", "navy", "earth"], "choose 1 to 2"), (["plaid"], "'plaid'"), ("navy", "list")):
        with pytest.raises(Unprocessable, match=problem) as raised:
            await quiz.answer(session.id, "colours", answer)
        assert raised.value.slug == "invalid-answer"
    again = await quiz.run(lambda service: service.get(session.id))
    assert again.answers == session.answers
    assert again.updated_at == session.updated_at
    analytics = await quiz.run(lambda service: service.analytics("style", 1))
    assert "colours" not in analytics.versions[0].answers


async def test_going_back_shows_the_answer_and_answering_again_changes_the_path(quiz: Harness) -> None:
    session = await quiz.start()
    for question, answer in WOMENS_MINIMAL[:3]:
        session = await quiz.answer(session.id, question, answer)
    assert session.current_question is not None
    assert session.current_question.id == "colours"
    session = await quiz.back(session.id)
    session = await quiz.back(session.id)
    assert session.current_question is not None
    assert session.current_question.id == "everyday"
    assert session.previous_answer == "clean"
    assert session.progress.answered == 1
    session = await quiz.answer(session.id, "everyday", "technical")
    assert session.current_question is not None
    assert session.current_question.id == "weekend"
    assert session.answers == {"department": "womens", "everyday": "technical"}
    session = await quiz.answer(session.id, "weekend", "city")
    assert session.current_question is not None
    assert session.current_question.id == "weather"
    first = await quiz.back(session.id)
    first = await quiz.back(first.id)
    first = await quiz.back(first.id)
    assert first.current_question is not None
    assert first.current_question.id == "department"
    with pytest.raises(Conflict, match="first question"):
        await quiz.back(first.id)


async def test_a_completed_session_takes_no_more_answers(quiz: Harness) -> None:
    done = await quiz.finish("astrid", WOMENS_MINIMAL)
    with pytest.raises(Conflict, match="already completed"):
        await quiz.answer(done.id, "investment", "coat")
    with pytest.raises(Conflict, match="already completed"):
        await quiz.complete(done.id)


async def test_an_unfinished_session_cannot_be_completed(quiz: Harness) -> None:
    session = await quiz.start()
    with pytest.raises(Conflict, match="current question is 'department'"):
        await quiz.complete(session.id)


async def test_an_unknown_quiz_or_version_is_named(quiz: Harness) -> None:
    with pytest.raises(Unprocessable, match="no quiz 'horoscope'"):
        await quiz.start(quiz="horoscope")
    data = StartSession(quiz_id="style", locale="en", version=7)
    with pytest.raises(Unprocessable, match="'style' has no version 7"):
        await quiz.run(lambda service: service.start("astrid", data))


async def test_an_abandoned_session_expires(quiz: Harness, clock: Clock) -> None:
    session = await quiz.start()
    clock.now = T0 + timedelta(hours=71)
    session = await quiz.answer(session.id, "department", "womens")
    assert session.expires_at == clock.now + LIFETIME
    clock.now += LIFETIME
    with pytest.raises(Gone, match="expired"):
        await quiz.answer(session.id, "everyday", "clean")
    with pytest.raises(Gone):
        await quiz.run(lambda service: service.get(session.id))


async def test_abandoned_sessions_are_purged_after_the_grace_and_finished_ones_stay(
    quiz: Harness, clock: Clock, database: Database
) -> None:
    abandoned = await quiz.start("astrid")
    finished = await quiz.finish("birgit", WOMENS_MINIMAL)
    clock.now = T0 + LIFETIME + PURGE_GRACE - timedelta(seconds=1)
    assert await purge_once(database, clock) == 0
    with pytest.raises(Gone):
        await quiz.run(lambda service: service.get(abandoned.id))

    clock.now += timedelta(seconds=2)
    late = await quiz.start("carin")
    assert await purge_once(database, clock, batch=1) == 1
    with pytest.raises(NotFound):
        await quiz.run(lambda service: service.get(abandoned.id))
    assert (await quiz.run(lambda service: service.get(finished.id))).status == "completed"
    assert (await quiz.run(lambda service: service.get(late.id))).status == "in_progress"
    analytics = await quiz.run(lambda service: service.analytics("style"))
    assert analytics.versions[0].starts == 3


async def test_of_two_simultaneous_answers_exactly_one_wins(quiz: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    session = await quiz.start()
    barrier = asyncio.Barrier(2)

    def after_both_read(original: Any) -> Any:
        async def write(self: QuizRepository, *args: Any, **kwargs: Any) -> bool:
            await barrier.wait()
            return bool(await original(self, *args, **kwargs))

        return write

    # Both ways an answer is written: in a transaction, and as one statement (PostgreSQL).
    for name in ("update_if_unchanged", "answer_if_unchanged"):
        monkeypatch.setattr(QuizRepository, name, after_both_read(getattr(QuizRepository, name)))
    results = await asyncio.gather(
        quiz.answer(session.id, "department", "womens"),
        quiz.answer(session.id, "department", "mens"),
        return_exceptions=True,
    )
    monkeypatch.undo()
    winners = [result for result in results if isinstance(result, SessionOut)]
    losers = [result for result in results if isinstance(result, Conflict)]
    assert (len(winners), len(losers)) == (1, 1), results
    held = await quiz.run(lambda service: service.get(session.id))
    assert held.answers == winners[0].answers
    analytics = (await quiz.run(lambda service: service.analytics("style", 1))).versions[0]
    assert analytics.answers["department"] == {held.answers["department"]: 1}


async def test_analytics_count_starts_completions_drop_off_and_answers(quiz: Harness) -> None:
    await quiz.finish("astrid", WOMENS_MINIMAL)
    await quiz.finish("lars", [("department", "mens"), ("everyday", "graphic"), *WOMENS_MINIMAL[2:]])
    await quiz.finish("maja", WOMENS_MINIMAL[:3], complete=False)
    await quiz.start("nils")
    backed = await quiz.finish("olga", WOMENS_MINIMAL[:2], complete=False)
    await quiz.back(backed.id)
    await quiz.answer(backed.id, "everyday", "tailored")
    analytics = await quiz.run(lambda service: service.analytics("style"))
    assert [v.version for v in analytics.versions] == [1]
    version = analytics.versions[0]
    assert (version.starts, version.completions, version.completion_rate) == (5, 2, 0.4)
    assert version.drop_off == {"everyday": 1, "weekend": 1}
    assert version.answers["department"] == {"mens": 1, "womens": 3}
    assert version.answers["everyday"] == {"clean": 2, "graphic": 1, "tailored": 1}
    assert version.answers["fit"] == {"1..2": 2}
    assert version.answers["colours"] == {"neutrals": 2}
    assert "astrid" not in msgspec.json.encode(analytics).decode()


async def test_the_export_holds_the_sessions_and_erasure_leaves_no_row(quiz: Harness) -> None:
    await patch(quiz.database, "astrid", {"email": "astrid@example.com"})
    done = await quiz.finish("astrid", WOMENS_MINIMAL)
    open_one = await quiz.finish("astrid", WOMENS_MINIMAL[:2], complete=False)
    await quiz.finish("lars", WOMENS_MINIMAL[:1], complete=False)
    async with profile_service(quiz.database) as profiles:
        export = await profiles.export("astrid")
    sessions = {record.id: record for record in export.sections.quiz_sessions}
    assert set(sessions) == {done.id, open_one.id}
    assert sessions[done.id].answers == dict(WOMENS_MINIMAL)
    assert sessions[done.id].traits == done.traits
    assert sessions[open_one.id].status == "in_progress"
    async with profile_service(quiz.database) as profiles:
        erased = await profiles.erase("astrid")
    assert erased.rows_erased["quiz_session"] == 2
    assert set((await subject_rows(quiz.database, "astrid")).values()) == {0}
    assert (await subject_rows(quiz.database, "lars"))["quiz_session"] == 1
    analytics = (await quiz.run(lambda service: service.analytics("style", 1))).versions[0]
    assert (analytics.starts, analytics.completions) == (3, 1)
