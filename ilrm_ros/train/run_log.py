"""A training run's log: ``log.csv`` (one row per ``log_every`` steps, means over them)
and ``loss.png`` drawn from it."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from ilrm_ros.render.panels import line_chart
from ilrm_ros.train.step import StepResult

CSV_FIELDS = ["step", "loss", "mse", "ssim", "psnr", "lr", "views", "grad_norm", "sec_per_step",
              "target_images_per_s", "elapsed_s", "depth_log_err"]


def log_row(step: int, acc: Sequence[StepResult], lr: float, sec_per_step: float, images_per_step: int,
            elapsed_s: float) -> dict:
    """The CSV row of ``step``: means of the steps in ``acc`` since the last row, formatted
    (``depth_log_err`` empty when no step had true depth)."""
    depth = [r.depth for r in acc if r.depth is not None]
    return {"step": step,
            "loss": f"{sum(r.loss for r in acc) / len(acc):.6f}",
            "mse": f"{sum(r.mse for r in acc) / len(acc):.6f}",
            "ssim": f"{sum(r.ssim for r in acc) / len(acc):.5f}",
            "psnr": f"{sum(r.psnr for r in acc) / len(acc):.3f}",
            "lr": f"{lr:.3e}",
            "views": f"{sum(r.views for r in acc) / len(acc):.2f}",
            "grad_norm": f"{sum(r.grad_norm for r in acc) / len(acc):.4f}",
            "sec_per_step": f"{sec_per_step:.3f}",
            "target_images_per_s": f"{images_per_step / max(sec_per_step, 1e-9):.2f}",
            "elapsed_s": f"{elapsed_s:.1f}",
            "depth_log_err": f"{sum(depth) / len(depth):.4f}" if depth else ""}


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def truncate_log(path: Path, max_step: int) -> None:
    """Drop rows logged after ``max_step`` (steps redone after a resume)."""
    rows = [r for r in read_log(path) if int(r["step"]) <= max_step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(rows)


def append_log(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def plot_log(csv_path: Path, png_path: Path) -> None:
    rows = read_log(csv_path)
    if not rows:
        return
    xs = [float(r["step"]) for r in rows]
    line_chart(png_path, xs, {"training loss (MSE + lambda*(1-SSIM))": {"loss": [float(r["loss"]) for r in rows]},
                              "training PSNR (dB)": {"psnr": [float(r["psnr"]) for r in rows]}})
