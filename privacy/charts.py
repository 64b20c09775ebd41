"""Tiny charts for the audit report: an inline-SVG step plot and HTML/CSS bars.

No plotting library, no script, no external resource. Text that can be long (series names,
budget labels and amounts) is laid out by the browser as HTML, never placed at guessed
coordinates inside an SVG, so no label can be clipped; inside the SVG only short tick labels
remain, with margins sized for the longest one. Every element carries a class (and
``data-*`` attributes) so tests and auditors' tools can find the plotted series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
           "#ff9da7", "#9c755f", "#bab0ac")


@dataclass(frozen=True)
class StepSeries:
    """A cumulative series: ``points`` are (unix time, value) after each change."""

    label: str
    points: tuple[tuple[float, float], ...]
    limit: float | None = None
    attrs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Bar:
    label: str
    used: float
    total: float | None  # None: no known limit, the bar shows ``used`` only
    text: str


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 times a power of ten) from at or below ``lo`` to at or
    above ``hi``, so that the axis always covers the data."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400,
               182 * 86400, 365 * 86400)


def time_ticks(t0: float, t1: float, count: int = 5) -> list[float]:
    """Ticks on round clock times (whole minutes, hours, days) inside [t0, t1]."""
    step = next((s for s in _TIME_STEPS if (t1 - t0) / s <= count), _TIME_STEPS[-1])
    first = math.ceil(t0 / step) * step
    return [float(t) for t in range(int(first), int(t1) + 1, step)]


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _label(value: float) -> str:
    return f"{value:.4g}"  # at most 9 characters ("1.234e-05"): the left margin fits it


def _time_label(seconds: float, span: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    if span < 3_600:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%m-%d %H:%M" if span < 5 * 86_400 else "%Y-%m-%d")


def step_chart(series: list[StepSeries], *, title: str, css_class: str,
               width: int = 760, height: int = 300, attrs: dict[str, str] | None = None) -> str:
    """Cumulative step lines over time, each series' limit a dashed line, and the legend
    (series names, as HTML) below the plot, in a ``<figure>``."""
    # margins for the longest tick labels at 11px: 9 characters on the left; half a
    # centred "04-01 12:00" at either end of the time axis
    left, right, top, bottom = 84, 48, 12, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    times = [t for s in series for t, _ in s.points]
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)
    if t1 - t0 < 1.0:
        t0, t1 = t0 - 0.5, t1 + 0.5
    values = [v for s in series for _, v in s.points] + [s.limit or 0.0 for s in series]
    y_ticks = nice_ticks(0.0, max(values + [1e-9]) * 1.05)
    y_max = y_ticks[-1]

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / y_max * plot_h

    extra = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in (attrs or {}).items())
    out = [f'<figure class="chart-figure"{extra}><figcaption class="chart-title">'
           f"{escape(title)}</figcaption>",
           f'<svg class="chart {escape(css_class)}" xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"'
           f'{extra}>', f"<title>{escape(title)}</title>"]
    for v in y_ticks:
        out.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{_num(y(v))}" '
                   f'y2="{_num(y(v))}"/>'
                   f'<text class="tick" x="{left - 6}" y="{_num(y(v) + 4)}" '
                   f'text-anchor="end">{_label(v)}</text>')
    for t in time_ticks(t0, t1):
        out.append(f'<text class="tick" x="{_num(x(t))}" y="{top + plot_h + 18}" '
                   f'text-anchor="middle">{escape(_time_label(t, t1 - t0))}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>'
               f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" '
               f'y2="{top + plot_h}"/>'
               f'<text class="axis-label" x="14" y="{top + plot_h / 2}" '
               f'transform="rotate(-90 14 {top + plot_h / 2})" text-anchor="middle">'
               f'cumulative rho</text>')
    legend = []
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        data = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in s.attrs)
        d = [f"M{_num(x(s.points[0][0]))},{_num(y(0.0))}"]
        for t, v in s.points:
            d.append(f"H{_num(x(t))}V{_num(y(v))}")
        d.append(f"H{_num(x(t1))}")
        out.append(f'<path class="series" fill="none" stroke="{color}" stroke-width="2" '
                   f'd="{"".join(d)}"{data}><title>{escape(s.label)}</title></path>')
        if s.limit is not None:
            out.append(f'<line class="limit" stroke="{color}" stroke-dasharray="5,4" '
                       f'x1="{left}" x2="{left + plot_w}" y1="{_num(y(s.limit))}" '
                       f'y2="{_num(y(s.limit))}"{data}/>')
        legend.append(f'<li class="legend"{data}><span class="swatch" '
                      f'style="background:{color}"></span>{escape(s.label)}</li>')
    out.append("</svg>")
    out.append(f'<ul class="chart-legend">{"".join(legend)}</ul></figure>')
    return "".join(out)


def bar_chart(bars: list[Bar], *, title: str, css_class: str) -> str:
    """Horizontal bars as HTML: the used part coloured, the remaining part pale; label and
    amount are text in their own grid cells (the page's CSS: ``.bars``)."""
    scale = max([b.total if b.total is not None else b.used for b in bars] + [1e-9])
    rows = []
    for b in bars:
        total = 100.0 if b.total is None else b.total / scale * 100
        used = min(b.used / scale * 100, 100.0)
        rows.append(
            f'<div class="bar-label">{escape(b.label)}</div>'
            f'<div class="bar-track"><div class="bar-total" style="width:{_num(total)}%">'
            f'</div><div class="bar-spent" style="width:{_num(used)}%" '
            f'title="{escape(b.text)}"></div></div>'
            f'<div class="bar-value">{escape(b.text)}</div>')
    return (f'<figure class="chart-figure {escape(css_class)}"><figcaption class="chart-title">'
            f'{escape(title)}</figcaption><div class="bars">{"".join(rows)}</div></figure>')
