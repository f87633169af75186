"""Jinja2 rendering of the picture (autoescaped, strict): one environment for the app and CLI."""

from __future__ import annotations

import re
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from .picture import Picture, day, layout, value_text

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
# Characters XML 1.0 does not allow (record text may hold them): shown as U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(value: Any) -> Any:
    """Every printed value passes here before autoescaping, so the SVG stays well-formed."""
    return _NOT_XML.sub("\ufffd", value) if isinstance(value, str) else value


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("cds_service.history", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_xml_safe,
    )
    env.filters["day"] = day
    env.filters["value"] = value_text
    env.filters["round_number"] = lambda n: f"{n:g}"
    return env


ENV = _environment()


def render_svg(picture: Picture) -> str:
    """A standalone SVG document (well-formed XML)."""
    return XML_DECLARATION + ENV.get_template("chart.svg.j2").render(c=layout(picture))


def render_page(picture: Picture) -> str:
    """The HTML page: the SVG inline, then the same data as tables."""
    return ENV.get_template("page.html.j2").render(c=layout(picture), p=picture)


def render_error(heading: str, message: str, hint: str | None = None) -> str:
    return ENV.get_template("error.html.j2").render(heading=heading, message=message, hint=hint)
