"""The preference center's Litestar application (``tillit serve preference_center``)."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar, get
from litestar.contrib.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig

from tillit.app import create_app as create_component_app
from tillit.settings import load_settings

__all__ = ["create_app"]


@get("/", include_in_schema=False)
async def home() -> Template:
    return Template(template_name="home.html.j2")


def create_app() -> Litestar:
    settings = load_settings("preference_center")
    return create_component_app(
        settings,
        title="tillit preference center",
        description="The shopper's pages. Holds no personal data and calls only the gateway.",
        route_handlers=[home],
        template_config=TemplateConfig(directory=Path(__file__).parent / "templates", engine=JinjaTemplateEngine),
    )
