"""OpenAPI documents that say exactly what each API accepts.

Channel developers generate clients from these documents and schemathesis fuzzes every API against
them, so they must not promise more than the server takes:

- request and response bodies are published with msgspec's own JSON Schema of their Structs, the
  same rules the decoder enforces (Litestar 2's generator drops nested constraints and
  ``additionalProperties: false``);
- purposes and profile field names are published with the policy's vocabulary as an ``enum``, read
  from the policy loaded in the running process, so the document follows a policy reload;
- an ``OPTIONS`` request is answered with every method of the path (Litestar 2 lists only the
  methods of the first handler registered on a path, litestar-org/litestar#4169).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args

import msgspec
from litestar import Litestar, Request, Response
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_204_NO_CONTENT

from tillit.patterns import published
from tillit.types import FIELD_NAME_PATTERN, PURPOSE_PATTERN

__all__ = ["PreciseRenderPlugin", "answer_options", "struct_components"]


def _struct_types(annotation: Any) -> Iterator[type[msgspec.Struct]]:
    """The msgspec Structs an annotation names (``X``, ``list[X]``, ``X | None``, ``Response[X]``)."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        yield annotation
        return
    for argument in get_args(annotation):
        yield from _struct_types(argument)


def struct_components(app: Litestar) -> dict[str, Any]:
    """msgspec's own JSON Schema of every Struct a handler takes or answers, keyed by component name.

    This is exactly what the decoder enforces (nested constraints, ``additionalProperties: false``,
    ``propertyNames``), which Litestar 2's generator partly drops.
    """
    structs: set[type[msgspec.Struct]] = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            signature = handler.parsed_fn_signature
            for parameter in (*signature.parameters.values(), signature.return_type):
                structs.update(_struct_types(parameter.annotation))
    if not structs:
        return {}
    _, components = msgspec.json.schema_components(
        sorted(structs, key=lambda struct: struct.__name__), ref_template="#/components/schemas/{name}"
    )
    return components


def _with_vocabulary(node: Any, vocabularies: dict[str, list[str]]) -> Any:
    """Add ``enum`` to every string schema whose pattern marks it as a policy key, and publish every
    pattern as ECMA-262 reads it (:func:`tillit.patterns.published`)."""
    if isinstance(node, dict):
        copied = {key: _with_vocabulary(value, vocabularies) for key, value in node.items()}
        pattern = copied.get("pattern")
        if isinstance(pattern, str):
            if pattern in vocabularies:
                copied["enum"] = vocabularies[pattern]
            copied["pattern"] = published(pattern)
        return copied
    if isinstance(node, list):
        return [_with_vocabulary(item, vocabularies) for item in node]
    return node


class PreciseRenderPlugin(JsonRenderPlugin):
    """``/schema/openapi.json`` with msgspec's component schemas and the policy's purpose vocabulary."""

    def __init__(self) -> None:
        super().__init__()
        self._components: dict[str, Any] | None = None

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        if self._components is None:
            self._components = struct_components(request.app)
        components = openapi_schema.get("components", {})
        document = {
            **openapi_schema,
            "components": {**components, "schemas": {**components.get("schemas", {}), **self._components}},
        }
        policy = request.app.state.get("policy")
        vocabularies: dict[str, list[str]] = {}
        if policy is not None:
            vocabularies = {PURPOSE_PATTERN: sorted(policy.purposes), FIELD_NAME_PATTERN: sorted(policy.fields)}
        document = _with_vocabulary(document, vocabularies)
        return self.render_json(request, document)


def answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
    """Answer ``OPTIONS`` with the methods of the whole path, not of its first handler."""
    if request.method != "OPTIONS":
        return None
    handler = request.route_handler
    for route in request.app.routes:
        if isinstance(route, HTTPRoute) and route.route_handler_map.get("OPTIONS", (None,))[0] is handler:
            return Response(None, status_code=HTTP_204_NO_CONTENT, headers={"Allow": ", ".join(sorted(route.methods))})
    return None
