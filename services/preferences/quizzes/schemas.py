"""What the quiz endpoints accept and answer (the quiz definition itself is ``definitions.Quiz``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from services.preferences.quizzes.definitions import QuestionKind
from tillit.patterns import exact
from tillit.policy import Language

__all__ = [
    "AnswerIn",
    "ImageOut",
    "OptionOut",
    "Progress",
    "QuestionOut",
    "QuizAnalytics",
    "QuizList",
    "QuizSessionRecord",
    "QuizSummary",
    "SessionOut",
    "SessionStatus",
    "StartSession",
    "VersionAnalytics",
]

QuizSlug = Annotated[str, msgspec.Meta(pattern=exact(r"^[a-z][a-z0-9_-]{0,63}$"))]
QuizVersion = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
OptionId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
AnswerValue = (
    OptionId
    | Annotated[list[OptionId], msgspec.Meta(max_length=100)]
    | Annotated[int, msgspec.Meta(ge=-1_000_000_000, le=1_000_000_000)]
    | Annotated[float, msgspec.Meta(ge=-1e9, le=1e9)]
)
"""An option id (single, image), option ids (multiple) or a number (scale)."""
SessionStatus = Literal["in_progress", "completed"]


class StartSession(msgspec.Struct, forbid_unknown_fields=True):
    """Start a quiz; without ``version`` the latest one."""

    quiz_id: QuizSlug
    locale: Language
    version: QuizVersion | None = None


class AnswerIn(msgspec.Struct, forbid_unknown_fields=True):
    """The answer to the session's current question (any other question is a 409)."""

    question_id: QuizSlug
    answer: AnswerValue


class ImageOut(msgspec.Struct):
    url: str
    alt: str | None


class OptionOut(msgspec.Struct):
    id: str
    label: str
    image: ImageOut | None = None


class QuestionOut(msgspec.Struct):
    """A question with its texts in the session's language; min/max/step/low/high only where they apply."""

    id: str
    kind: QuestionKind
    text: str
    options: list[OptionOut]
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    low: str | None = None
    high: str | None = None


class Progress(msgspec.Struct):
    """Questions answered on the way here, and an estimate of the questions on the path in all."""

    answered: int
    total: int


class SessionOut(msgspec.Struct):
    """A quiz session; ``current_question`` null and ``status`` in_progress means it can be completed.

    ``previous_answer`` is the answer already given to the current question (after going back).
    """

    id: str
    subject_id: str
    quiz_id: str
    version: int
    locale: str
    status: SessionStatus
    current_question: QuestionOut | None
    previous_answer: Any
    answers: dict[str, Any]
    progress: Progress
    started_at: datetime
    updated_at: datetime
    expires_at: datetime
    completed_at: datetime | None = None
    traits: dict[str, Any] | None = None


class QuizSummary(msgspec.Struct):
    id: str
    version: int
    title: dict[str, str]


class QuizList(msgspec.Struct):
    """Every quiz version in the catalogue, by id then version."""

    quizzes: list[QuizSummary]


class VersionAnalytics(msgspec.Struct):
    """Counts of one quiz version: no subject ids, no session ids.

    ``drop_off`` counts sessions whose latest answer was to that question and that have not
    completed (in progress or abandoned); ``answers`` counts the answers held per option (scale
    values per range, or per value when the scale has no ranges).
    """

    version: int
    starts: int
    completions: int
    completion_rate: float
    drop_off: dict[str, int]
    answers: dict[str, dict[str, int]]


class QuizAnalytics(msgspec.Struct):
    quiz_id: str
    versions: list[VersionAnalytics]


class QuizSessionRecord(msgspec.Struct):
    """A quiz session as the subject's export holds it."""

    id: str
    quiz_id: str
    version: int
    locale: str
    status: str
    current_question: str | None
    answers: dict[str, Any]
    traits: dict[str, Any] | None
    started_at: datetime
    updated_at: datetime
    expires_at: datetime
    completed_at: datetime | None
