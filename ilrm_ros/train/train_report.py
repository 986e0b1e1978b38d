"""The report of one ``scripts/gpu_train.sh`` run: ``python -m ilrm_ros.train.train_report OUT WORK [--dry-run]``.

Reads what the script left (OUT/card.json, WORK/steps.tsv, WORK/run/log.csv, WORK/select.json,
WORK/eval/{trained,shipped}_v{V}.json, OUT/*.shards.json) and writes OUT/report.json and
OUT/report.md: the card, each step's seconds, the training steps reached, the validation
choice, and per V the held-out PSNR/SSIM of the trained and shipped models next to the
nearest-view and mean-colour baselines. Missing pieces are reported as missing, not guessed.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

BASELINES = ("nearest_view", "mean_color")


def _json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("missing or unreadable %s: %s", path, exc)
        return None


def read_steps(path: Path) -> list[dict]:
    """Rows ``name, rc, seconds, limit, note`` of the script's steps.tsv."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        name, rc, secs, limit, note = (line.split("\t") + [""] * 5)[:5]
        rows.append({"step": name, "rc": rc, "seconds": float(secs or 0), "limit_s": float(limit or 0), "note": note})
    return rows


def training_summary(log_csv: Path) -> dict:
    """Last logged step, its loss/PSNR and the elapsed seconds of a run's log.csv, and the step
    of the last checkpoint next to it (a run stopped by its time budget saves one unlogged step)."""
    cks = sorted((log_csv.parent / "checkpoints").glob("step_*.pt"))
    last_ckpt = {"last_checkpoint_step": int(cks[-1].stem.split("_")[1])} if cks else {}
    if not log_csv.exists():
        return {"steps": 0, **last_ckpt}
    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {"steps": 0}
    last = rows[-1]
    return {"steps": int(last["step"]), "loss": float(last["loss"]), "train_psnr": float(last["psnr"]),
            "elapsed_s": float(last["elapsed_s"]), "sec_per_step": float(last["sec_per_step"]), **last_ckpt}


def eval_rows(eval_dir: Path, views: list[int]) -> list[dict]:
    """One row per V: PSNR/SSIM of the trained and shipped models and both baselines."""
    rows = []
    for v in views:
        row: dict = {"views": v}
        for name in ("trained", "shipped"):
            rep = _json(eval_dir / f"{name}_v{v}.json")
            row[name] = None if rep is None else {k: rep["model"][k] for k in ("psnr", "ssim")}
            if rep is not None:
                row["scenes"] = len(rep["per_scene"])
                for b in BASELINES:
                    row[b] = {k: rep[b][k] for k in ("psnr", "ssim")}
        rows.append(row)
    return rows


def _cell(d: Optional[dict]) -> str:
    return "missing" if not d else f"{d['psnr']:.2f} / {d['ssim']:.3f}"


def _weights(w: Optional[dict]) -> str:
    if not w:
        return "missing"
    return f"{w['file']} ({w['bytes']} bytes, sha256 {w['sha256'][:12]}) in {len(w['parts'])} parts of <= {w['max_bytes']} bytes"


def format_markdown(report: dict) -> str:
    card = report.get("card") or {}
    lines = [f"# gpu_train report ({'DRY RUN, CPU' if report['dry_run'] else 'GPU'})", "",
             f"- card: {card.get('gpu_name') or card.get('torch_device') or 'no GPU (' + str(card.get('platform')) + ')'}",
             f"- training: {json.dumps(report['training'])}",
             f"- chosen on validation: {report.get('chosen')}",
             f"- weights: {_weights(report.get('weights'))}", "",
             "| V | trained | shipped | nearest view | mean colour | trained - nearest |",
             "|---|---|---|---|---|---|"]
    for r in report["eval"]:
        gain = (f"{r['trained']['psnr'] - r['nearest_view']['psnr']:+.2f} dB"
                if r.get("trained") and r.get("nearest_view") else "n/a")
        lines.append(f"| {r['views']} | {_cell(r.get('trained'))} | {_cell(r.get('shipped'))} | "
                     f"{_cell(r.get('nearest_view'))} | {_cell(r.get('mean_color'))} | {gain} |")
    lines += ["", "PSNR dB / SSIM on held-out scenes.", "", "| step | rc | seconds | limit |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['rc']} | {s['seconds']:.1f} | {s['limit_s']:.0f} |" for s in report["steps"]]
    return "\n".join(lines) + "\n"


def build_report(out_dir: Path, work: Path, views: list[int], dry_run: bool) -> dict:
    select = _json(work / "select.json") or {}
    manifests = sorted(out_dir.glob("*.shards.json"))
    return {"dry_run": dry_run, "card": _json(out_dir / "card.json"), "steps": read_steps(work / "steps.tsv"),
            "training": training_summary(work / "run" / "log.csv"), "chosen": select.get("chosen"),
            "validation": select.get("candidates"), "eval": eval_rows(work / "eval", views),
            "weights": _json(manifests[0]) if manifests else None}


def cli_main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ilrm_ros.train.train_report", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--views", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    report = build_report(args.out_dir, args.work, args.views, args.dry_run)
    (args.out_dir / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    text = format_markdown(report)
    (args.out_dir / "report.md").write_text(text)
    print(text)
    return 0 if report["weights"] and all(r.get("trained") for r in report["eval"]) else 1


if __name__ == "__main__":
    raise SystemExit(cli_main())
