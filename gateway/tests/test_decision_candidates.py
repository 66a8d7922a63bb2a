"""A decision's candidates: forwarded as the caller sent them, checked by the rules service alone."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway import decisions as decisions_module
from gateway.decisions import CandidateProduct, DecisionBody, DecisionContext, DecisionService
from gateway.schemas import ProfileRelease, RulesDecision
from services.rules.catalogue import Product
from tillit.app import decode_strictly
from tillit.problems import InvalidRequest, TillitError, Unavailable

pytestmark = pytest.mark.anyio

_decode = msgspec.json.Decoder(DecisionBody, strict=True).decode


def _schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    schema = msgspec.json.schema(struct)["$defs"][struct.__name__]
    return {key: value for key, value in schema.items() if key not in ("title", "description")}


def test_the_published_candidate_is_what_the_rules_service_holds_candidates_to() -> None:
    # The gateway no longer checks candidates itself: its schema must not promise more or less.
    assert _schema(CandidateProduct) == _schema(Product)
    published = msgspec.json.schema(DecisionBody)["$defs"]["DecisionBody"]["properties"]["candidates"]
    products, null = published["anyOf"]
    assert null == {"type": "null"}
    assert products["maxItems"] == decisions_module.MAX_CANDIDATES
    assert {k: v for k, v in products["items"].items() if k not in ("title", "description")} == _schema(Product)


def test_candidates_are_kept_as_the_bytes_sent() -> None:
    sent = b'[ {"id": "p1", "brand": "Hope", "category": "jeans", "department": "womens", "price": 1} ]'
    body = _decode(b'{"candidates": ' + sent + b', "limit": 3}')
    assert body.candidate_list is not None
    assert bytes(body.candidate_list) == sent
    assert body.limit == 3
    assert _decode(b"{}").candidate_list is None
    assert _decode(b'{"candidates": null}').candidate_list is None


@pytest.mark.parametrize("body", [b'{"candidates": [1,}', b'{"candidates": }', b'{"candidates": [1]'])
def test_candidates_that_are_not_json_are_refused_by_the_gateway(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        _decode(body)


class _Refusal(TillitError):
    status_code = 400
    slug = "validation"
    title = "The request is not valid"


def test_the_rules_services_refusal_of_a_candidate_is_the_callers_400() -> None:
    detail = "body: Expected `str` matching regex '^x$' - at `$.candidates[1].id`"
    refused = decisions_module._refused_candidates(_Refusal(detail))
    assert isinstance(refused, InvalidRequest)
    assert refused.detail == detail
    assert refused.errors == [{"message": detail.removeprefix("body: "), "source": "body"}]
    # Anything else stays what it was: the gateway's own request is not the caller's fault.
    assert decisions_module._refused_candidates(_Refusal("body: Expected `object` - at `$.profile`")) is None
    assert decisions_module._refused_candidates(Unavailable("rules down `$.candidates`")) is None


class _Gateway:
    def __init__(self) -> None:
        self.recorded: list[Any] = []
        self.audit = self

    async def prepare_release(self, *_: Any, **__: Any) -> tuple[ProfileRelease, str]:
        release = ProfileRelease(subject_id="s1", purpose="p", fields={"a": 1}, withheld=[], release_id="r1")
        return release, "row"

    async def record(self, row: Any) -> None:
        self.recorded.append(row)

    def expecting(self) -> AbstractContextManager[None]:
        return nullcontext()


class _Rules:
    def __init__(self, answer: RulesDecision | TillitError) -> None:
        self.answer = answer
        self.sent: list[dict[str, Any]] = []

    async def decide(self, request: dict[str, Any]) -> RulesDecision:
        self.sent.append(request)
        if isinstance(self.answer, TillitError):
            raise self.answer
        return self.answer


@pytest.mark.parametrize("refused", [False, True])
async def test_a_decision_is_audited_only_once_the_rules_service_took_the_candidates(
    refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decisions_module, "assignment_key", lambda _keys, subject: f"key-of-{subject}")
    gateway = _Gateway()
    answer = RulesDecision(purpose="p", segments=[], variants={}, products=["p1"], reasons=[])
    rules = _Rules(
        _Refusal("body: Object missing required field `brand` - at `$.candidates[0]`") if refused else answer
    )
    service = DecisionService(gateway, rules, Path())  # type: ignore[arg-type]
    candidates = msgspec.Raw(b'[{"id": "p1"}]')
    if refused:
        with pytest.raises(_Refusal):
            await service.decide(object(), "s1", "p", DecisionContext(), candidates)  # type: ignore[arg-type]
        assert gateway.recorded == []  # refused: no release to audit, nothing left the gateway
    else:
        decided = await service.decide(object(), "s1", "p", DecisionContext(), candidates)  # type: ignore[arg-type]
        assert decided.products == ["p1"]
        assert gateway.recorded == ["row"]
    [sent] = rules.sent
    assert msgspec.json.decode(msgspec.json.encode(sent))["candidates"] == [{"id": "p1"}]  # forwarded as sent


def _decode_general(sent: bytes) -> DecisionBody:
    """The body as the gateway's strict body check (tillit.app.decode_strictly) hands it to the route."""
    return decode_strictly(sent, DecisionBody)  # type: ignore[no-any-return]


def test_integral_floats_count_as_integers_beside_raw_candidates() -> None:
    # Valid by the schema (JSON Schema counts 0.0 as an integer), so it must not be a 400, although
    # msgspec could not convert a decoded document into the raw candidates.
    sent = b'{"candidates": null, "context": {"visit_count": 0.0}, "limit": 2.0}'
    body = _decode_general(sent)
    assert body.context.visit_count == 0
    assert body.limit == 2
    assert body.candidate_list is None
    listed = _decode_general(b'{"candidates": [{"id": "p1", "price": 5.0}], "limit": 1.0}')
    assert listed.candidate_list is not None
    assert msgspec.json.decode(listed.candidate_list) == [{"id": "p1", "price": 5}]


@pytest.mark.parametrize(
    ("sent", "named"),
    [
        (b'{"candidates": [], "context": {"weather": "rain"}}', "unknown field `weather` - at `$.context`"),
        (b'{"candidates": [{"id": "p1"}], "limit": 1.5}', "at `$.limit`"),
        (b'{"candidates": [{"id": 1}], "slots": ["Not a slot"]}', "at `$.slots[0]`"),
    ],
)
def test_a_bad_body_is_refused_naming_what_is_wrong(sent: bytes, named: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        _decode(sent)
    with pytest.raises(InvalidRequest) as refused:
        _decode_general(sent)
    assert named in refused.value.detail
    assert refused.value.status_code == 400


def test_a_body_that_is_not_json_is_refused_as_such() -> None:
    with pytest.raises(InvalidRequest) as refused:
        _decode_general(b'{"candidates": [1,}')
    assert refused.value.detail.startswith("body is not valid JSON")
