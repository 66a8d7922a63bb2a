"""What the shopper API accepts and answers (msgspec Structs at the edge).

Every bound a schema can state is stated here, so the published OpenAPI says exactly what is taken
(400 otherwise); what only the services can judge (``price_range.min`` above ``max``, an answer that
does not fit its question) comes back from them as a 409 / 422 problem.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

from tillit.patterns import exact
from tillit.policy import Language
from tillit.profile_values import ContactFrequency, PriceRange, Sizes, TextList
from tillit.types import PurposeKey

__all__ = [
    "EDITABLE_FIELDS",
    "AnswerIn",
    "ConsentChange",
    "ConsentChangeOut",
    "ConsentEvent",
    "ConsentHistoryOut",
    "ConsentStatus",
    "ContactFrequency",
    "FieldValue",
    "LinkRequestAccepted",
    "LinkTokenIn",
    "MyConsent",
    "MyConsents",
    "MyExport",
    "MyProfile",
    "MyRequest",
    "MyRequests",
    "NewRequest",
    "OptionOut",
    "PriceRange",
    "ProfileEdit",
    "QuestionOut",
    "QuizList",
    "QuizSessionList",
    "QuizSessionSummary",
    "QuizSessionView",
    "QuizStep",
    "QuizSummary",
    "Recipient",
    "ShopperSession",
    "Sizes",
    "StartQuiz",
]

LinkToken = Annotated[str, msgspec.Meta(min_length=1, max_length=2048, description="The token of a preference link")]


class LinkTokenIn(msgspec.Struct, forbid_unknown_fields=True):
    """The token from the preference link (``<preference center>/link/<token>``)."""

    link_token: LinkToken


class ShopperSession(msgspec.Struct):
    access_token: Annotated[str, msgspec.Meta(description="Send as Authorization: Bearer on /v1/me/* and /v1/quizzes")]
    token_type: Literal["Bearer"]
    expires_at: datetime
    expires_in: Annotated[int, msgspec.Meta(description="Seconds until the token expires")]


class LinkRequestAccepted(msgspec.Struct):
    status: Literal["accepted"]
    detail: str


# --- profile ---------------------------------------------------------------------------------------


class ProfileEdit(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The fields a shopper edits on the preference page; ``null`` clears one, absent leaves it alone.

    Contact data (e-mail, phone, name) is not here: changing where the shop writes to needs a
    verified channel, not a link that may have been forwarded.
    """

    preferred_language: Language | UnsetType | None = UNSET
    sizes: Sizes | UnsetType | None = UNSET
    favourite_categories: TextList | UnsetType | None = UNSET
    favourite_brands: TextList | UnsetType | None = UNSET
    topics: TextList | UnsetType | None = UNSET
    price_range: PriceRange | UnsetType | None = UNSET
    contact_frequency: ContactFrequency | UnsetType | None = UNSET


EDITABLE_FIELDS: Final[tuple[str, ...]] = ProfileEdit.__struct_fields__


class FieldValue(msgspec.Struct):
    """One field's value and where it came from (``preference_page``, ``quiz:<id>``, ``import``...)."""

    value: Any
    source: str | None
    updated_at: datetime | None


class MyProfile(msgspec.Struct):
    fields: dict[str, FieldValue]
    editable: Annotated[list[str], msgspec.Meta(description="The fields PATCH /v1/me/profile accepts")]


# --- consents --------------------------------------------------------------------------------------

ConsentStatus = Literal["given", "refused", "withdrawn", "expired", "pending", "none"]


class MyConsent(msgspec.Struct):
    """One purpose with its current notice (in the language asked for, else English) and the shopper's state.

    ``needs_reconsent``: given under a notice version a material change replaced; it does not count
    until given again. ``receipt_event_id``: the event whose signed receipt GET /v1/me/receipts/{id} returns.
    """

    purpose: str
    title: str
    notice_text: str
    language: str
    notice_version: int | None
    material: bool
    double_opt_in: bool
    status: ConsentStatus
    active: bool
    since: datetime | None
    expires_at: datetime | None
    needs_reconsent: bool
    consented_notice_version: int | None
    receipt_event_id: str | None


class MyConsents(msgspec.Struct):
    language: str
    consents: list[MyConsent]


class ConsentChange(msgspec.Struct, forbid_unknown_fields=True):
    """Give or withdraw one purpose. ``notice_version`` is the version shown (required to give)."""

    purpose: PurposeKey
    action: Literal["give", "withdraw"]
    notice_version: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    language: Annotated[Language, msgspec.Meta(description="The language the notice was shown in")] | None = None


class ConsentChangeOut(msgspec.Struct):
    """The state after the change; ``pending`` for a double opt-in purpose until the e-mailed link is opened."""

    purpose: str
    status: ConsentStatus
    active: bool
    event_id: str
    since: datetime
    expires_at: datetime | None
    receipt_event_id: str | None


class ConsentEvent(msgspec.Struct):
    event_id: str
    purpose: str
    action: str
    source: str
    notice_version: int | None
    collected_at: datetime


class ConsentHistoryOut(msgspec.Struct):
    """Every consent event of the shopper, oldest first."""

    events: list[ConsentEvent]


# --- quizzes ---------------------------------------------------------------------------------------

QuizSlug = Annotated[str, msgspec.Meta(pattern=exact(r"^[a-z][a-z0-9_-]{0,63}$"), max_length=64)]
OptionId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
AnswerValue = (
    OptionId
    | Annotated[list[OptionId], msgspec.Meta(max_length=100)]
    | Annotated[int, msgspec.Meta(ge=-1_000_000_000, le=1_000_000_000)]
    | Annotated[float, msgspec.Meta(ge=-1e9, le=1e9)]
)


class QuizSummary(msgspec.Struct):
    id: str
    version: int
    title: dict[str, str]


class QuizList(msgspec.Struct):
    quizzes: list[QuizSummary]


class StartQuiz(msgspec.Struct, forbid_unknown_fields=True):
    quiz_id: QuizSlug
    locale: Language


class AnswerIn(msgspec.Struct, forbid_unknown_fields=True):
    """The answer to the current question: an option id (single, image), option ids (multiple) or a number (scale)."""

    question_id: QuizSlug
    answer: AnswerValue


class ImageOut(msgspec.Struct):
    url: str
    alt: str | None = None


class OptionOut(msgspec.Struct):
    id: str
    label: str
    image: ImageOut | None = None


class QuestionOut(msgspec.Struct):
    """The current question in the session's language; min/max/step/low/high only for scales."""

    id: str
    kind: str
    text: str
    options: list[OptionOut]
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    low: str | None = None
    high: str | None = None


class QuizStep(msgspec.Struct):
    """``step`` is the current question's number on the path, ``total`` an estimate of the path's length."""

    step: int
    answered: int
    total: int


class QuizSessionView(msgspec.Struct):
    """A quiz session; ``current_question`` null while in progress means it can be completed."""

    id: str
    quiz_id: str
    version: int
    locale: str
    status: str
    current_question: QuestionOut | None
    previous_answer: Any
    answers: dict[str, Any]
    progress: QuizStep
    can_go_back: bool
    can_complete: bool
    started_at: datetime
    updated_at: datetime
    expires_at: datetime
    completed_at: datetime | None = None
    traits: dict[str, Any] | None = None


class QuizSessionSummary(msgspec.Struct):
    id: str
    quiz_id: str
    version: int
    locale: str
    status: str
    answered: int
    started_at: datetime
    updated_at: datetime
    expires_at: datetime


class QuizSessionList(msgspec.Struct):
    """The shopper's sessions that can be resumed now (in progress, not expired), latest first."""

    sessions: list[QuizSessionSummary]


# --- data-subject requests and export --------------------------------------------------------------


class NewRequest(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["erasure", "access"]


class MyRequest(msgspec.Struct):
    id: str
    type: str
    status: str
    received_at: datetime
    due_at: datetime
    overdue: bool
    closed_at: datetime | None
    resolution: str | None


class MyRequests(msgspec.Struct):
    requests: list[MyRequest]


class Recipient(msgspec.Struct):
    """One release of the shopper's data (GDPR Art. 15(1)(c)): to which channel, for what, which fields, when."""

    release_id: str
    kind: Literal["profile", "audience"]
    channel: str
    purpose: str
    fields: list[str]
    withheld: list[str]
    at: datetime


class MyExport(msgspec.Struct):
    """Everything held about the shopper that can be exported today (GDPR Art. 15 and 20), as JSON."""

    subject_id: str
    exported_at: datetime
    profile: dict[str, FieldValue]
    profile_history: list[dict[str, Any]]
    consents: list[dict[str, Any]]
    consent_history: list[dict[str, Any]]
    quiz_sessions: list[dict[str, Any]]
    requests: list[MyRequest]
    recipients: list[Recipient]
    recipients_complete: Annotated[
        bool, msgspec.Meta(description="False when there were more releases than one export lists")
    ]
