"""The style quiz: one question per step, back, resume later; htmx swaps the step, plain posts work too."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.response import Redirect, Template

from preference_center.assets import local_static
from preference_center.gateway_client import GatewayError
from preference_center.security import Session
from preference_center.web import gateway_of, is_htmx, provide_session, render, see_other

__all__ = ["QuizController"]

_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_CHOICES: Final = 100


def _local_image(url: Any) -> str | None:
    """Only images the preference center serves itself are shown: no request leaves for a third party.

    Any other image (a merchant's CDN, a file not deployed here) is replaced by its alt text.
    """
    if isinstance(url, str) and local_static(url):
        return url
    return None


def _question(session: dict[str, Any]) -> dict[str, Any] | None:
    question = session.get("current_question")
    if not isinstance(question, dict):
        return None
    options = []
    for option in question.get("options") or []:
        image = option.get("image") if isinstance(option.get("image"), dict) else None
        options.append(
            {
                "id": option.get("id"),
                "label": option.get("label"),
                "image": _local_image(image.get("url")) if image else None,
                "alt": (image or {}).get("alt") or option.get("label"),
            }
        )
    return {**question, "options": options}


def _answer(question: dict[str, Any], form: Any) -> Any:
    kind = question.get("kind")
    if kind == "multiple":
        return [str(value) for value in form.getall("answer", [])][:_MAX_CHOICES]
    value = str(form.get("answer") or "")
    if kind == "scale":
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    return value


class QuizController(Controller):
    path = "/quiz"
    include_in_schema = False
    dependencies = {"session": Provide(provide_session)}

    def _step(self, request: Request[Any, Any, Any], session: Session, quiz: dict[str, Any], **extra: Any) -> Template:
        template = "quiz_step.html.j2" if is_htmx(request) else "quiz.html.j2"
        progress = quiz.get("progress") or {}
        return render(
            request,
            template,
            session=session,
            quiz=quiz,
            question=_question(quiz),
            step=int(progress.get("step") or progress.get("answered", 0) + 1),
            answered=int(progress.get("answered") or 0),
            total=max(int(progress.get("total") or 0), 1),
            **extra,
        )

    @get("/")
    async def quizzes(self, request: Request[Any, Any, Any], state: State, session: Session) -> Template:
        gateway = gateway_of(state)
        catalogue, sessions = await asyncio.gather(gateway.quizzes(session.token), gateway.quiz_sessions(session.token))
        latest: dict[str, dict[str, Any]] = {}
        for quiz in catalogue.get("quizzes") or []:
            if quiz["id"] not in latest or quiz["version"] > latest[quiz["id"]]["version"]:
                latest[quiz["id"]] = quiz
        held = [item for item in sessions.get("sessions") or [] if isinstance(item, dict)]
        return render(
            request,
            "quiz_list.html.j2",
            session=session,
            quizzes=list(latest.values()),
            in_progress=[item for item in held if item.get("status") == "in_progress"],
        )

    @post("/start")
    async def start(self, request: Request[Any, Any, Any], state: State, session: Session) -> Redirect:
        form = await request.form()
        quiz_id = str(form.get("quiz_id") or "")
        if not _ID.fullmatch(quiz_id):
            return see_other("/quiz")
        started = await gateway_of(state).start_quiz(session.token, quiz_id, session.lang)
        return see_other(f"/quiz/{started['id']}")

    @get("/{session_id:str}")
    async def show(self, request: Request[Any, Any, Any], state: State, session: Session, session_id: str) -> Template:
        if not _ID.fullmatch(session_id):
            return render(request, "error.html.j2", session=session, status_code=404, problem="not-found")
        quiz = await gateway_of(state).quiz_session(session.token, session_id)
        return self._step(request, session, quiz)

    @post("/{session_id:str}/answer")
    async def answer(
        self, request: Request[Any, Any, Any], state: State, session: Session, session_id: str
    ) -> Template | Redirect:
        if not _ID.fullmatch(session_id):
            return render(request, "error.html.j2", session=session, status_code=404, problem="not-found")
        gateway = gateway_of(state)
        form = await request.form()
        current = await gateway.quiz_session(session.token, session_id)
        question = _question(current)
        if question is None or form.get("question_id") != question.get("id"):
            return self._after(request, session, current, session_id)
        try:
            quiz = await gateway.answer(session.token, session_id, question["id"], _answer(question, form))
        except GatewayError as error:
            if error.status not in (400, 409, 422):
                raise
            return self._step(request, session, current, invalid=True)
        return self._after(request, session, quiz, session_id)

    @post("/{session_id:str}/back")
    async def back(
        self, request: Request[Any, Any, Any], state: State, session: Session, session_id: str
    ) -> Template | Redirect:
        if not _ID.fullmatch(session_id):
            return render(request, "error.html.j2", session=session, status_code=404, problem="not-found")
        try:
            quiz = await gateway_of(state).back(session.token, session_id)
        except GatewayError as error:
            if error.status != 409:
                raise
            quiz = await gateway_of(state).quiz_session(session.token, session_id)
        return self._after(request, session, quiz, session_id)

    @post("/{session_id:str}/complete")
    async def complete(
        self, request: Request[Any, Any, Any], state: State, session: Session, session_id: str
    ) -> Template | Redirect:
        if not _ID.fullmatch(session_id):
            return render(request, "error.html.j2", session=session, status_code=404, problem="not-found")
        quiz = await gateway_of(state).complete(session.token, session_id)
        return self._after(request, session, quiz, session_id)

    def _after(
        self, request: Request[Any, Any, Any], session: Session, quiz: dict[str, Any], session_id: str
    ) -> Template | Redirect:
        """htmx gets the next step straight away; a plain form post is redirected to it (POST, then GET)."""
        if is_htmx(request):
            return self._step(request, session, quiz)
        return see_other(f"/quiz/{session_id}")
