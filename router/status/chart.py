"""A deployment's latency over the last minutes as a small inline SVG (no charting library,
no script: the first paint has it). router/status/static/status.js draws the same picture
from `/status.json` with the same scale (its `chart`), so a refresh does not jump.

The x axis spans the whole series (every step, quiet ones too: policies/recent_calls.py),
so a line's position says when; a run of steps with calls is a line, a lone step a dot,
quiet steps a gap; a step with failures gets a red tick under the axis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from router.status.numbers import fixed

WIDTH = 160
HEIGHT = 36
PAD = 2
BASE = HEIGHT - 5  # the axis; failure ticks below it


def latency_svg(history: Sequence[Mapping[str, Any]]) -> str:
    """`history`: `{"t": seconds, "p50_ms": number | None, "failures": n}` steps, oldest
    first. The y axis runs from 0 to the window's highest p50, so a slow step stands out."""
    values = [float(p["p50_ms"]) for p in history if _number(p.get("p50_ms"))]
    open_tag = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        'role="img" '
    )
    if not values:
        return (
            f'{open_tag}aria-label="no calls yet"><text x="{WIDTH // 2}" y="{HEIGHT // 2 + 4}" '
            'text-anchor="middle">no calls</text></svg>'
        )
    t0 = float(history[0]["t"])
    span = max(float(history[-1]["t"]) - t0, 1.0)
    top = max(values) or 1.0

    def x(point: Mapping[str, Any]) -> str:
        return fixed(PAD + (float(point["t"]) - t0) / span * (WIDTH - 2 * PAD), 1)

    def y(ms: float) -> str:
        return fixed(BASE - ms / top * (BASE - PAD), 1)

    marks = [f'<line class="axis" x1="{PAD}" y1="{BASE}" x2="{WIDTH - PAD}" y2="{BASE}"/>']
    for run in _runs(history):
        if len(run) == 1:
            marks.append(f'<circle cx="{x(run[0])}" cy="{y(run[0]["p50_ms"])}" r="2"/>')
        else:
            coords = " ".join(f"{x(p)},{y(p['p50_ms'])}" for p in run)
            marks.append(f'<polyline points="{coords}"/>')
    marks.extend(
        f'<line class="failed" x1="{x(p)}" y1="{BASE + 1}" x2="{x(p)}" y2="{HEIGHT}"/>'
        for p in history
        if _number(p.get("failures")) and p["failures"] > 0
    )
    label = f"p50 latency, highest {fixed(top, 0)} ms"
    return f'{open_tag}aria-label="{label}"><title>{label}</title>{"".join(marks)}</svg>'


def _runs(history: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Consecutive steps with a latency, quiet steps between them dropped."""
    runs: list[list[Mapping[str, Any]]] = [[]]
    for point in history:
        if _number(point.get("p50_ms")):
            runs[-1].append(point)
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
