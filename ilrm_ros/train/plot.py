"""A minimal line chart drawn with Pillow (matplotlib is not a dependency)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], xs: Sequence[float],
           series: dict[str, Sequence[float]], title: str) -> None:
    x0, y0, x1, y1 = box
    left, bottom = x0 + 60, y1 - 30
    top, right = y0 + 25, x1 - 15
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    draw.text((left, y0 + 5), title, fill=(0, 0, 0))
    vals = [v for s in series.values() for v in s if math.isfinite(v)]
    if not xs or not vals:
        return
    xmin, xmax = min(xs), max(xs)
    ymin, ymax = min(vals), max(vals)
    if xmax == xmin:
        xmax = xmin + 1
    if ymax == ymin:
        ymax = ymin + 1e-6 + abs(ymin) * 0.01
    pad = 0.05 * (ymax - ymin)
    ymin, ymax = ymin - pad, ymax + pad

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - xmin) / (xmax - xmin) * (right - left),
                bottom - (y - ymin) / (ymax - ymin) * (bottom - top))

    for t in _nice_ticks(ymin, ymax):
        _, yy = px(xmin, t)
        draw.line([left - 4, yy, left, yy], fill=(0, 0, 0))
        draw.line([left, yy, right, yy], fill=(225, 225, 225))
        draw.text((x0 + 2, yy - 6), f"{t:.4g}", fill=(0, 0, 0))
    for t in _nice_ticks(xmin, xmax):
        xx, _ = px(t, ymin)
        draw.line([xx, bottom, xx, bottom + 4], fill=(0, 0, 0))
        draw.text((xx - 12, bottom + 8), f"{t:.0f}", fill=(0, 0, 0))
    for k, (name, ys) in enumerate(series.items()):
        col = _COLOURS[k % len(_COLOURS)]
        pts = [px(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
        if len(pts) > 1:
            draw.line(pts, fill=col, width=2)
        draw.text((right - 120, top + 5 + 14 * k), name, fill=col)


def line_chart(path: str | Path, xs: Sequence[float], panels: dict[str, dict[str, Sequence[float]]],
               width: int = 800, panel_height: int = 300) -> None:
    """Write a PNG with one panel per entry of ``panels`` ({title: {series name: ys}})."""
    img = Image.new("RGB", (width, panel_height * max(1, len(panels))), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, (title, series) in enumerate(panels.items()):
        _panel(draw, (0, i * panel_height, width, (i + 1) * panel_height), xs, series, title)
    img.save(path)
