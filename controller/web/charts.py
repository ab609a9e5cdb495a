"""Chart geometry for server-drawn SVG: no script, no CDN, nothing the CSP must allow.

Pure: numbers in, coordinates out. The template macros in `_charts.html`
draw them (autoescaped), with colours from xaso.css classes, never `style=`
(the Content-Security-Policy forbids inline style).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.fleet.queries import Point

W, H = 640, 180
PAD_L, PAD_R, PAD_T, PAD_B = 52, 12, 10, 24
BAR_ROW, BAR_NAME_W = 22, 150


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass
class LineChart:
    title: str
    width: int = W
    height: int = H
    bands: list[str] = field(default_factory=list)  # min-max polygons
    lines: list[str] = field(default_factory=list)  # average polylines
    dots: list[tuple[float, float]] = field(default_factory=list)  # runs of one bucket
    labels: list[Label] = field(default_factory=list)
    plot: tuple[int, int, int, int] = (PAD_L, PAD_T, W - PAD_L - PAD_R, H - PAD_T - PAD_B)


@dataclass(frozen=True)
class Bar:
    y: float
    width: float
    name: str
    value: str


@dataclass
class BarChart:
    title: str
    height: int
    bars: list[Bar]
    width: int = W
    name_w: int = BAR_NAME_W
    row_h: int = BAR_ROW


def _fmt(v: float) -> str:
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"


def line_chart(
    points: Sequence[Point],
    start_ms: int,
    end_ms: int,
    title: str,
    time_label: Callable[[int], str],
) -> LineChart:
    """The average as a line over its min-max band; a gap of over 2 buckets breaks the line."""
    chart = LineChart(title)
    if not points:
        return chart
    lo = min(p.min for p in points)
    hi = max(p.max for p in points)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    span = max(end_ms - start_ms, 1)

    def xy(ms: int, v: float) -> tuple[float, float]:
        x = PAD_L + (ms - start_ms) / span * (W - PAD_L - PAD_R)
        return round(x, 1), round(PAD_T + (hi - v) / (hi - lo) * (H - PAD_T - PAD_B), 1)

    def path(run: Sequence[Point], value: Callable[[Point], float]) -> str:
        return " ".join("{},{}".format(*xy(p.bucket_ms, value(p))) for p in run)

    gaps = [b.bucket_ms - a.bucket_ms for a, b in itertools.pairwise(points)]
    step = min(gaps, default=0)
    runs: list[list[Point]] = [[points[0]]]
    for gap, cur in zip(gaps, points[1:], strict=True):
        if gap > 2 * step:
            runs.append([])
        runs[-1].append(cur)
    for run in runs:
        upper = path(run, lambda p: p.max)
        chart.bands.append(f"{upper} {path(run[::-1], lambda p: p.min)}")
        chart.lines.append(path(run, lambda p: p.avg))
        if len(run) == 1:
            chart.dots.append(xy(run[0].bucket_ms, run[0].avg))
    chart.labels = [
        Label(PAD_L - 4, PAD_T + 10, _fmt(hi), "end"),
        Label(PAD_L - 4, H - PAD_B, _fmt(lo), "end"),
        Label(PAD_L, H - 6, time_label(start_ms)),
        Label(W - PAD_R, H - 6, time_label(end_ms), "end"),
    ]
    return chart


def bar_chart(values: Sequence[tuple[str, float]], title: str, unit: str = "") -> BarChart:
    """Horizontal bars, one per key, scaled to the largest value."""
    top = max((v for _, v in values), default=0) or 1
    room = W - BAR_NAME_W - 90
    bars = [
        Bar(4 + i * BAR_ROW, round(v / top * room, 1), name[:24], f"{_fmt(v)}{unit}")
        for i, (name, v) in enumerate(values)
    ]
    return BarChart(title, BAR_ROW * len(values) + 8, bars)
