"""Tiny inline-SVG charts for the audit report: no plotting library, no external resources.

Every element carries a class (and ``data-*`` attributes) so tests and auditors' tools can
find the plotted series in the rendered page.
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
    return f"{value:.6g}"


def _time_label(seconds: float, span: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    if span < 3_600:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%m-%d %H:%M" if span < 5 * 86_400 else "%Y-%m-%d")


def step_chart(series: list[StepSeries], *, title: str, css_class: str,
               width: int = 760, height: int = 320, attrs: dict[str, str] | None = None) -> str:
    """Cumulative step lines over time, with each series' limit as a dashed line."""
    left, right, top, bottom = 64, 190, 34, 44
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
    out = [f'<svg class="chart {escape(css_class)}" xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img"'
           f'{extra}>', f"<title>{escape(title)}</title>",
           f'<text x="{left}" y="20" class="chart-title">{escape(title)}</text>']
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
        ly = top + 6 + 18 * i
        out.append(f'<rect class="legend-swatch" x="{left + plot_w + 14}" y="{ly}" width="12" '
                   f'height="12" fill="{color}"/><text class="legend" '
                   f'x="{left + plot_w + 32}" y="{ly + 10}">{escape(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(bars: list[Bar], *, title: str, css_class: str, width: int = 760) -> str:
    """Horizontal bars: the used part coloured, the remaining part pale."""
    left, right, top, row = 230, 150, 34, 26
    plot_w = width - left - right
    height = top + row * max(len(bars), 1) + 16
    scale = max([b.total if b.total is not None else b.used for b in bars] + [1e-9])
    out = [f'<svg class="chart {escape(css_class)}" xmlns="http://www.w3.org/2000/svg" '
           f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
           f"<title>{escape(title)}</title>",
           f'<text x="{left}" y="20" class="chart-title">{escape(title)}</text>']
    for i, b in enumerate(bars):
        y = top + i * row
        used_w = b.used / scale * plot_w
        out.append(f'<text class="bar-label" x="{left - 8}" y="{y + 15}" text-anchor="end">'
                   f"{escape(b.label)}</text>")
        if b.total is not None:
            out.append(f'<rect class="bar-total" x="{left}" y="{y + 3}" '
                       f'width="{_num(b.total / scale * plot_w)}" height="16" fill="#e6eef7"/>')
        out.append(f'<rect class="bar-spent" x="{left}" y="{y + 3}" width="{_num(used_w)}" '
                   f'height="16" fill="{PALETTE[0]}"><title>{escape(b.text)}</title></rect>')
        out.append(f'<text class="bar-value" x="{left + plot_w + 8}" y="{y + 15}">'
                   f"{escape(b.text)}</text>")
    out.append("</svg>")
    return "".join(out)
