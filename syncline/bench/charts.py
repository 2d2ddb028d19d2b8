"""SVG charts of a ``syncline bench`` JSON document: each figure against its peers.

Hand-written SVG (no plotting dependency): one line per system over a categorical x
axis (the sizes the run measured, evenly spaced), a linear y axis from 0, a legend.
``python -m syncline.bench.charts out.json docs/benchmarks`` redraws them from a file.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import orjson

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 70, 190, 40, 50
COLORS = ("#d1495b", "#00798c", "#edae49", "#30638e", "#66a182", "#8d96a3", "#6a4c93")


@dataclass(frozen=True)
class Chart:
    """Which figure of which scenario, against which parameter."""

    name: str
    scenario: str
    x: str
    metric: str
    title: str
    unit: str
    systems: tuple[str, ...] = ()
    """Only these systems (default: every system with the metric)."""


CHARTS = (
    Chart(
        "fanout-throughput",
        "fanout",
        "subscribers",
        "delivered_per_s",
        "Fan-out throughput (higher is better)",
        "deliveries/s",
    ),
    Chart(
        "fanout-p99",
        "fanout",
        "subscribers",
        "p99_ms",
        "Fan-out p99 commit-to-delivery at 100 changes/s (lower is better)",
        "ms",
    ),
    Chart(
        "mutations",
        "mutations",
        "writers",
        "mutations_per_s",
        "Durable mutations/s against writers (higher is better)",
        "mutations/s",
    ),
    Chart(
        "connections-kb",
        "connections",
        "connections",
        "kb_per_conn",
        "Memory per idle subscribed connection (lower is better)",
        "KB/connection",
    ),
    Chart(
        "ssr-render",
        "ssr",
        "records",
        "render_ms",
        "SSR render of the TodoMVC page (lower is better)",
        "ms",
        ("syncline (todomvc)", "ssr-naive"),
    ),
    Chart(
        "hydrate",
        "ssr",
        "records",
        "hydrate_ms",
        "DOMContentLoaded to live, TodoMVC (lower is better)",
        "ms",
        ("syncline (todomvc)", "hydrate-naive"),
    ),
)


def series(document: dict[str, Any], chart: Chart) -> dict[str, dict[Any, float]]:
    """system -> {x value: metric}, for the rows of ``chart``'s scenario that have it."""
    out: dict[str, dict[Any, float]] = {}
    for row in document.get("results", []):
        if row["scenario"] != chart.scenario or (
            chart.systems and row["system"] not in chart.systems
        ):
            continue
        value = row["metrics"].get(chart.metric)
        x = row["params"].get(chart.x)
        if value is None or x is None or math.isnan(value):
            continue
        out.setdefault(row["system"], {})[x] = float(value)
    return out


def _nice_top(value: float) -> float:
    """A round axis maximum at or above ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)


def _label(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def svg(chart: Chart, data: dict[str, dict[Any, float]]) -> str:
    """The chart as a standalone SVG document."""
    xs = sorted({x for points in data.values() for x in points})
    top = _nice_top(max((v for points in data.values() for v in points.values()), default=1.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / len(xs) if xs else 0)

    def py(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
        f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{escape(chart.title)}</text>',
    ]
    for k in range(5):
        v = top * k / 4
        y = py(v)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#ddd"/>'
        )
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_label(v)}</text>')
    for i, x in enumerate(xs):
        parts.append(
            f'<text x="{px(i):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{x:,}</text>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle">'
        f"{escape(chart.x)}</text>"
    )
    parts.append(
        f'<text x="16" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2:.1f})">{escape(chart.unit)}</text>'
    )
    parts.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
        'stroke="#333"/>'
    )
    for n, (system, points) in enumerate(data.items()):
        color = COLORS[n % len(COLORS)]
        coords = [(px(xs.index(x)), py(v), v) for x, v in sorted(points.items())]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
        dy = -5 if n % 2 == 0 else 13  # labels of alternate series above / below
        for x, y, v in coords:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>')
            parts.append(
                f'<text x="{x + 5:.1f}" y="{y + dy:.1f}" font-size="10" fill="{color}">'
                f"{_label(v)}</text>"
            )
        ly = TOP + 14 + 18 * n
        lx = LEFT + plot_w + 16
        parts.append(f'<rect x="{lx}" y="{ly - 9}" width="12" height="12" fill="{color}"/>')
        parts.append(f'<text x="{lx + 18}" y="{ly + 1}">{escape(system)}</text>')
    if not data:
        parts.append(
            f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}" '
            'text-anchor="middle">not measured in this run</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_charts(document: dict[str, Any], directory: Path) -> list[Path]:
    """Write every chart that has data in ``document`` to ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for chart in CHARTS:
        data = series(document, chart)
        if not data:
            continue
        path = directory / f"{chart.name}.svg"
        path.write_text(svg(chart, data))
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m syncline.bench.charts BENCH.json DIRECTORY", file=sys.stderr)
        return 2
    document = orjson.loads(Path(argv[0]).read_bytes())
    for path in write_charts(document, Path(argv[1])):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
