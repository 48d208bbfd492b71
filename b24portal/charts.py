"""Server-rendered charts for admin pages: inline SVG, no JavaScript, no CDN."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

PALETTE = ("#c0392b", "#d35400", "#8e44ad", "#2c3e50", "#16a085", "#7f8c8d", "#b7950b", "#1f618d")


@dataclass(frozen=True)
class ChartDay:
    day: date
    counts: Mapping[str, int]  # series key -> count


def daily_series(rows: Iterable[Mapping[str, Any]], *, key: str, value: str, days: int = 30,
                 today: date | None = None) -> list[ChartDay]:
    """Rows of {day, <key>, <value>} → one ChartDay per day of the last `days` days (gaps are zero)."""
    today = today or timezone.localdate()
    by_day: dict[date, dict[str, int]] = defaultdict(dict)
    for row in rows:
        series = str(row[key] or "")
        by_day[row["day"]][series] = by_day[row["day"]].get(series, 0) + int(row[value])
    first = today - timedelta(days=days - 1)
    return [ChartDay(first + timedelta(days=i), by_day.get(first + timedelta(days=i), {})) for i in range(days)]


def stacked_bars_svg(days: Sequence[ChartDay], *, title: str, colours: Mapping[str, str] | None = None,
                     order: Sequence[str] = (), labels: Mapping[str, StrOrPromise] | None = None,
                     width: int = 900, height: int = 240) -> SafeString:
    """A stacked bar per day. Series in `order` come first with their `colours`; any other series gets a
    palette colour. Every interpolated text is escaped."""
    present = {key for d in days for key in d.counts}
    keys = [k for k in order if k in present] + sorted(present - set(order))
    colour_of = dict(colours or {})
    spare = iter(PALETTE * 4)
    for key in keys:
        colour_of.setdefault(key, next(spare))
    labels = labels or {}
    top = max([sum(d.counts.values()) for d in days] + [1])
    left, bottom, legend_h = 50, 30, 22 * ((len(keys) + 5) // 6 or 1)
    plot_h = height - bottom - 10
    bar_w = (width - left - 10) / max(len(days), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + legend_h}" '
             f'viewBox="0 0 {width} {height + legend_h}" role="img" '
             f'aria-label="{escape(title)}" class="b24-chart" font-family="sans-serif" font-size="11">',
             f"<title>{escape(title)}</title>"]
    for fraction in (0, 0.5, 1):
        y = 10 + plot_h * (1 - fraction)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{int(top * fraction)}</text>')
    for i, d in enumerate(days):
        x = left + i * bar_w
        y = 10 + plot_h
        for key in keys:
            n = d.counts.get(key, 0)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            tip = escape(f"{d.day:%Y-%m-%d} {labels.get(key, key)}: {n}")
            parts.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{h:.1f}" '
                         f'fill="{colour_of[key]}"><title>{tip}</title></rect>')
        if i % max(len(days) // 10, 1) == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 12}" text-anchor="middle">{d.day:%m-%d}</text>')
    for j, key in enumerate(keys):
        lx, ly = left + (j % 6) * 140, height + 4 + 22 * (j // 6)
        parts.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{colour_of[key]}"/>'
                     f'<text x="{lx + 16}" y="{ly + 10}">{escape(labels.get(key, key))}</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 (every interpolated text is escaped above)
