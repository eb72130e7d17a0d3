"""The one scatter plot of accuracy against p50 latency, as inline SVG: the report's variants and a
size sweep's students are both drawn with it (ticks on both axes, a ring around what ships)."""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    label: str
    p50_ms: float
    accuracy: float
    color: str = "steelblue"
    ringed: bool = False  # what ships


def scatter_svg(points: list[Point], accuracy_label: str = "accuracy", max_latency_ms: float = 0.0,
                min_accuracy: float = 0.0, front: list[Point] | None = None, width: int = 640,
                height: int = 400) -> str:
    """Accuracy (y) against p50 latency (x, from 0); dashed red lines at the budgets (0: none), a
    polyline through `front` (a Pareto front), labels stepped down so that coinciding points stay
    readable."""
    pad = 60
    if not points:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
                '<text x="20" y="40">nothing was measured</text></svg>\n')
    x_hi = max([p.p50_ms for p in points] + [max_latency_ms]) * 1.15 or 1.0
    ys = [p.accuracy for p in points] + ([min_accuracy] if min_accuracy else [])
    y_lo, y_hi = min(ys) - 0.01, min(1.0, max(ys) + 0.01)

    def px(x: float) -> float:
        return pad + x / x_hi * (width - 2 * pad)

    def py(y: float) -> float:
        return height - pad - (y - y_lo) / ((y_hi - y_lo) or 1) * (height - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
             f'<text x="{width / 2}" y="{height - 15}" text-anchor="middle">p50 latency (ms)</text>',
             f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">'
             f'{html.escape(accuracy_label)}</text>']
    for value in (0.0, x_hi / 2, x_hi):
        parts.append(f'<text class="tick" x="{px(value):.1f}" y="{height - pad + 18}" text-anchor="middle">'
                     f'{value:.3g}</text>')
    for value in (y_lo, (y_lo + y_hi) / 2, y_hi):
        parts.append(f'<text class="tick" x="{pad - 6}" y="{py(value) + 4:.1f}" text-anchor="end">{value:.3f}</text>')
    if max_latency_ms:
        parts.append(f'<line x1="{px(max_latency_ms):.1f}" y1="{pad}" x2="{px(max_latency_ms):.1f}" '
                     f'y2="{height - pad}" stroke="red" stroke-dasharray="4"/>')
    if min_accuracy:
        parts.append(f'<line x1="{pad}" y1="{py(min_accuracy):.1f}" x2="{width - pad}" y2="{py(min_accuracy):.1f}" '
                     'stroke="red" stroke-dasharray="4"/>')
    if front and len(front) > 1:
        line = " ".join(f"{px(p.p50_ms):.1f},{py(p.accuracy):.1f}" for p in sorted(front, key=lambda p: p.p50_ms))
        parts.append(f'<polyline points="{line}" fill="none" stroke="steelblue"/>')
    for i, p in enumerate(points):
        x, y = px(p.p50_ms), py(p.accuracy)
        parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{p.color}"/>')
        parts.append(f'<text x="{x + 10:.1f}" y="{y + 4 + 14 * (i % 4):.1f}" fill="{p.color}">{html.escape(p.label)}</text>')
        if p.ringed:
            parts.append(f'<circle class="shipped" cx="{x:.1f}" cy="{y:.1f}" r="11" fill="none" stroke="green" '
                         'stroke-width="2"/>')
    return "\n".join(parts + ["</svg>"]) + "\n"
