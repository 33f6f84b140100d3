"""The web page: server-rendered HTML (Jinja2) over the same reads as the API.

No build step and nothing fetched from the internet: templates, CSS, the one small script
and the font are package data. Every page works without JavaScript; the script adds live
figures, search as you type and keyboard shortcuts.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from profile_engine.errors import ProfileEngineError
from profile_engine.events import EventType
from profile_engine.history_chart import render_chart
from profile_engine.reachability import CHANNELS, MAX_INTEGER, SETTINGS, parse_value, setting
from profile_engine.server.api import Engine, change_setting, current_month, profile_document
from profile_engine.server.runner import FoldStatus
from profile_engine.server.security import COOKIE, is_cross_site, token_matches
from projections import history, live, queries
from projections.settings import list_settings

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(
    directory=str(resources.files("profile_engine.server").joinpath("templates"))
)

DASH = "\u2013"  # en dash: "no value" in tables
PAGE_SIZES = (10, 25, 50, 100)
TIMELINE_PAGE = 25
CHART_DAYS = 90  # the overview chart's default range, ending at the newest event
CHART_VIEWS = ("customers", "mau")
CHART_PRESETS = (30, 90, 365)  # days, ending at the range's last day
SQL_PAGE_ROWS = 1_000
TABS = ("identifiers", "events", "details", "subscriptions")
ID_TYPE_LABELS = {
    "customer_id": "Customer ID",
    "email": "Email",
    "phone": "Phone",
    "push_token": "Push token",
    "anonymous_id": "Anonymous ID",
}
CHANNEL_LABELS = {"email": "Email", "sms": "SMS", "push": "Push", "any": "Any channel"}
REASONS = {
    "ccpa_opted_out": "CCPA opt-out blocks this channel",
    "not_last_seen": "Not the last-seen {type}",
    "invalid": "Invalid {type}",
    "hard_bounce": "Hard bounced",
    "complaint": "Marked as spam",
    "undeliverable": "Undeliverable",
    "soft_bounce_limit": "Too many soft bounces in a row",
    "consent_opted_out": "Opted out",
    "consent_pending": "Waiting for double opt-in",
    "consent_unknown": "Unknown consent (implicit consent is off)",
}
CONSENT_LABELS = {
    "opted_in": "Opted in",
    "opted_out": "Opted out",
    "pending": "Pending",
    "unknown": "Unknown consent",
}
EXAMPLE_QUERIES = (
    ("Reachability", "SELECT * FROM reachability_counts"),
    ("MAU this month", f"SELECT * FROM mau_for_month('{current_month()}')"),
    (
        "Why not eligible",
        "SELECT channel, reason, count(*) AS identifiers\nFROM identifier_reachability\n"
        "WHERE NOT eligible GROUP BY ALL ORDER BY 3 DESC",
    ),
    (
        "Top customers",
        "SELECT p.profile_id, p.order_count, p.revenue\nFROM profiles p\n"
        "JOIN profile_reachability r USING (profile_id)\n"
        "WHERE r.email ORDER BY p.revenue DESC LIMIT 20",
    ),
)


def engine_of(request: Request) -> Engine:
    found: Engine = request.app.state.engine
    return found


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    engine = engine_of(request)
    status = engine.runner.status()
    context.setdefault("active", "")
    return templates.TemplateResponse(
        request,
        template,
        {
            "status": status,
            "status_view": status_view(status),
            "token_required": request.app.state.token_required,
            **context,
        },
        status_code=status_code,
    )


def error_page(request: Request, message: str, status_code: int) -> Response:
    titles = {400: "That did not work", 404: "Not found", 503: "The database is busy"}
    return render(
        request,
        "error.html",
        status_code,
        title=titles.get(status_code, "Something went wrong"),
        message=message,
        code=status_code,
    )


# -- overview ---------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview(
    request: Request,
    channel: str | None = None,
    month: str | None = None,
    first_day: Annotated[str | None, Query(alias="from")] = None,
    last_day: Annotated[str | None, Query(alias="to")] = None,
    view: str = "customers",
    fragment: str | None = None,
) -> Response:
    engine = engine_of(request)
    chosen = channel if channel in CHANNELS else None
    this_month = current_month()

    def event_dates() -> tuple[list[str], str | None, date | None]:
        with engine.projection.reading() as con:
            return (
                live.event_months(con),
                history.latest_active_month(con),
                history.last_event_day(con),
            )

    # Scans of the timeline: once per batch, not per page view.
    event_months, active_month, newest_day = engine.answers.get(("event-dates",), event_dates)
    months = sorted({this_month, *event_months}, reverse=True)
    chart = _history_chart(engine, chosen, first_day, last_day, view, newest_day)
    if fragment == "chart":
        return render(request, "_history_chart.html", 200, chart=chart)
    # Data may be old: the MAU card opens on the newest month with activity, not the clock's.
    default_month = active_month if active_month in months else this_month
    counts = engine.counts(month if month in months else default_month, None)
    return render(
        request,
        "overview.html",
        active="overview",
        counts=counts,
        channel=chosen,
        channels=CHANNELS,
        months=months,
        chart=chart,
    )


def _history_chart(
    engine: Engine,
    channel: str | None,
    first_text: str | None,
    last_text: str | None,
    view: str,
    newest_day: date | None,
) -> dict[str, Any]:
    """What the "Customer profiles over time" panel shows: the range (by default the last
    CHART_DAYS days of event time, ending at the newest event), the SVG drawn from the same
    rows as `counts --daily`, and the link to those rows as CSV."""
    chosen_view = view if view in CHART_VIEWS else "customers"
    default_last = newest_day or datetime.now(UTC).date()
    first, last, error = _chart_range(first_text, last_text, default_last)
    rows: list[dict[str, Any]] = []
    svg = ""
    if error is None and newest_day is not None:
        try:
            rows = engine.daily(first, last, channel)
        except ProfileEngineError as failure:
            error = str(failure)
        else:
            svg = engine.answers.get(
                ("chart-svg", first, last, channel, chosen_view),
                lambda: render_chart(rows, channel, chosen_view, "svg", titled=False).decode(),
            )
    # The dates the form shows: a refused range keeps what was typed, to be corrected.
    asked = (first_text or first.isoformat(), last_text or last.isoformat())
    if error is not None:
        first, last = default_last - timedelta(days=CHART_DAYS - 1), default_last
    params = {"from": first.isoformat(), "to": last.isoformat(), "channel": channel}
    return {
        "first": first,
        "last": last,
        "asked": asked if error is not None else (first.isoformat(), last.isoformat()),
        # No range asked for: the default one, which moves on with the newest event.
        "follows": not first_text and not last_text,
        "view": chosen_view,
        "channel": channel or "any",
        "error": error,
        "empty": newest_day is None,
        "svg": Markup(_responsive(svg)) if svg else "",
        "days": len(rows),
        "latest": rows[-1] if rows else None,
        "reachable_key": f"{channel}_reachable" if channel else "reachable_any",
        "unreachable_key": f"{channel}_unreachable" if channel else "unreachable_any",
        "csv_url": _url("/api/counts/daily", **params, format="csv"),
        # Another view of the same range: the default one stays the default.
        "view_urls": {
            v: _url("/", **(params if first_text or last_text else {"channel": channel}), view=v)
            for v in CHART_VIEWS
        },
        "presets": [
            {"days": days, "url": _url("/", **{**params, "from": start}, view=chosen_view)}
            for days in CHART_PRESETS
            for start in [(last - timedelta(days=days - 1)).isoformat()]
        ],
    }


def _chart_range(
    first_text: str | None, last_text: str | None, default_last: date
) -> tuple[date, date, str | None]:
    try:
        last = history.parse_day(last_text, "to") if last_text else default_last
        first = (
            history.parse_day(first_text, "from")
            if first_text
            else last - timedelta(days=CHART_DAYS - 1)
        )
    except ProfileEngineError as failure:
        return default_last, default_last, str(failure)
    if last < first:
        return first, last, f"the range ends ({last}) before it starts ({first})"
    return first, last, None


def _responsive(svg: str) -> str:
    """matplotlib's SVG without its fixed size (the viewBox stays), so CSS sizes it."""
    _prolog, _, rest = svg.partition("<svg ")  # the XML declaration and DOCTYPE go
    if not rest:
        return svg
    tag, _, body = rest.partition(">")
    tag = re.sub(r'\s(width|height)="[^"]*"', "", " " + tag).strip()
    return f'<svg {tag} role="img" aria-hidden="true">{body}'


# -- profiles ---------------------------------------------------------------------------------


@router.get("/profiles", response_class=HTMLResponse)
def profiles(
    request: Request,
    q: str = "",
    limit: int = 25,
    cursor: str | None = None,
    fragment: str | None = None,
) -> Response:
    engine = engine_of(request)
    size = limit if limit in PAGE_SIZES else 25
    with engine.projection.reading() as con:
        page = live.search_profiles(con, q, size, cursor, engine.projection.ring)
    context: dict[str, Any] = {
        "active": "profiles",
        "q": q,
        "limit": size,
        "page_sizes": PAGE_SIZES,
        "page": page,
        "first_page": cursor is None,
        "next_url": _url("/profiles", q=q, limit=size, cursor=page.next_cursor)
        if page.next_cursor
        else None,
        "first_url": _url("/profiles", q=q, limit=size),
        "export_csv": _url("/api/export", format="csv", q=q),
        "export_json": _url("/api/export", format="json", q=q),
    }
    template = "_profile_results.html" if fragment == "results" else "profiles.html"
    return render(request, template, 200, **context)


@router.get("/profiles/{key:path}", response_class=HTMLResponse)
def profile_page(
    request: Request,
    key: str,
    tab: str = "identifiers",
    type: Annotated[list[str] | None, Query()] = None,
    offset: int = 0,
) -> Response:
    engine = engine_of(request)
    chosen_tab = tab if tab in TABS else "identifiers"
    types = [t for t in (type or []) if t in set(EventType)]
    ring = engine.projection.ring  # a keyed projection's sealed values are opened
    with engine.projection.reading() as con:
        document = profile_document(con, key, ring)
        pid = document["profile_id"]
        identifiers = queries.identifier_rows(con, pid, document["ccpa_opted_out"], ring)
        summary = live.profile_summaries(con, [pid], ring)[0]
        offset = min(max(0, offset), live.TIMELINE_MAX_OFFSET)  # a page past the end is empty
        timeline = live.timeline_page(con, pid, types, TIMELINE_PAGE, offset, ring)
    return render(
        request,
        "profile.html",
        active="profiles",
        key=key,
        profile=document,
        name=display_name(document),
        summary=summary,
        details=_details(document, engine.attribute_types),
        identifiers=identifiers,
        contacts=_contacts(identifiers),
        tab=chosen_tab,
        tabs=_tabs(key, document, identifiers, timeline),
        timeline=timeline,
        types=types,
        type_links=_type_links(key, types, timeline.type_counts),
        offset=max(0, offset),
        page_size=TIMELINE_PAGE,
        newer_url=_timeline_url(key, types, offset - TIMELINE_PAGE) if offset > 0 else None,
        older_url=_timeline_url(key, types, offset + TIMELINE_PAGE)
        if offset + TIMELINE_PAGE < timeline.total
        else None,
    )


def _tabs(
    key: str, document: dict[str, Any], identifiers: list[Any], timeline: live.TimelinePage
) -> list[dict[str, Any]]:
    counts = {
        "identifiers": len(identifiers),
        "events": sum(timeline.type_counts.values()),
        "details": len(document["traits"]),
        "subscriptions": len(document["subscriptions"]),
    }
    labels = {
        "identifiers": "Identifiers",
        "events": "Event history",
        "details": "Customer details",
        "subscriptions": "List subscriptions",
    }
    return [
        {"id": t, "label": labels[t], "count": counts[t], "url": _url(profile_url(key), tab=t)}
        for t in TABS
    ]


def _type_links(key: str, chosen: list[str], type_counts: dict[str, int]) -> list[dict[str, Any]]:
    links = [
        {
            "label": "All",
            "count": sum(type_counts.values()),
            "active": not chosen,
            "url": _timeline_url(key, [], 0),
        }
    ]
    for kind, count in type_counts.items():
        toggled = [t for t in chosen if t != kind] if kind in chosen else [*chosen, kind]
        links.append(
            {
                "label": kind,
                "count": count,
                "active": kind in chosen,
                "url": _timeline_url(key, toggled, 0),
            }
        )
    return links


def _timeline_url(key: str, types: list[str], offset: int) -> str:
    params: list[tuple[str, Any]] = [("tab", "events"), *[("type", t) for t in types]]
    if offset > 0:
        params.append(("offset", offset))
    return profile_url(key) + "?" + urlencode(params)


JSON_TYPES = {bool: "boolean", int: "long", float: "double", str: "string"}


def _details(document: dict[str, Any], registered: dict[str, str]) -> list[dict[str, Any]]:
    """Traits with their registered type (else the JSON type they were stored as)."""
    rows = []
    for name, trait in document["traits"].items():
        value = trait["value"]
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        rows.append(
            {
                "name": name,
                "type": registered.get(name) or JSON_TYPES.get(type(value), "string"),
                "value": text,
                "updated_at": trait["updated_at"],
                "source": trait["source"],
            }
        )
    return rows


def _contacts(identifiers: list[dict[str, Any]]) -> dict[str, str]:
    return {i["type"]: i["value"] for i in identifiers if i["is_last_seen"]}


# -- SQL --------------------------------------------------------------------------------------


@router.get("/sql", response_class=HTMLResponse)
def sql_page(request: Request, q: str = "") -> Response:
    # A link keeps a query to share; followed from another site's page, it is shown, not run
    # (that page chose it; see security.is_cross_site).
    return _sql(request, q, run=not is_cross_site(dict(request.headers)))  # names lowercase


@router.post("/sql", response_class=HTMLResponse)
async def sql_run(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    query = form.get("q", [""])[0]
    # On a worker thread, as FastAPI runs the plain handlers: on the event loop, a query of up
    # to the SQL timeout would hold up every other request, the API's included.
    return await run_in_threadpool(_sql, request, query)


def _sql(request: Request, query: str, run: bool = True) -> Response:
    engine = engine_of(request)
    result, error = None, None
    notice = None
    if query.strip() and not run:
        notice = "A link from another site opened this query: read it, then run it if you mean to."
    if query.strip() and run:
        try:
            with engine.projection.reading(plaintext_views=True) as con:
                result = live.run_sql_limited(con, query, SQL_PAGE_ROWS, engine.sql_timeout_s)
        except ProfileEngineError as failure:
            error = str(failure)
    return render(
        request,
        "sql.html",
        200 if error is None else 400,
        active="sql",
        query=query,
        result=result,
        error=error,
        notice=notice,
        examples=EXAMPLE_QUERIES,
        max_rows=SQL_PAGE_ROWS,
    )


# -- settings ---------------------------------------------------------------------------------

SETTING_LABELS = {
    **{f"implicit_consent.{c}": f"Implicit consent · {CHANNEL_LABELS[c]}" for c in CHANNELS},
    **{f"ccpa_blocks.{c}": f"CCPA opt-out blocks · {CHANNEL_LABELS[c]}" for c in CHANNELS},
    "mau.excluded_events": "Events that are not activity",
    "bounce.soft_bounce_limit": "Soft bounces before undeliverable",
}


@router.get("/settings", response_class=HTMLResponse)
def settings_page(request: Request, saved: str | None = None) -> Response:
    return _settings(request, saved=SETTING_LABELS.get(saved or ""))


@router.post("/settings/{key}", response_class=HTMLResponse)
async def settings_save(request: Request, key: str) -> Response:
    """One setting's form: its value (a checkbox sends "false" then "true" when ticked: the
    last one counts) or ``reset``. The one write a page can make."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    try:
        setting(key)  # an unknown key is refused before anything is written
        reset = "reset" in form
        value = None if reset else parse_value(key, (form.get("value") or [""])[-1])
        await run_in_threadpool(change_setting, engine_of(request), key, value, reset)
    except ProfileEngineError as failure:
        return _settings(request, error=str(failure), status_code=400)
    return RedirectResponse(f"/settings?saved={quote(key)}#{quote(key)}", status_code=303)


def _settings(
    request: Request, saved: str | None = None, error: str | None = None, status_code: int = 200
) -> Response:
    with engine_of(request).projection.reading() as con:
        rows = list_settings(con)
    shown = [
        {
            "row": row,
            "label": SETTING_LABELS.get(row.key, row.key),
            "kind": SETTINGS[row.key].kind,
            "text": _setting_text(row.value),
            "default_text": _setting_text(row.default) or "none",
            "max": MAX_INTEGER,
        }
        for row in rows
    ]
    return render(
        request, "settings.html", status_code, active="settings", settings=shown, saved=saved,
        error=error,
    )  # fmt: skip


def _setting_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


# -- login (only when a token is required) ----------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", next=_local(next), failed=False, bare=True)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = form.get("token", [""])[0].strip()
    target = _local(form.get("next", ["/"])[0])
    expected = request.app.state.token
    if expected is None or not token_matches(expected, token):
        return render(request, "login.html", 401, next=target, failed=True, bare=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def _local(target: str) -> str:
    """Only a path on this server (never //elsewhere or a scheme)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


# -- helpers for templates --------------------------------------------------------------------


def profile_url(key: str) -> str:
    return "/profiles/" + quote(key, safe=":@")


def _url(path: str, **params: Any) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(kept) if kept else "")


# Direction embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069).
_DIRECTION_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def _joined(parts: list[Any]) -> str:
    """First and last name as one line, without direction controls: an override typed into
    a first name would otherwise reverse the whole heading, the last name included ("Ann
    Lee" shown as "eeL nnA"). The trait itself is shown as stored in the details."""
    return " ".join(str(p).translate(_DIRECTION_CONTROLS) for p in parts if p).strip()


def display_name(document: dict[str, Any]) -> str:
    traits = document["traits"]
    name = _joined([traits.get(n, {}).get("value") for n in ("first_name", "last_name")])
    if name:
        return name
    for identifier in document["identifiers"]:
        if identifier["type"] in ("email", "customer_id", "phone") and identifier["is_last_seen"]:
            return str(identifier["value"])
    return "Anonymous visitor"


def summary_name(row: dict[str, Any]) -> str:
    name = _joined([row["first_name"], row["last_name"]])
    if name:
        return name
    ids = row["identifiers"]
    return str(
        ids.get("email") or ids.get("customer_id") or ids.get("phone") or "Anonymous visitor"
    )


def initials(name: str) -> str:
    # The first letter or digit of each word: formatting characters (a right-to-left mark
    # before a name) are not letters.
    words = name.replace("@", " ").replace(".", " ").split()
    firsts = [next((c for c in w if c.isalnum()), "") for w in words]
    letters = "".join(f for f in firsts if f)[:2].upper()
    return letters or "?"


def avatar_hue(profile_id: str) -> int:
    return int(hashlib.sha256(profile_id.encode()).hexdigest()[:4], 16) % 360


def number(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def money(value: Any) -> str:
    return DASH if value is None else f"{value:,.2f}"


def when(text: str | None, with_time: bool = True, short: bool = False) -> str:
    """``2026-03-01T10:00:00Z`` -> ``1 Mar 2026, 10:00 UTC`` (short: without " UTC")."""
    if not text:
        return DASH
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if not with_time:
        return f"{moment.day} {moment:%b %Y}"
    return f"{moment.day} {moment:%b %Y, %H:%M}" + ("" if short else " UTC")


def percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def restarts_text(count: int) -> str:
    """The overview's note on fold restarts (app.js restartsText says the same)."""
    if not count:
        return ""
    times = "once" if count == 1 else f"{number(count)} times"
    return f"The fold process died and was started again {times} since the server started."


def reason_text(reason: str | None, id_type: str) -> str:
    if reason is None:
        return ""
    label = ID_TYPE_LABELS.get(id_type, id_type).lower()
    return REASONS.get(reason, reason.replace("_", " ")).format(type=label)


def event_title(event: dict[str, Any]) -> str:
    payload = event["payload"] or {}
    kind = event["type"]
    if kind == "track":
        name = str(event["event_name"] or payload.get("event") or "track")
        properties = payload.get("properties") or {}
        if name == "purchase" and "order_id" in properties:
            return f"purchase · order {properties['order_id']} · {money(properties.get('revenue'))}"
        return name
    if kind == "identify":
        names = sorted(payload.get("traits") or {})
        shown = ", ".join(names[:4]) + (f" +{len(names) - 4}" if len(names) > 4 else "")
        return "identify" + (f" · {shown}" if names else "")
    channel = str(payload.get("channel", ""))
    channel_label = CHANNEL_LABELS.get(channel, channel)
    if kind == "consent":
        status = str(payload.get("status", ""))
        return f"{channel_label} consent: {CONSENT_LABELS.get(status, status)}"
    if kind == "bounce":
        return f"{channel_label} {str(payload.get('bounce_type', '')).replace('_', ' ')} bounce"
    if kind == "subscription":
        return (
            f"List {payload.get('list_id')} ({payload.get('channel')}): "
            f"{str(payload.get('status', '')).replace('_', ' ')}"
        )
    if kind == "ccpa":
        return f"CCPA {str(payload.get('request', '')).replace('_', '-')}"
    return kind


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


OUTAGE = (
    "The event stream is unreachable: new events wait in Kafka and the figures shown are as of "
    "the last folded batch."
)


FOLD_STOPPED = (
    "The fold has stopped and needs attention; the figures shown are as of its last batch."
)


def status_view(status: FoldStatus) -> dict[str, Any]:
    """What the header's live indicator and the banners show."""
    if status.broker_reachable is False:
        banner = f"{OUTAGE} {status.broker_error}"
        return {"tone": "bad", "label": "Kafka unreachable", "banner": banner}
    if status.state == "failed":
        banner = f"{FOLD_STOPPED} {status.error}"
        return {"tone": "bad", "label": "Fold stopped", "banner": banner}
    if status.state == "waiting":
        return {"tone": "warn", "label": "Waiting", "banner": status.error}
    if status.state == "starting":
        return {"tone": "warn", "label": "Starting", "banner": None}
    if status.state == "catching_up":
        return {"tone": "warn", "label": f"Catching up · lag {number(status.lag)}", "banner": None}
    if status.state == "stopped":
        return {"tone": "bad", "label": "Stopped", "banner": None}
    return {"tone": "good", "label": "Live", "banner": None}


def sql_cell(value: Any) -> str:
    """A query's value as the SQL page shows it: SQL's words and JSON, not Python's."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        # As DuckDB prints a BLOB: printable ASCII as itself, any other byte as \xHH.
        return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02X}" for b in value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


templates.env.filters.update(
    sql_cell=sql_cell,
    number=number,
    money=money,
    when=when,
    initials=initials,
    hue=avatar_hue,
    reason_text=reason_text,
    event_title=event_title,
    pretty_json=pretty_json,
)
templates.env.globals.update(
    profile_url=profile_url,
    summary_name=summary_name,
    percent=percent,
    restarts_text=restarts_text,
    id_type_labels=ID_TYPE_LABELS,
    consent_labels=CONSENT_LABELS,
    channel_labels=CHANNEL_LABELS,
)
