"""`/preview`: the cards of any fixture patient, shown the way an EHR would show them.

A development surface (on by default only when authentication is off; `CDS_PREVIEW`
overrides). The page is server-rendered HTML plus one small script, no build step and nothing
from a CDN. The script builds a request here (`/preview/request.json`), sends it to the real
service endpoint of this app, renders the cards, and sends feedback to the real feedback
endpoint. Card text is never inserted as HTML: plain fields go in as text, and `detail`
markdown is rendered here by markdown-it-py with raw HTML disabled (`/preview/markdown`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from markdown_it import MarkdownIt

from .. import fixtures
from ..config import Settings
from ..errors import BadRequest, NotFound
from ..registry import SERVICES

bp = Blueprint(
    "preview",
    __name__,
    url_prefix="/preview",
    template_folder="templates",
    static_folder="static",
)

MAX_TEXTS = 50
MAX_TEXT_CHARS = 20_000
OWN_DRAFTS = ""  # the patient's own draft orders
NO_DRAFTS = "none"

# CommonMark + tables, raw HTML off: `<b>` in a detail shows as text, never as markup;
# markdown-it's link validation refuses javascript:, vbscript:, file: and data: URLs.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def render_markdown(text: str) -> str:
    """Card `detail` markdown as HTML that holds no HTML from the text itself."""
    return _MARKDOWN.render(text)


def _patients() -> list[dict[str, Any]]:
    # An install without the repository's fixtures/ (a container image) has no patients.
    expected = fixtures.expectations() if fixtures.EXPECTED_FILE.is_file() else {}
    out = []
    for name in fixtures.names():
        fixture = fixtures.load(name)
        out.append(
            {
                "name": name,
                "about": expected.get(name, {}).get("about", ""),
                "record": fixtures.describe(name),
                "drafts": [fixtures.medication_text(d) for d in fixture.drafts],
            }
        )
    return out


@bp.get("")
@bp.get("/")
def page():
    drafts = {
        key: fixtures.medication_text(order) for key, order in fixtures.draft_library().items()
    }
    return render_template(
        "preview.html",
        patients=_patients(),
        services=list(SERVICES.values()),
        drafts=drafts,
        own_drafts=OWN_DRAFTS,
        no_drafts=NO_DRAFTS,
        fixtures_dir=str(fixtures.PATIENTS_DIR),
    )


@bp.get("/request.json")
def hook_request():
    """The CDS Hooks request (all prefetch filled) an EHR would send for this patient."""
    name = request.args.get("patient", "")
    service = request.args.get("service", "")
    draft = request.args.get("draft", OWN_DRAFTS)
    if service not in fixtures.HOOKS:
        raise BadRequest("unknown service", [f"one of {', '.join(fixtures.HOOKS)}"])
    try:
        fixture = fixtures.load(name)
    except fixtures.FixtureError as exc:
        raise NotFound("unknown patient", [str(exc)]) from None
    drafts = None
    if draft == NO_DRAFTS:
        drafts = []
    elif draft != OWN_DRAFTS:
        library = fixtures.draft_library()
        if draft not in library:
            raise NotFound("unknown draft order", ["see the list on /preview"])
        drafts = [library[draft]]
    return jsonify(fixture.request(service, "prefetch", drafts=drafts))


@bp.get("/history/<name>")
def history(name: str):
    """The vitamin D history picture of a fixture patient (`cds-service history` as a page)."""
    from ..history import picture_for_bundle, render_page
    from ..history.web import PAGE_HEADERS

    try:
        fixture = fixtures.load(name)
    except fixtures.FixtureError as exc:
        raise NotFound("unknown patient", [str(exc)]) from None
    guideline = current_app.extensions["vitd.runtime"].guideline
    picture = picture_for_bundle(fixture.bundle, guideline, now=datetime.now(UTC))
    return Response(render_page(picture), mimetype="text/html", headers=PAGE_HEADERS)


@bp.post("/markdown")
def markdown():
    body = request.get_json(silent=True)
    texts = body.get("texts") if isinstance(body, dict) else None
    if (
        not isinstance(texts, list)
        or len(texts) > MAX_TEXTS
        or not all(isinstance(t, str) and len(t) <= MAX_TEXT_CHARS for t in texts)
    ):
        raise BadRequest(
            'expected {"texts": [markdown, ...]}',
            [f"at most {MAX_TEXTS} strings of at most {MAX_TEXT_CHARS} characters"],
        )
    return jsonify({"html": [render_markdown(t) for t in texts]})


@bp.after_request
def _headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)  # the history page sets its own
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def register(app: Flask, settings: Settings) -> None:
    if settings.preview_enabled:
        app.register_blueprint(bp)
