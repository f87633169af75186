"""Analytics (contract §7): what happened to the cards, per topic and client, from the store.

`build_report` reads roll-ups the store keeps as it writes cards and feedback (and the rows of
a partial first day), in SQL on SQLite and PostgreSQL alike, so a year of a hospital's cards
reports in well under a second; Python only arranges their small results.
`as_text`, `as_json` and `as_html` render one report; the HTML page draws its charts as
server-side SVG (no script, no CDN). `cds-service report` and `GET /analytics` (with
`CDS_ANALYTICS_TOKEN` as a bearer token; 404 otherwise) show the same report.

Counts: `issued` are cards returned to a client; `silent` (shadow mode), `suppressed` (snoozed)
and `deduplicated` (seen at order-select) were recorded but not returned. `accepted` and
`overridden` count the feedback items stored on issued cards (the same item sent twice is
stored once); `reasons` count overridden items per reason, and `snoozed` those whose reason is
a snooze reason. `patients` are distinct patients with an issued card. Rates are over
`issued`.
"""

from __future__ import annotations

import hmac
import html
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .profiles import SNOOZE_REASONS
from .store import Store, card_patient, card_rollup, feedback, feedback_rollup, issued_card

SNOOZE_CODES = tuple(r["code"] for r in SNOOZE_REASONS)
NO_CLIENT = "(unrecorded)"
NO_TOPIC = "(none)"
WITHHELD = ("silent", "suppressed", "deduplicated")


@dataclass
class Row:
    topic: str
    client: str
    issued: int = 0
    patients: int = 0
    accepted: int = 0
    overridden: int = 0
    snoozed: int = 0
    silent: int = 0
    suppressed: int = 0
    deduplicated: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.issued if self.issued else None

    @property
    def override_rate(self) -> float | None:
        return self.overridden / self.issued if self.issued else None


@dataclass
class Week:
    week: str  # Monday, ISO date
    topic: str
    issued: int = 0
    accepted: int = 0
    overridden: int = 0


@dataclass
class Report:
    since: datetime
    until: datetime
    rows: list[Row]
    weeks: list[Week]

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "rows": [
                {
                    **asdict(r),
                    "acceptance_rate": _round(r.acceptance_rate),
                    "override_rate": _round(r.override_rate),
                }
                for r in self.rows
            ],
            "weekly": [asdict(w) for w in self.weeks],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def parse_since(text: str, now: datetime) -> datetime:
    """`30d`, `12w`, `365d`, or an ISO date (UTC midnight)."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*([dw])\s*", text or "")
    if match:
        n = int(match.group(1))
        return now - (timedelta(days=n) if match.group(2) == "d" else timedelta(weeks=n))
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since must be like 30d, 12w or 2026-01-01, not {text!r}") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _day(column: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    """The UTC date of a timestamp as 'YYYY-MM-DD' text, in the database."""
    if dialect == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.date(column)


def _monday(day: str) -> str:
    d = date.fromisoformat(day)
    return (d - timedelta(days=d.weekday())).isoformat()


def build_report(store: Store, since: datetime, now: datetime | None = None) -> Report:
    """The report of the cards issued from `since` to now.

    Whole days come from the roll-ups the store keeps as it writes (`card_rollup`,
    `feedback_rollup`; a few rows per topic, client and day); the part of the first day after
    `since` from the rows themselves (an index range on `issued_at`). Patients come from
    `card_patient` (one row per topic, client and patient, with the last card's time).
    """
    now = now or datetime.now(UTC)
    since = since.astimezone(UTC)
    midnight = datetime(since.year, since.month, since.day, tzinfo=UTC)
    if midnight < since:
        midnight += timedelta(days=1)
    first_day = midnight.date().isoformat()
    ic, fb = issued_card, feedback
    dialect = store.engine.dialect.name
    day = _day(ic.c.issued_at, dialect)
    partial = sa.and_(ic.c.issued_at >= since, ic.c.issued_at < midnight)
    topic, client = sa.func.coalesce(ic.c.topic, ""), sa.func.coalesce(ic.c.client, "")
    reason = sa.func.coalesce(fb.c.override_reason_code, "")
    card_queries = [
        sa.select(
            card_rollup.c.day, card_rollup.c.topic, card_rollup.c.client,
            card_rollup.c.disposition, card_rollup.c.n,
        ).where(card_rollup.c.day >= first_day)
    ]
    answer_queries = [
        sa.select(
            feedback_rollup.c.day, feedback_rollup.c.topic, feedback_rollup.c.client,
            feedback_rollup.c.outcome, feedback_rollup.c.reason, feedback_rollup.c.n,
        ).where(feedback_rollup.c.day >= first_day)
    ]
    if since < midnight:
        disposition = sa.func.coalesce(ic.c.disposition, "")
        card_queries.append(
            sa.select(day, topic, client, disposition, sa.func.count())
            .where(partial)
            .group_by(day, topic, client, disposition)
        )
        answer_queries.append(
            sa.select(day, topic, client, fb.c.outcome, reason, sa.func.count())
            .select_from(fb.join(ic, fb.c.card_uuid == ic.c.card_uuid))
            .where(partial, ic.c.disposition.is_(None))
            .group_by(day, topic, client, fb.c.outcome, reason)
        )
    patients = (
        sa.select(card_patient.c.topic, card_patient.c.client, sa.func.count())
        .where(card_patient.c.last_at >= since)
        .group_by(card_patient.c.topic, card_patient.c.client)
    )
    rows: dict[tuple[str, str], Row] = {}
    weeks: dict[tuple[str, str], Week] = {}

    def row_of(t: str, c: str) -> Row:
        key = (t or NO_TOPIC, c or NO_CLIENT)
        return rows.setdefault(key, Row(*key))

    def week_of(d: str, t: str) -> Week:
        key = (_monday(d), t or NO_TOPIC)
        return weeks.setdefault(key, Week(*key))

    with store.engine.connect() as connection:
        for query in card_queries:
            for d, t, c, kind, n in connection.execute(query):
                row = row_of(t, c)
                if kind:
                    if kind in WITHHELD:
                        setattr(row, kind, getattr(row, kind) + int(n))
                else:
                    row.issued += int(n)
                    week_of(d, t).issued += int(n)
        for query in answer_queries:
            for d, t, c, outcome, code, n in connection.execute(query):
                row, week, n = row_of(t, c), week_of(d, t), int(n)
                if outcome == "accepted":
                    row.accepted += n
                    week.accepted += n
                elif outcome == "overridden":
                    row.overridden += n
                    week.overridden += n
                    label = code or "(no reason)"
                    row.reasons[label] = row.reasons.get(label, 0) + n
                    if code in SNOOZE_CODES:
                        row.snoozed += n
        for t, c, n in connection.execute(patients):
            row_of(t, c).patients = int(n)
    return Report(
        since=since,
        until=now,
        rows=sorted(rows.values(), key=lambda r: (r.topic, r.client)),
        weeks=sorted(weeks.values(), key=lambda w: (w.week, w.topic)),
    )


# --- rendering --------------------------------------------------------------------------------

COLUMNS = (
    ("topic", "topic"),
    ("client", "client"),
    ("issued", "issued"),
    ("patients", "patients"),
    ("accepted", "accepted"),
    ("overridden", "overridden"),
    ("snoozed", "snoozed"),
    ("suppressed", "suppressed"),
    ("silent", "silent"),
    ("dedup", "deduplicated"),
    ("accept %", "acceptance_rate"),
    ("override %", "override_rate"),
)


def _cell(row: Row, attr: str) -> str:
    value = getattr(row, attr)
    if attr.endswith("_rate"):
        return "-" if value is None else f"{value * 100:.1f}"
    return str(value)


def as_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, sort_keys=True)


def as_text(report: Report) -> str:
    lines = [
        f"Cards and feedback from {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M}"
        " UTC",
        "",
    ]
    table = [[name for name, _ in COLUMNS]]
    table += [[_cell(r, attr) for _, attr in COLUMNS] for r in report.rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for line in table:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                               enumerate(zip(line, widths, strict=True))).rstrip())
    if not report.rows:
        lines.append("(no cards recorded in this period)")
    reasons = [(r, code, n) for r in report.rows for code, n in sorted(r.reasons.items())]
    if reasons:
        lines += ["", "Override reasons"]
        lines += [f"  {r.topic} / {r.client}: {code} {n}" for r, code, n in reasons]
    if report.weeks:
        lines += ["", "Weekly (week of, topic: issued / accepted / overridden)"]
        lines += [
            f"  {w.week} {w.topic}: {w.issued} / {w.accepted} / {w.overridden}"
            for w in report.weeks
        ]
    return "\n".join(lines) + "\n"


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22")


def _line_chart(title: str, weeks: list[str], series: dict[str, list[float | None]]) -> str:
    """A rate (0-100 %) per week, one polyline per topic, as inline SVG."""
    width, height, left, right, top, bottom = 720, 260, 48, 190, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    e = html.escape
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{e(title)}">',
        f'<title>{e(title)}</title>',
        f'<text x="{left}" y="18" font-size="14" font-weight="bold">{e(title)}</text>',
    ]
    for pct in (0, 25, 50, 75, 100):
        y = top + plot_h * (1 - pct / 100)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{pct}%</text>'
        )
    n = len(weeks)

    def x_of(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    step = max(1, n // 6)
    for i, wk in enumerate(weeks):
        if i % step == 0 or i == n - 1:
            parts.append(
                f'<text x="{x_of(i):.1f}" y="{top + plot_h + 16}" font-size="10" '
                f'text-anchor="middle">{e(wk)}</text>'
            )
    for k, (topic, values) in enumerate(sorted(series.items())):
        colour = PALETTE[k % len(PALETTE)]
        points = [
            f"{x_of(i):.1f},{top + plot_h * (1 - v):.1f}" for i, v in enumerate(values)
            if v is not None
        ]
        if len(points) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                f'points="{" ".join(points)}"><title>{e(topic)}</title></polyline>'
            )
        for point in points:
            cx, cy = point.split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{colour}"/>')
        ly = top + 14 * k + 8
        parts.append(
            f'<rect x="{left + plot_w + 12}" y="{ly - 8}" width="10" height="10" '
            f'fill="{colour}"/><text x="{left + plot_w + 26}" y="{ly + 1}" '
            f'font-size="11">{e(topic)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _bar_chart(title: str, bars: list[tuple[str, int]]) -> str:
    """Override reasons, one horizontal bar each, as inline SVG."""
    e = html.escape
    width, bar_h, left = 720, 20, 230
    height = 36 + max(1, len(bars)) * (bar_h + 6)
    top = max((n for _, n in bars), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="{e(title)}">',
        f'<title>{e(title)}</title>',
        f'<text x="0" y="18" font-size="14" font-weight="bold">{e(title)}</text>',
    ]
    for i, (label, n) in enumerate(bars):
        y = 30 + i * (bar_h + 6)
        w = (width - left - 60) * n / top
        parts.append(
            f'<text x="{left - 8}" y="{y + 14}" font-size="12" text-anchor="end">{e(label)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#d62728">'
            f"<title>{e(label)}: {n}</title></rect>"
            f'<text x="{left + w + 6:.1f}" y="{y + 14}" font-size="12">{n}</text>'
        )
    if not bars:
        parts.append('<text x="0" y="44" font-size="12">No overrides in this period.</text>')
    parts.append("</svg>")
    return "".join(parts)


def as_html(report: Report) -> str:
    e = html.escape
    weeks = sorted({w.week for w in report.weeks})
    topics = sorted({w.topic for w in report.weeks})
    index = {(w.week, w.topic): w for w in report.weeks}

    def rate(attr: str) -> dict[str, list[float | None]]:
        out = {}
        for topic in topics:
            values = []
            for wk in weeks:
                w = index.get((wk, topic))
                values.append(getattr(w, attr) / w.issued if w and w.issued else None)
            out[topic] = values
        return out

    reasons: dict[str, int] = {}
    for row in report.rows:
        for code, n in row.reasons.items():
            reasons[code] = reasons.get(code, 0) + n
    head = "".join(f"<th>{e(name)}</th>" for name, _ in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(_cell(r, attr))}</td>" for _, attr in COLUMNS) + "</tr>"
        for r in report.rows
    ) or f'<tr><td colspan="{len(COLUMNS)}">No cards recorded in this period.</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vitd-cds analytics</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.8rem; max-width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.35rem; text-align: right; }}
th:nth-child(-n+2), td:nth-child(-n+2) {{ text-align: left; }}
figure {{ margin: 1.5rem 0; }}
</style></head>
<body>
<h1>Cards and feedback</h1>
<p id="period">From {e(f"{report.since:%Y-%m-%d %H:%M}")} to {e(f"{report.until:%Y-%m-%d %H:%M}")}
UTC. Rates are over cards issued (returned to the EHR); silent, suppressed (snoozed) and
de-duplicated cards were recorded but not returned.</p>
<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<figure id="acceptance">{_line_chart("Acceptance rate per topic, by week", weeks,
                                      rate("accepted"))}</figure>
<figure id="override">{_line_chart("Override rate per topic, by week", weeks,
                                    rate("overridden"))}</figure>
<figure id="reasons">{_bar_chart("Override reasons", sorted(reasons.items(),
                                                          key=lambda kv: (-kv[1], kv[0])))}</figure>
</body></html>
"""


RENDERERS = {"text": as_text, "json": as_json, "html": as_html}


# --- GET /analytics ---------------------------------------------------------------------------


def register(app, settings, runtime) -> None:
    from flask import Response, request

    from .errors import BadRequest, NotFound

    def analytics():
        token = settings.analytics_token
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if (
            not token
            or scheme.lower() != "bearer"
            or not hmac.compare_digest(value.strip().encode(), token.encode())
        ):
            raise NotFound("not found")
        now = runtime.clock()
        try:
            since = parse_since(request.args.get("since", "30d"), now)
        except ValueError as exc:
            raise BadRequest("invalid since", [str(exc)]) from None
        page = as_html(build_report(runtime.store, since, now))
        response = Response(page, content_type="text/html; charset=utf-8")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"
        )
        return response

    app.add_url_rule("/analytics", "analytics", analytics, methods=["GET"])
