"""HTTP endpoints of quizzes: the catalogue, sessions and analytics (internal: only the gateway calls them)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Litestar, Request, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlmodel.ext.asyncio.session import AsyncSession

from services.preferences.quizzes.definitions import Quiz
from services.preferences.quizzes.repository import QuizRepository
from services.preferences.quizzes.schemas import AnswerIn, QuizAnalytics, QuizList, SessionOut, StartSession
from services.preferences.quizzes.service import QuizCatalogue, QuizService
from services.preferences.repository import ProfileRepository
from services.preferences.schemas import SubjectQuizSessions
from services.preferences.service import ProfileService
from tillit.db import Database, provide_read_session
from tillit.patterns import exact
from tillit.problems import problem_responses
from tillit.types import SubjectIdPath

__all__ = ["QUIZ_CONTROLLERS", "QuizController", "QuizSessionController", "load_stored_quizzes"]

READ_ONLY = {"session": Provide(provide_read_session)}

QuizIdPath = Annotated[
    str, Parameter(pattern=exact(r"^[a-z][a-z0-9_-]{0,63}$"), max_length=64, description="The quiz id")
]
VersionQuery = Annotated[int | None, Parameter(ge=1, le=1_000_000, description="A quiz version (default: the latest)")]


def provide_quiz_service(session: AsyncSession, request: Request[Any, Any, Any]) -> QuizService:
    state = request.app.state  # not a ``state`` parameter: Litestar copies the state for each one
    return QuizService(
        QuizRepository(session), ProfileService(ProfileRepository(session)), state.quizzes, state.quiz_session_lifetime
    )


async def load_stored_quizzes(app: Litestar) -> None:
    """Take the quizzes added through the API into the catalogue; one no longer valid stops start-up."""
    database: Database = app.state.database
    catalogue: QuizCatalogue = app.state.quizzes
    async with database.sessionmaker() as session:
        await catalogue.refresh(QuizRepository(session))


class QuizController(Controller):
    path = "/v1/quizzes"
    tags = ["quizzes"]
    dependencies = {"quizzes": Provide(provide_quiz_service, sync_to_thread=False)}

    @get(summary="Every quiz version: id, version and titles", dependencies=READ_ONLY, responses=problem_responses(401))
    async def list_quizzes(self, quizzes: QuizService) -> QuizList:
        return await quizzes.list_quizzes()

    @post(
        summary="Add a quiz or a new version of one (merchandisers)",
        description="The body is a quiz definition as GET /v1/quizzes/{quiz_id} answers it. It is checked "
        "by the service, not the schema (a per-language text map cannot be expressed there): a refusal is a "
        "422 naming the quiz, question and problem; an id and version already defined is a 409.",
        status_code=HTTP_201_CREATED,
        responses=problem_responses(400, 401, 409, 413, 415, 422),
    )
    async def add_quiz(self, data: dict[str, Any], quizzes: QuizService) -> Quiz:
        return await quizzes.add_quiz(data)

    @get(
        "/{quiz_id:str}",
        summary="One quiz definition, the latest version unless one is asked for",
        dependencies=READ_ONLY,
        responses=problem_responses(400, 401, 404),
    )
    async def get_quiz(self, quiz_id: QuizIdPath, quizzes: QuizService, version: VersionQuery = None) -> Quiz:
        return await quizzes.quiz(quiz_id, version)

    @get(
        "/{quiz_id:str}/analytics",
        summary="Starts, completions, drop-off and answer counts per version (aggregates only)",
        dependencies=READ_ONLY,
        responses=problem_responses(400, 401, 404),
    )
    async def analytics(self, quiz_id: QuizIdPath, quizzes: QuizService, version: VersionQuery = None) -> QuizAnalytics:
        return await quizzes.analytics(quiz_id, version)


class QuizSessionController(Controller):
    path = "/v1"
    tags = ["quiz sessions"]
    dependencies = {"quizzes": Provide(provide_quiz_service, sync_to_thread=False)}

    @post(
        "/subjects/{subject_id:str}/quiz-sessions",
        summary="Start a quiz session for the subject",
        description="An unknown quiz or version is a 422 naming it.",
        status_code=HTTP_201_CREATED,
        responses=problem_responses(400, 401, 413, 415, 422),
    )
    async def start(self, subject_id: SubjectIdPath, data: StartSession, quizzes: QuizService) -> SessionOut:
        return await quizzes.start(subject_id, data)

    @get(
        "/subjects/{subject_id:str}/quiz-sessions",
        summary="The subject's quiz sessions, oldest first (the export's quiz_sessions section alone)",
        dependencies=READ_ONLY,
        responses=problem_responses(400, 401),
    )
    async def for_subject(self, subject_id: SubjectIdPath, session: AsyncSession) -> SubjectQuizSessions:
        return await ProfileService(ProfileRepository(session)).quiz_sessions(subject_id)

    @get(
        "/quiz-sessions/{session_id:uuid}",
        summary="Resume a session: its current question and the answers so far",
        dependencies=READ_ONLY,
        responses=problem_responses(401, 404, 410),
    )
    async def resume(self, session_id: UUID, quizzes: QuizService) -> SessionOut:
        return await quizzes.get(str(session_id))

    @post(
        "/quiz-sessions/{session_id:uuid}/answers",
        summary="Answer the current question",
        description="Another question than the current one, a completed session or a concurrent answer is a "
        "409; an answer that does not fit the question a 422; an expired session a 410.",
        status_code=HTTP_200_OK,
        responses=problem_responses(400, 401, 404, 409, 410, 413, 415, 422),
    )
    async def answer(self, session_id: UUID, data: AnswerIn, quizzes: QuizService) -> SessionOut:
        return await quizzes.answer(str(session_id), data)

    @post(
        "/quiz-sessions/{session_id:uuid}/back",
        summary="Go back to the previous question (its answer is shown; answering again replaces it)",
        status_code=HTTP_200_OK,
        responses=problem_responses(401, 404, 409, 410),
    )
    async def back(self, session_id: UUID, quizzes: QuizService) -> SessionOut:
        return await quizzes.back(str(session_id))

    @post(
        "/quiz-sessions/{session_id:uuid}/complete",
        summary="Complete the session: the derived traits are written into the profile with provenance",
        status_code=HTTP_200_OK,
        responses=problem_responses(401, 404, 409, 410),
    )
    async def complete(self, session_id: UUID, quizzes: QuizService) -> SessionOut:
        return await quizzes.complete(str(session_id))


QUIZ_CONTROLLERS: tuple[Any, ...] = (QuizController, QuizSessionController)
