"""Line charts and image grids drawn with Pillow (matplotlib is not a dependency): training curves,
map growth, soak benchmarks."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def draw_panel(draw, box: tuple[int, int, int, int], series: list[tuple[str, Sequence[float], Sequence[float], tuple]],
               title: str, xlabel: str, hline: tuple[str, float] | None = None, y_from_zero: bool = True) -> None:
    """One line chart in ``box`` (left, top, right, bottom) of a Pillow ImageDraw.

    series: (label, xs, ys, rgb colour) each; hline: an optional dashed (label, y) line.
    """
    left, top, right, bottom = box
    pl, pt, pr, pb = left + 70, top + 28, right - 15, bottom - 40
    xs_all = [x for _, xs, _, _ in series for x in xs] or [0.0, 1.0]
    ys_all = [y for _, _, ys, _ in series for y in ys] + ([hline[1]] if hline else []) or [0.0, 1.0]
    x0, x1 = min(0.0, min(xs_all)), max(xs_all)
    if y_from_zero:
        y0, y1 = 0.0, max(ys_all) * 1.08 or 1.0
    else:
        lo, hi = min(ys_all), max(ys_all)
        pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 1.0
        y0, y1 = lo - pad, hi + pad
    x1 = x1 if x1 > x0 else x0 + 1.0

    def px(x: float, y: float) -> tuple[float, float]:
        return pl + (x - x0) / (x1 - x0) * (pr - pl), pb - (y - y0) / (y1 - y0) * (pb - pt)

    draw.text((pl, top + 6), title, fill=(0, 0, 0))
    for ty in _nice_ticks(y0, y1):
        _, yy = px(x0, ty)
        draw.line([(pl, yy), (pr, yy)], fill=(225, 225, 225))
        draw.text((left + 5, yy - 6), _fmt(ty), fill=(60, 60, 60))
    for tx in _nice_ticks(x0, x1):
        xx, _ = px(tx, y0)
        draw.line([(xx, pb), (xx, pb + 4)], fill=(0, 0, 0))
        draw.text((xx - 8, pb + 7), _fmt(tx), fill=(60, 60, 60))
    draw.rectangle([pl, pt, pr, pb], outline=(0, 0, 0))
    draw.text(((pl + pr) // 2 - 30, bottom - 18), xlabel, fill=(0, 0, 0))
    if hline:
        _, yy = px(x0, hline[1])
        for xa in range(int(pl), int(pr), 12):
            draw.line([(xa, yy), (min(xa + 6, pr), yy)], fill=(200, 0, 0))
        draw.text((pl + 5, yy - 14), hline[0], fill=(200, 0, 0))
    for label, xs, ys, color in series:
        pts = [px(x, y) for x, y in zip(xs, ys)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
    # Legend at mid height on the right, on a white box so lines do not run through it.
    lx, ly0 = pr - 240, int(pt + 0.45 * (pb - pt))
    draw.rectangle([lx - 6, ly0 - 4, pr - 6, ly0 + 16 * len(series) + 2], fill=(255, 255, 255),
                   outline=(160, 160, 160))
    for i, (label, _, _, color) in enumerate(series):
        ly = ly0 + 16 * i
        draw.line([(lx, ly + 6), (lx + 20, ly + 6)], fill=color, width=3)
        draw.text((lx + 26, ly), label, fill=(0, 0, 0))



def line_chart(path: str | Path, xs: Sequence[float], panels: dict[str, dict[str, Sequence[float]]],
               width: int = 800, panel_height: int = 300, xlabel: str = "step") -> None:
    """Write a PNG with one panel per entry of ``panels`` ({title: {series name: ys}}), shared xs."""
    img = Image.new("RGB", (width, panel_height * max(1, len(panels))), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for i, (title, series) in enumerate(panels.items()):
        lines = [(name, list(xs), [float(y) for y in ys], COLOURS[k % len(COLOURS)])
                 for k, (name, ys) in enumerate(series.items())]
        draw_panel(draw, (0, i * panel_height, width, (i + 1) * panel_height), lines, title, xlabel,
                   y_from_zero=False)
    img.save(path)


def image_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], gap: int = 4,
               row_labels: Sequence[str] | None = None) -> np.ndarray:
    """Tile uint8 images (H, W, 3) into one labelled grid (side-by-side comparisons).

    rows: one list per row, each with ``len(titles)`` images of one size per row; titles
    head the columns; ``row_labels`` (optional) are written into each row's first tile.
    Returns (H_total, W_total, 3) uint8 on a white background.
    """
    if not rows:
        raise ValueError("image_grid needs at least one row")
    ncol = len(titles)
    if any(len(r) != ncol for r in rows):
        raise ValueError(f"every row needs {ncol} images (one per title)")
    cell_h = max(img.shape[0] for r in rows for img in r)
    cell_w = max(img.shape[1] for r in rows for img in r)
    head = 14
    canvas = Image.new("RGB", (ncol * (cell_w + gap) + gap, head + len(rows) * (cell_h + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((gap + c * (cell_w + gap), 1), title, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        y = head + gap + r * (cell_h + gap)
        for c, img in enumerate(row):
            canvas.paste(Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)), (gap + c * (cell_w + gap), y))
        if row_labels is not None:
            draw.text((gap + 2, y + 2), row_labels[r], fill=(255, 255, 0))
    return np.asarray(canvas)
