"""The "Customer profiles over time" chart, drawn with matplotlib from the daily rows.

The rows are the ones `counts --daily` prints as CSV (projections.history.daily_rows), so the
picture and the CSV always show the same figures. Pure: rows in, image bytes out (PNG for the
CLI, SVG for the web page); matplotlib's Agg backend needs no display.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

VIEWS = ("customers", "mau", "both")
CHANNEL_TITLES = {None: "any channel", "email": "Email", "sms": "SMS", "push": "Push"}
COLOURS = {"total": "#344054", "reachable": "#4f46e5", "unreachable": "#98a2b3", "mau": "#0e9384"}
FEW_DAYS = 45  # up to this many days, each day is a dot on its line
SHORT_DAYS = 7
_DRAWING = threading.Lock()


def series(rows: Sequence[Mapping[str, Any]], channel: str | None) -> dict[str, list[Any]]:
    """The lines of the chart: days, total, reachable and unreachable on ``channel`` (any
    channel when None), and MAU month to date."""
    prefix = f"{channel}_" if channel else ""
    suffix = "" if channel else "_any"
    return {
        "day": [_as_date(r["day"]) for r in rows],
        "total": [r["total"] for r in rows],
        "reachable": [r[f"{prefix}reachable{suffix}"] for r in rows],
        "unreachable": [r[f"{prefix}unreachable{suffix}"] for r in rows],
        "mau": [r["mau"] for r in rows],
    }


def render_chart(
    rows: Sequence[Mapping[str, Any]],
    channel: str | None = None,
    view: str = "both",
    image_format: str = "png",
    titled: bool = True,
) -> bytes:
    """The chart as PNG or SVG bytes. ``view``: customers (total, reachable, unreachable),
    mau (monthly active users, month to date) or both (two panels). ``titled``: False leaves
    out the titles and legends, for a page that states them itself (with the figures)."""
    with _DRAWING:  # matplotlib's shared state (rcParams, font cache) is not thread-safe
        return _render(rows, channel, view, image_format, titled)


def _render(
    rows: Sequence[Mapping[str, Any]], channel: str | None, view: str, image_format: str,
    titled: bool,
) -> bytes:  # fmt: skip
    import matplotlib

    # SVG text stays text, so the web page's font and zoom apply and the file stays small.
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["svg.hashsalt"] = "profile-engine"  # same rows -> same bytes
    from matplotlib import dates as mdates
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    if view not in VIEWS:
        raise ValueError(f"unknown chart view {view!r}")
    lines = series(rows, channel)
    panels = ["customers", "mau"] if view == "both" else [view]
    height = 3.4 * len(panels) + (0.8 if titled else 0.2)
    figure = Figure(figsize=(11, height))
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)
    days = lines["day"]
    first, last = (days[0], days[-1]) if days else (None, None)
    if titled:
        figure.suptitle(
            f"Customer profiles over time, {first} to {last} · {CHANNEL_TITLES[channel]}",
            fontsize=13,
            fontweight="bold",
        )
    thousands = FuncFormatter(lambda value, _: f"{value:,.0f}")
    # A few days are dots joined by lines (one day alone would be no line at all).
    dots = {"marker": "o", "markersize": 4} if len(days) <= FEW_DAYS else {}
    for axis, panel in zip(axes[:, 0], panels, strict=True):
        if panel == "customers":
            reach = CHANNEL_TITLES[channel]
            drawn = [("total", "Total customers"), ("reachable", f"Reachable ({reach})"),
                     ("unreachable", f"Unreachable ({reach})")]  # fmt: skip
            axis.set_ylabel("Customers")
            subtitle = "Customers at the end of each day (UTC)"
        else:
            drawn = [("mau", "Monthly active users (month to date)")]
            axis.set_ylabel("Active users")
            subtitle = "Monthly active users, month to date"
        for key, label in drawn:
            axis.plot(days, lines[key], label=label, color=COLOURS[key], **dots)
        # Whole customers only, and an axis up to 1 at least (all zero would tick 0, 0, 0).
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.yaxis.set_major_formatter(thousands)
        peak = max((max(lines[key], default=0) for key, _ in drawn), default=0)
        axis.set_ylim(0, max(1, peak) * 1.08)
        axis.grid(True, color="#eaecf0")
        if titled:
            axis.set_title(subtitle, fontsize=10, loc="left")
            axis.legend(loc="best", frameon=False)
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)
    bottom = axes[-1, 0]
    if first is not None and first == last:  # one day: centred, not on an axis of years
        bottom.set_xlim(first - timedelta(days=1), last + timedelta(days=1))
    short = first is not None and (_as_date(last) - _as_date(first)).days < SHORT_DAYS
    # Days, never hours: a week or less is ticked day by day.
    locator = mdates.DayLocator() if short else mdates.AutoDateLocator(minticks=4, maxticks=12)
    bottom.xaxis.set_major_locator(locator)
    # The range (with its years) is in the title or beside the chart: no offset label.
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=False))
    bottom.set_xlabel("Day (UTC)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=image_format, dpi=110)
    return buffer.getvalue()


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))
