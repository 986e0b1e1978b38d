"""Helpers of ``scripts/gpu_check.sh`` (the prepared GPU check, issue 11 item 4).

Subcommands (``python -m ilrm_ros.tools.bench.gpu_check SUB ...``); each writes JSON and logs
with severities, and none needs ROS:

    card OUT.json                       the card (nvidia-smi), torch/CUDA, nvcc, Python, CPUs
    wheels DIR [--force NAME ...]       print the wheels in DIR whose distribution is not
                                        installed (one path a line; --force lists NAME anyway)
    warm-gsplat OUT.json                compile gsplat's CUDA kernels (first use) and time it,
                                        then time a first and a second small rasterization
    cli [--no-ros] ARGS...              ``ilrm-ros ARGS...`` with the ROS Python modules made
                                        unimportable (proves the tool is ROS-free)
    bag-report OUT.json PNG NAME=DIR... per window of each bag run: keyframe-in -> chunks-out;
                                        one PNG of held-out renders (render | truth) of all runs
    summary OUTDIR WORKDIR              bench JSONs merged into OUTDIR/bench.json; the issue's GPU
                                        targets next to the measurements, pass/fail; summary.json

The work behind them: :mod:`.gpu_env` (card, wheels, gsplat, the ROS-free CLI) and
:mod:`.gpu_report` (bag runs, targets, summary).

Targets (issue 11, H100/H200 class): re10k 2x256² forward + render <= 10 ms; dl3dv 32 views
forward <= 0.35 s; a window's keyframe-in -> chunks-out <= 50 ms with re10k.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ilrm_ros.tools.bench.gpu_env import card_info, run_cli, warm_gsplat, wheels_to_install
from ilrm_ros.tools.bench.gpu_report import bag_summary, build_summary, format_summary, renders_png, write_json

log = logging.getLogger("gpu_check")


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["cli"]:  # everything after the flag goes to ilrm-ros untouched
        rest = argv[1:]
        no_ros = bool(rest[:1] == ["--no-ros"])
        return run_cli(rest[1:] if no_ros else rest, no_ros)
    ap = argparse.ArgumentParser(prog="python -m ilrm_ros.tools.bench.gpu_check", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("card")
    p.add_argument("out", type=Path)
    p = sub.add_parser("wheels")
    p.add_argument("folder", type=Path)
    p.add_argument("--force", nargs="*", default=[])
    p = sub.add_parser("warm-gsplat")
    p.add_argument("out", type=Path)
    p = sub.add_parser("bag-report")
    p.add_argument("out", type=Path)
    p.add_argument("png", type=Path)
    p.add_argument("runs", nargs="+", help="NAME=DIR of each `ilrm-ros bag` output")
    p = sub.add_parser("summary")
    p.add_argument("out_dir", type=Path)
    p.add_argument("work", type=Path)
    p.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)

    if args.cmd == "card":
        info = card_info()
        write_json(args.out, info)
        print(json.dumps(info, indent=1, default=str))
        return 0
    if args.cmd == "wheels":
        for path in wheels_to_install(args.folder, tuple(args.force)):
            print(path)
        return 0
    if args.cmd == "warm-gsplat":
        result = warm_gsplat()
        write_json(args.out, result)
        (log.info if result["ok"] else log.error)("gsplat: %s", json.dumps(result))
        return 0 if result["ok"] else 1
    if args.cmd == "bag-report":
        runs = [(r.partition("=")[0], Path(r.partition("=")[2])) for r in args.runs]
        summaries = {name: bag_summary(name, d) for name, d in runs}
        png_ok = renders_png([(f"{n} (map {summaries[n]['map_gaussians']} Gaussians)", d) for n, d in runs
                              if summaries[n]["ok"]], args.png)
        write_json(args.out, {"runs": summaries, "png": str(args.png) if png_ok else None})
        return 0 if png_ok and all(s["ok"] for s in summaries.values()) else 1
    summary = build_summary(args.out_dir, args.work, args.dry_run)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
