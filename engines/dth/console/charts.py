"""The detail page's chart: a small inline SVG, drawn from Prometheus' history of the task's metrics when a
Prometheus is configured (otherwise the page draws the live series since it opened, in console.js)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

WIDTH, HEIGHT = 600, 160


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[tuple[float, float], ...]


async def prometheus_series(base_url: str, namespace: str, name: str, hours: float = 6.0) -> list[Series]:
    """Objects and bytes copied (the operator's dth_task_objects and dth_task_bytes) over the last hours."""
    end = time.time()
    start = end - hours * 3600
    step = max(1, int(hours * 3600 / 240))  # about 240 points whatever the span
    found: list[Series] = []
    async with httpx.AsyncClient(timeout=10.0) as client:
        for metric, label in (("dth_task_objects", "objects copied"), ("dth_task_bytes", "bytes copied")):
            query = f'{metric}{{namespace="{namespace}",name="{name}",outcome="copied"}}'
            response = await client.get(
                f"{base_url}/api/v1/query_range",
                params={"query": query, "start": str(start), "end": str(end), "step": str(step)},
            )
            response.raise_for_status()
            for result in response.json().get("data", {}).get("result", []):
                points = tuple((float(t), float(v)) for t, v in result.get("values", []))
                found.append(Series(label, points))
    return found


def polyline(points: tuple[tuple[float, float], ...]) -> str:
    """The SVG points of a series scaled into the chart's box."""
    if not points:
        return ""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1
    y1 = max(ys) or 1
    span = (x1 - x0) or 1
    return " ".join(f"{(x - x0) / span * WIDTH:.1f},{HEIGHT - y / y1 * (HEIGHT - 10):.1f}" for x, y in points)
