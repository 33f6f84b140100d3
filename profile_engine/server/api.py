"""The HTTP JSON API: the answers of the query commands, live, plus status and metrics.

Every read runs in a read-only transaction on a cursor of the live projection (see
projections.live), so it sees the last committed batch. JSON is written the way the CLI
writes it (``json.dumps`` with ``default=str``), so the CLI prints the same output whether
it read the file or asked the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from itertools import chain
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from profile_engine.crypto import KeyRing
from profile_engine.errors import BadInput
from profile_engine.reachability import SETTINGS
from profile_engine.server.cache import PerChangeCache
from profile_engine.server.metrics import render_metrics
from profile_engine.server.runner import FoldRunner
from projections import history, live, queries
from projections.live import LiveProjection
from projections.settings import list_settings, reset_setting, set_setting

SQL_DEFAULT_ROWS = 1_000
SQL_TIMEOUT_S = 60.0


class NotFound(BadInput):
    """The thing asked for does not exist (HTTP 404)."""


@dataclass
class Engine:
    """What request handlers need: the live projection and the fold beside it."""

    projection: LiveProjection
    runner: FoldRunner
    sql_timeout_s: float = SQL_TIMEOUT_S
    attribute_types: dict[str, str] = field(default_factory=dict)  # name -> registered type
    answers: PerChangeCache = field(init=False)

    def __post_init__(self) -> None:
        self.answers = PerChangeCache(
            lambda: self.projection.version, lambda: self.projection.exact_since
        )

    def counts(self, month: str, channel: str | None) -> dict[str, Any]:
        """`counts` as of the last committed batch, computed once per batch."""

        def compute() -> dict[str, Any]:
            with self.projection.reading() as con:
                return queries.counts(con, month, channel)

        return self.answers.get(("counts", month, channel), compute)

    def counts_as_of(self, day: date, channel: str | None) -> dict[str, Any]:
        """`counts --as-of`, computed once per batch (a late event can change a past day)."""

        def compute() -> dict[str, Any]:
            with self.projection.reading() as con:
                return history.counts_as_of(con, day, channel)

        return self.answers.get(("counts_as_of", day, channel), compute)

    def daily(self, first: date, last: date, channel: str | None) -> list[dict[str, Any]]:
        """`counts --daily` rows, computed once per batch."""

        def compute() -> list[dict[str, Any]]:
            with self.projection.reading() as con:
                return history.daily_rows(con, first, last, channel)

        return self.answers.get(("daily", first, last, channel), compute)


def engine(request: Request) -> Engine:
    found: Engine = request.app.state.engine
    return found


EngineDep = Annotated[Engine, Depends(engine)]


class JSONText(Response):
    """JSON as the CLI prints it: ``default=str`` for dates and decimals, NaN allowed."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, default=str, ensure_ascii=False).encode("utf-8")


def current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


# -- documentation models (the OpenAPI description; responses are written by JSONText) ------


class ChannelCounts(BaseModel):
    reachable: int
    unreachable: int


class Counts(BaseModel):
    total: int
    reachable_any: int
    mau: int
    month: str
    channels: dict[str, ChannelCounts]


class SqlQuery(BaseModel):
    query: str = Field(description="one SELECT, EXPLAIN, PRAGMA or CALL statement")
    limit: int = Field(SQL_DEFAULT_ROWS, ge=1, le=live.SQL_MAX_ROWS, description="row limit")


class SqlAnswer(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(
        description="more rows existed than the limit, or than 16 MB of values, let through"
    )


class SettingChange(BaseModel):
    value: Any = Field(None, description="the new value (boolean, integer or list of names)")
    reset: bool = Field(False, description="true: back to the default")


class ErrorAnswer(BaseModel):
    error: str
    kind: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorAnswer, "description": "bad input (one-line reason)"},
    503: {"model": ErrorAnswer, "description": "transient: retry"},
}

router = APIRouter()
Key = Annotated[str, Path(description="TYPE:VALUE, e.g. email:ann@example.com or profile_id:ID")]


@router.get("/api/counts", response_model=None, responses={200: {"model": Counts}, **ERRORS})
def get_counts(
    engine: EngineDep,
    month: Annotated[str | None, Query(description="YYYY-MM (UTC); default this month")] = None,
    channel: Annotated[str | None, Query(description="email, sms or push")] = None,
    as_of: Annotated[
        str | None, Query(description="YYYY-MM-DD: as at the end of that UTC day")
    ] = None,
) -> Response:
    """Exactly the JSON of `profile-engine counts --format json` (with as_of: of
    `counts --as-of`)."""
    if as_of is not None:
        if month is not None:
            raise BadInput("month and as_of do not go together (as of a day: that month)")
        return JSONText(engine.counts_as_of(history.parse_day(as_of, "as_of"), channel))
    return JSONText(engine.counts(month or current_month(), channel))


class DailyCounts(BaseModel):
    first_day: str = Field(alias="from")
    last_day: str = Field(alias="to")
    channel: str | None
    columns: list[str]
    days: list[dict[str, Any]]


@router.get(
    "/api/counts/daily", response_model=None, responses={200: {"model": DailyCounts}, **ERRORS}
)
def get_counts_daily(
    engine: EngineDep,
    first_day: Annotated[str, Query(alias="from", description="YYYY-MM-DD, first UTC day")],
    last_day: Annotated[str, Query(alias="to", description="YYYY-MM-DD, last UTC day")],
    channel: Annotated[str | None, Query(description="email, sms or push")] = None,
    format: Annotated[str, Query(pattern="^(json|csv)$", description="json or csv")] = "json",
) -> Response:
    """The rows of `counts --daily` (one per day: total, reachable and unreachable per
    channel and on any, MAU month to date), as JSON or as the CSV `--format csv` prints."""
    first = history.parse_day(first_day, "from")
    last = history.parse_day(last_day, "to")
    rows = engine.daily(first, last, channel)
    columns = history.daily_columns(channel)
    if format == "csv":
        filename = f"profiles-over-time-{first}-{last}{'-' + channel if channel else ''}.csv"
        return Response(
            history.daily_csv(rows, columns),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    days = [{c: _day_text(row[c]) for c in columns} for row in rows]
    return JSONText(
        {"from": first.isoformat(), "to": last.isoformat(), "channel": channel,
         "columns": columns, "days": days}
    )  # fmt: skip


def _day_text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


@router.get("/api/profiles", response_model=None, responses=ERRORS)
def search(
    engine: EngineDep,
    q: Annotated[str, Query(description="prefix of an identifier, name or profile id")] = "",
    limit: Annotated[int, Query(ge=1, le=live.SEARCH_MAX_LIMIT)] = 25,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    """Live profiles matching a prefix (case-insensitive), most recently seen first."""
    with engine.projection.reading() as con:
        page = live.search_profiles(con, q, limit, cursor, engine.projection.ring)
    return JSONText(
        {"profiles": page.profiles, "total": page.total, "next_cursor": page.next_cursor}
    )


def profile_document(con: Any, key: str, ring: KeyRing | None = None) -> dict[str, Any]:
    document = queries.profile_view(con, key, ring)
    if document is None:
        raise NotFound(f"no profile found for {key}")
    return document


AsOf = Annotated[
    str | None, Query(description="YYYY-MM-DD: the profile as at the end of that UTC day")
]


def profile_as_of(
    con: Any, key: str, as_of: str, ring: KeyRing | None = None
) -> tuple[dict[str, Any], list[Any]]:
    if ring is not None:
        # As `profile --as-of`: the history resolves by plain keys and shows stored values.
        raise BadInput("--as-of does not read a projection folded with a master key yet")
    found = history.profile_and_identifiers_as_of(con, key, history.parse_day(as_of, "as_of"))
    if found is None:
        raise NotFound(f"no profile found for {key} as of {as_of}")
    return found


def _written_in_the_key(request: Request, suffix: str) -> bool:
    """Whether the "/<suffix>" a sub-resource's route matched was part of the key, sent as
    %2F: the path is decoded before routes match, so customer_id "abc/identifiers" would
    otherwise open abc's identifiers."""
    raw: bytes = request.scope.get("raw_path") or b""
    return not raw.endswith(b"/" + suffix.encode())


@router.get("/api/profiles/{key:path}/identifiers", response_model=None, responses=ERRORS)
def get_identifiers(engine: EngineDep, request: Request, key: Key, as_of: AsOf = None) -> Response:
    """Every identifier of the profile with its tags, channel, eligibility and the reason."""
    if _written_in_the_key(request, "identifiers"):
        return get_profile(engine, f"{key}/identifiers", as_of)
    with engine.projection.reading() as con:
        ring = engine.projection.ring
        if as_of is not None:
            return JSONText(profile_as_of(con, key, as_of, ring)[1])
        document = profile_document(con, key, ring)
        rows = queries.identifier_rows(
            con, document["profile_id"], document["ccpa_opted_out"], ring
        )
    return JSONText(rows)


@router.get("/api/profiles/{key:path}/timeline", response_model=None, responses=ERRORS)
def get_timeline(
    engine: EngineDep,
    request: Request,
    key: Key,
    type: Annotated[list[str] | None, Query(description="only these event types")] = None,
    limit: Annotated[int, Query(ge=1, le=live.TIMELINE_MAX_LIMIT)] = 25,
    offset: Annotated[int, Query(ge=0, le=live.TIMELINE_MAX_OFFSET)] = 0,
) -> Response:
    """The profile's events, newest first, a page at a time."""
    if _written_in_the_key(request, "timeline"):
        return get_profile(engine, f"{key}/timeline", None)
    with engine.projection.reading() as con:
        ring = engine.projection.ring
        profile_id = resolve(con, key, ring)
        page = live.timeline_page(con, profile_id, type or (), limit, offset, ring)
    return JSONText({"events": page.events, "total": page.total, "types": page.type_counts})


def resolve(con: Any, key: str, ring: KeyRing | None = None) -> str:
    id_type, value = queries.parse_lookup_key(key)
    profile_id = queries.resolve_profile_id(con, id_type, value, ring)
    if profile_id is None:
        raise NotFound(f"no profile found for {key}")
    return profile_id


@router.get("/api/profiles/{key:path}", response_model=None, responses={404: ERRORS[400]})
def get_profile(engine: EngineDep, key: Key, as_of: AsOf = None) -> Response:
    """Exactly the JSON of `profile-engine profile TYPE:VALUE --format json` (with as_of: of
    `profile --as-of`); 404 when the key resolves to no live profile."""
    with engine.projection.reading() as con:
        ring = engine.projection.ring
        if as_of is not None:
            return JSONText(profile_as_of(con, key, as_of, ring)[0])
        return JSONText(profile_document(con, key, ring))


@router.post("/api/sql", response_model=None, responses={200: {"model": SqlAnswer}, **ERRORS})
def post_sql(engine: EngineDep, body: SqlQuery) -> Response:
    """One read-only statement, checked as `profile-engine sql` checks it; rows as JSON."""
    with engine.projection.reading(plaintext_views=True) as con:
        result = live.run_sql_limited(con, body.query, body.limit, engine.sql_timeout_s)
    return JSONText({"columns": result.columns, "rows": result.rows, "truncated": result.truncated})


@router.get("/api/export", response_model=None, responses=ERRORS)
def get_export(
    engine: EngineDep,
    format: Annotated[str, Query(pattern="^(csv|json)$", description="csv or json (lines)")],
    where: Annotated[str | None, Query(description="condition on the export columns")] = None,
    q: Annotated[str, Query(description="only profiles matching this search")] = "",
) -> Response:
    """The rows of `profile-engine export`, streamed (CSV with a header, or JSON Lines)."""

    def stream() -> Iterator[bytes]:
        with engine.projection.reading() as con:
            yield from live.export_chunks(con, format, where, q, engine.projection.ring)

    chunks = stream()
    # A refused --where fails here, as an error answer, not mid-stream; JSON Lines of no
    # profile have no first chunk at all (CSV has its header).
    first = next(chunks, b"")
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    filename = f"profiles.{'csv' if format == 'csv' else 'jsonl'}"
    return StreamingResponse(
        chain([first], chunks),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/api/settings", response_model=None)
def get_settings(engine: EngineDep) -> Response:
    """Every setting: key, value, default, overridden, description (as `settings show`)."""
    with engine.projection.reading() as con:
        rows = list_settings(con)
    return JSONText([_setting_record(row) for row in rows])


@router.put("/api/settings/{key}", response_model=None, responses=ERRORS)
def put_setting(engine: EngineDep, key: str, change: Annotated[SettingChange, Body()]) -> Response:
    """Change one setting (or reset it); counts reflect it at once. The only write."""
    if key not in SETTINGS:
        raise NotFound(f"unknown setting {key!r}; known settings: {', '.join(SETTINGS)}")
    if change.reset and change.value is not None:
        raise BadInput('give either "value" or "reset": true, not both')
    return JSONText(_setting_record(change_setting(engine, key, change.value, change.reset)))


def change_setting(engine: Engine, key: str, value: Any, reset: bool) -> Any:
    """Set one setting (or reset it to its default); its row as `settings show` lists it.
    The one write a request can make (the API's PUT and the settings page)."""
    with engine.projection.writing_settings() as con:
        if reset:
            reset_setting(con, key)
        else:
            set_setting(con, key, value)
        return next(r for r in list_settings(con) if r.key == key)


def _setting_record(row: Any) -> dict[str, Any]:
    return {
        "key": row.key,
        "value": row.value,
        "default": row.default,
        "overridden": row.overridden,
        "description": row.description,
    }


@router.get("/api/status", response_model=None)
def get_status(engine: EngineDep) -> Response:
    """Per partition: next offset in the projection, log end offset, lag; counters since
    start; last batch time and size; fold rate; the fold's state and the broker's."""
    return JSONText(engine.runner.status().as_dict())


@router.get("/metrics", response_model=None)
def get_metrics(engine: EngineDep) -> Response:
    """The status figures in Prometheus text format."""
    body, content_type = render_metrics(engine.runner.status())
    return Response(body, media_type=content_type)
