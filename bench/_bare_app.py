"""The baseline of ``bench.gateway``: a bare Litestar endpoint answering a release-sized msgspec object.

No token, no upstream call, no database: what the server, Litestar and msgspec cost for an answer of
the same shape and size as a gateway release. ``bench.gateway`` serves it exactly as tillit serves its
components (granian, one worker, ASGI, factory; see ``tillit.cli._serve``) in its own process::

    BENCH_BARE_BODY='{"subject_id": ...}' BENCH_PORT=8198 .venv/bin/python -m bench._bare_app

``BENCH_BARE_BODY`` is one real release answer (JSON); every request answers it with the path's
subject id and the query's purpose put in.
"""

from __future__ import annotations

import os
from typing import Annotated

import msgspec
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.params import Parameter

from gateway.schemas import ProfileRelease

__all__ = ["create_app", "main"]


@get("/bare/subjects/{subject_id:str}/profile", sync_to_thread=False)
def release(subject_id: str, purpose: Annotated[str, Parameter(max_length=100)], state: State) -> ProfileRelease:
    template: ProfileRelease = state.template
    return msgspec.structs.replace(template, subject_id=subject_id, purpose=purpose)


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Litestar:
    """The app, answering ``BENCH_BARE_BODY`` (a factory, as granian wants)."""
    template = msgspec.json.decode(os.environ["BENCH_BARE_BODY"], type=ProfileRelease)
    return Litestar(route_handlers=[release, health], state=State({"template": template}), openapi_config=None)


def main() -> None:
    """Serve :func:`create_app` the way ``tillit.cli._serve`` serves a component."""
    from granian.constants import Interfaces
    from granian.server import Server

    Server(
        "bench._bare_app:create_app",
        address="127.0.0.1",
        port=int(os.environ["BENCH_PORT"]),
        interface=Interfaces.ASGI,
        factory=True,
        workers=1,
        log_access=False,
    ).serve()


if __name__ == "__main__":
    main()
