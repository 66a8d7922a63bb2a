"""The quiz catalogue, quiz sessions (start, answer, back, complete) and their anonymous analytics."""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import msgspec
from sqlalchemy.exc import IntegrityError

from services.preferences.quizzes.definitions import (
    END,
    Answer,
    AnswerError,
    Question,
    Quiz,
    QuizError,
    answered_path,
    derive_traits,
    load_quizzes,
    next_question,
    validate_answer,
    validate_quiz,
)
from services.preferences.quizzes.models import QuizDefinitionRow, QuizSession
from services.preferences.quizzes.repository import CounterKey, QuizRepository, SessionRow, counter_shard
from services.preferences.quizzes.schemas import (
    AnswerIn,
    ImageOut,
    OptionOut,
    Progress,
    QuestionOut,
    QuizAnalytics,
    QuizList,
    QuizSummary,
    SessionOut,
    StartSession,
    VersionAnalytics,
)
from services.preferences.service import ProfileService
from tillit.policy import Policy
from tillit.problems import Conflict, NotFound, TillitError, Unprocessable
from tillit.types import as_utc, utcnow

__all__ = [
    "DEFAULT_SESSION_HOURS",
    "MAX_QUIZ_ID_LENGTH",
    "Gone",
    "QuizCatalogue",
    "QuizService",
    "quiz_source",
    "session_lifetime",
]

DEFAULT_SESSION_HOURS: Final = 72.0
MAX_QUIZ_ID_LENGTH: Final = 22
"""So ``quiz:<id>.v<version>.<session>`` fits the 64 characters the profile's source pattern allows."""
IN_PROGRESS: Final = "in_progress"
COMPLETED: Final = "completed"


class Gone(TillitError):
    status_code = 410
    slug = "quiz-session-expired"
    title = "Gone"


def session_lifetime(environ: Mapping[str, str] = os.environ) -> timedelta:
    """``TILLIT_QUIZ_SESSION_HOURS`` (default 72): how long an untouched session stays open."""
    raw = environ.get("TILLIT_QUIZ_SESSION_HOURS", "")
    try:
        hours = float(raw) if raw.strip() else DEFAULT_SESSION_HOURS
    except ValueError:
        raise RuntimeError(f"TILLIT_QUIZ_SESSION_HOURS is not a number of hours: {raw!r}") from None
    if not 0 < hours <= 24 * 365:
        raise RuntimeError(f"TILLIT_QUIZ_SESSION_HOURS must lie in (0, 8760], not {raw!r}")
    return timedelta(hours=hours)


def quiz_source(quiz_id: str, version: int, session_id: str) -> str:
    """The provenance of a quiz-derived value, within the profile's source pattern."""
    return f"quiz:{quiz_id}.v{version}.{uuid.UUID(session_id).hex}"


class QuizCatalogue:
    """The quizzes of this process: the YAML files, and those added through the API as they are met."""

    def __init__(self, policy: Policy, quizzes: Mapping[tuple[str, int], Quiz] | None = None) -> None:
        self.policy = policy
        self.quizzes: dict[tuple[str, int], Quiz] = {}
        for quiz in (quizzes or {}).values():
            self.add(quiz, "(code)")

    @classmethod
    def from_files(cls, directory: Path, policy: Policy) -> QuizCatalogue:
        """Load and validate the quiz files; a bad quiz raises ``QuizError`` (start-up stops)."""
        return cls(policy, load_quizzes(directory, policy))

    def add(self, quiz: Quiz, file: str) -> None:
        if len(quiz.id) > MAX_QUIZ_ID_LENGTH:
            raise QuizError(file, f"{quiz.id} v{quiz.version}", None, f"id longer than {MAX_QUIZ_ID_LENGTH} characters")
        self.quizzes[quiz.key] = quiz

    async def refresh(self, repository: QuizRepository, quiz_id: str | None = None) -> None:
        """Take in quizzes other processes stored since (each validated against today's policy)."""
        for key in await repository.definition_keys(quiz_id):
            if key not in self.quizzes:
                row = await repository.definition(*key)
                if row is not None:
                    self.add(validate_quiz(row.definition, self.policy, file="quiz_definition"), "quiz_definition")

    def versions(self, quiz_id: str) -> list[int]:
        return sorted(version for qid, version in self.quizzes if qid == quiz_id)


class QuizService:
    def __init__(
        self,
        repository: QuizRepository,
        profiles: ProfileService,
        catalogue: QuizCatalogue,
        lifetime: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repository = repository
        self.profiles = profiles
        self.catalogue = catalogue
        self.lifetime = lifetime
        self.clock = clock

    async def list_quizzes(self) -> QuizList:
        await self.catalogue.refresh(self.repository)
        return QuizList(
            quizzes=[
                QuizSummary(id=quiz.id, version=quiz.version, title=dict(quiz.title))
                for _, quiz in sorted(self.catalogue.quizzes.items())
            ]
        )

    async def quiz(self, quiz_id: str, version: int | None = None, error: type[TillitError] = NotFound) -> Quiz:
        """The quiz version asked for (the latest without one); ``error`` naming what is unknown."""
        if version is None or (quiz_id, version) not in self.catalogue.quizzes:
            await self.catalogue.refresh(self.repository, quiz_id)
        versions = self.catalogue.versions(quiz_id)
        if not versions:
            raise error(f"there is no quiz {quiz_id!r}", slug="quiz-not-found")
        if version is None:
            version = versions[-1]
        quiz = self.catalogue.quizzes.get((quiz_id, version))
        if quiz is None:
            known = ", ".join(map(str, versions))
            raise error(f"quiz {quiz_id!r} has no version {version} (it has {known})", slug="quiz-version-not-found")
        return quiz

    async def add_quiz(self, definition: Mapping[str, Any] | Quiz) -> Quiz:
        """Validate and store a merchandiser's quiz; an id and version already defined is a 409."""
        try:
            quiz = validate_quiz(definition, self.catalogue.policy)
            if len(quiz.id) > MAX_QUIZ_ID_LENGTH:
                raise QuizError("(request)", f"{quiz.id} v{quiz.version}", None, f"id longer than {MAX_QUIZ_ID_LENGTH}")
        except QuizError as exc:
            errors = [{"quiz": exc.quiz, "question": exc.question, "message": exc.problem}]
            raise Unprocessable(str(exc).removeprefix("(request): "), slug="invalid-quiz", errors=errors) from exc
        await self.catalogue.refresh(self.repository, quiz.id)
        if quiz.key in self.catalogue.quizzes:
            raise Conflict(f"quiz {quiz.id!r} version {quiz.version} is already defined", slug="quiz-version-exists")
        self.repository.add(
            QuizDefinitionRow(
                quiz_id=quiz.id, version=quiz.version, definition=msgspec.to_builtins(quiz), created_at=self.clock()
            )
        )
        try:
            await self.repository.flush()
        except IntegrityError as exc:
            raise Conflict(
                f"quiz {quiz.id!r} version {quiz.version} is already defined", slug="quiz-version-exists"
            ) from exc
        self.catalogue.add(quiz, "(request)")
        return quiz

    async def start(self, subject_id: str, data: StartSession) -> SessionOut:
        quiz = await self.quiz(data.quiz_id, data.version, error=Unprocessable)
        now = self.clock()
        row = QuizSession(
            id=str(uuid.uuid4()),
            subject_id=subject_id,
            quiz_id=quiz.id,
            quiz_version=quiz.version,
            locale=data.locale,
            status=IN_PROGRESS,
            current_question=quiz.start,
            answers={},
            started_at=now,
            updated_at=now,
            expires_at=now + self.lifetime,
        )
        self.repository.add(row)
        await self.repository.flush()
        await self.repository.count({(quiz.id, quiz.version, "start", "", ""): 1}, counter_shard(row.id))
        return _session_out(quiz, row)

    async def get(self, session_id: str) -> SessionOut:
        row, quiz = await self._open(session_id, writing=False)
        return _session_out(quiz, row)

    async def answer(self, session_id: str, data: AnswerIn) -> SessionOut:
        row, quiz = await self._open(session_id)
        current = row.current_question
        if current is None:
            raise Conflict("every question is answered: complete the session (or go back)", slug="quiz-finished")
        if data.question_id != current:
            raise Conflict(
                f"the current question is {current!r}, not {data.question_id!r}", slug="not-the-current-question"
            )
        try:
            value = validate_answer(quiz, current, data.answer)
        except AnswerError as exc:
            errors = [{"field": "answer", "question": current, "message": exc.problem}]
            raise Unprocessable(str(exc), slug="invalid-answer", errors=errors) from exc
        held: dict[str, Answer] = dict(row.answers)
        path = answered_path(quiz, held)
        kept = {qid: held[qid] for qid in (path[: path.index(current)] if current in path else path)}
        kept[current] = value
        deltas: dict[CounterKey, int] = defaultdict(int)
        for qid, old in held.items():
            if kept.get(qid) != old:
                _count_answer(deltas, quiz, qid, old, -1)
        if held.get(current) != value:
            _count_answer(deltas, quiz, current, value, 1)
        if row.last_question != current:
            if row.last_question is not None:
                deltas[(quiz.id, quiz.version, "last", row.last_question, "")] -= 1
            deltas[(quiz.id, quiz.version, "last", current, "")] += 1
        now = self.clock()
        values = {
            "answers": kept,
            "current_question": next_question(quiz, kept),
            "last_question": current,
            "updated_at": now,
            "expires_at": now + self.lifetime,
        }
        shard = counter_shard(row.id)
        driver = await self.repository.autocommit_driver()
        if driver is None:
            await self._update(row, values)
            await self.repository.count(deltas, shard)
            return _session_out(quiz, row)
        # PostgreSQL, nothing written yet: session and counters in one statement that commits itself.
        revision = row.revision
        answer_out = _session_out(quiz, _moved(row, values))
        if not await self.repository.answer_if_unchanged(
            driver,
            row.id,
            expected_revision=revision,
            values=values,
            quiz=(quiz.id, quiz.version),
            deltas=deltas,
            shard=shard,
        ):
            raise _concurrent_update(row.id)
        await self.repository.release_autocommit_driver()
        return answer_out

    async def back(self, session_id: str) -> SessionOut:
        row, quiz = await self._open(session_id)
        path = answered_path(quiz, row.answers)
        current = row.current_question
        position = path.index(current) if current in path else len(path)
        if position == 0:
            raise Conflict(f"{current!r} is the first question: there is no going back", slug="at-first-question")
        now = self.clock()
        values = {"current_question": path[position - 1], "updated_at": now, "expires_at": now + self.lifetime}
        await self._update(row, values)
        return _session_out(quiz, row)

    async def complete(self, session_id: str) -> SessionOut:
        """Derive the traits and write them into the profile, in the request's one transaction."""
        row, quiz = await self._open(session_id)
        if row.current_question is not None:
            raise Conflict(
                f"the quiz is not finished: the current question is {row.current_question!r}", slug="quiz-not-finished"
            )
        traits = derive_traits(quiz, row.answers, self.catalogue.policy)
        now = self.clock()
        await self._update(row, {"status": COMPLETED, "traits": traits, "completed_at": now, "updated_at": now})
        deltas: dict[CounterKey, int] = {(quiz.id, quiz.version, "complete", "", ""): 1}
        if row.last_question is not None:
            deltas[(quiz.id, quiz.version, "last", row.last_question, "")] = -1
        await self.repository.count(deltas, counter_shard(row.id))
        if traits:
            self.profiles.clock = lambda: now
            await self.profiles.write_traits(row.subject_id, traits, quiz_source(quiz.id, quiz.version, row.id))
        return _session_out(quiz, row)

    async def analytics(self, quiz_id: str, version: int | None = None) -> QuizAnalytics:
        await self.quiz(quiz_id, version)
        versions = [version] if version is not None else self.catalogue.versions(quiz_id)
        counts: dict[int, dict[tuple[str, str, str], int]] = {v: {} for v in versions}
        for counter in await self.repository.counters(quiz_id):
            if counter.version in counts:
                counts[counter.version][(counter.metric, counter.question_id, counter.bucket)] = counter.count
        return QuizAnalytics(quiz_id=quiz_id, versions=[_version_analytics(v, counts[v]) for v in versions])

    async def _open(self, session_id: str, *, writing: bool = True) -> tuple[QuizSession | SessionRow, Quiz]:
        """The session and its quiz: 404 unknown, 410 expired; to write, 409 when completed."""
        row = await self.repository.quiz_session(session_id)
        if row is None:
            raise NotFound(f"there is no quiz session {session_id}", slug="quiz-session-not-found")
        if row.status == IN_PROGRESS and as_utc(row.expires_at) <= self.clock():
            raise Gone(f"quiz session {session_id} expired at {as_utc(row.expires_at).isoformat()}")
        if writing and row.status == COMPLETED:
            raise Conflict(f"quiz session {session_id} is already completed", slug="quiz-session-completed")
        quiz = await self.quiz(row.quiz_id, row.quiz_version, error=Conflict)
        return row, quiz

    async def _update(self, row: QuizSession | SessionRow, values: dict[str, Any]) -> None:
        await self.repository.release_autocommit_driver()  # the session's own connection from here
        if not await self.repository.update_if_unchanged(row.id, expected_revision=row.revision, values=values):
            raise _concurrent_update(row.id)
        for name, value in values.items():
            setattr(row, name, value)
        row.revision += 1


def _concurrent_update(session_id: str) -> Conflict:
    return Conflict(
        f"quiz session {session_id} was changed by another request at the same time; read it and retry",
        slug="concurrent-update",
    )


def _moved(row: QuizSession | SessionRow, values: Mapping[str, Any]) -> QuizSession | SessionRow:
    """The session as ``values`` leave it (answered before the write, which only commits or not)."""
    for name, value in values.items():
        setattr(row, name, value)
    row.revision += 1
    return row


def _buckets(question: Question, answer: Answer) -> list[str]:
    if isinstance(answer, list):
        return list(answer)
    if isinstance(answer, str):
        return [answer]
    for scale_range in question.ranges:
        if scale_range.min <= answer <= scale_range.max:
            return [f"{scale_range.min}..{scale_range.max}"]
    return [str(answer)]


def _count_answer(deltas: dict[CounterKey, int], quiz: Quiz, question_id: str, answer: Answer, delta: int) -> None:
    for bucket in _buckets(quiz.question(question_id), answer):
        deltas[(quiz.id, quiz.version, "answer", question_id, bucket)] += delta


def _version_analytics(version: int, counts: dict[tuple[str, str, str], int]) -> VersionAnalytics:
    starts = counts.get(("start", "", ""), 0)
    completions = counts.get(("complete", "", ""), 0)
    answers: dict[str, dict[str, int]] = {}
    drop_off: dict[str, int] = {}
    for (metric, question_id, bucket), count in sorted(counts.items()):
        if metric == "answer" and count > 0:
            answers.setdefault(question_id, {})[bucket] = count
        elif metric == "last" and count > 0:
            drop_off[question_id] = count
    return VersionAnalytics(
        version=version,
        starts=starts,
        completions=completions,
        completion_rate=round(completions / starts, 4) if starts else 0.0,
        drop_off=drop_off,
        answers=answers,
    )


def _question_out(question: Question, locale: str) -> QuestionOut:
    def text(texts: Mapping[str, str]) -> str | None:
        return texts.get(locale) or texts.get("en")

    return QuestionOut(
        id=question.id,
        kind=question.kind,
        text=text(question.text) or question.id,
        options=[
            OptionOut(
                id=option.id,
                label=text(option.label) or option.id,
                image=ImageOut(url=option.image.url, alt=text(option.image.alt)) if option.image else None,
            )
            for option in question.options
        ],
        min=question.min,
        max=question.max,
        step=question.step,
        low=text(question.low),
        high=text(question.high),
    )


def _progress(quiz: Quiz, row: QuizSession | SessionRow) -> Progress:
    """Answered so far, and that plus the questions ahead if each took its default ``goto``."""
    path = answered_path(quiz, row.answers)
    current = row.current_question
    if current is None:
        return Progress(answered=len(path), total=len(path))
    answered = path.index(current) if current in path else len(path)
    ahead, seen, step = 0, set(), current
    while step != END and step not in seen:
        seen.add(step)
        ahead += 1
        step = quiz.question(step).goto
    return Progress(answered=answered, total=answered + ahead)


def _session_out(quiz: Quiz, row: QuizSession | SessionRow) -> SessionOut:
    current = quiz.question(row.current_question) if row.current_question else None
    return SessionOut(
        id=row.id,
        subject_id=row.subject_id,
        quiz_id=row.quiz_id,
        version=row.quiz_version,
        locale=row.locale,
        status=COMPLETED if row.status == COMPLETED else IN_PROGRESS,
        current_question=_question_out(current, row.locale) if current else None,
        previous_answer=row.answers.get(current.id) if current else None,
        answers=dict(row.answers),
        progress=_progress(quiz, row),
        started_at=as_utc(row.started_at),
        updated_at=as_utc(row.updated_at),
        expires_at=as_utc(row.expires_at),
        completed_at=as_utc(row.completed_at) if row.completed_at else None,
        traits=row.traits,
    )
