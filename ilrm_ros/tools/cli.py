"""`ilrm-ros` — the command-line tool.

    ilrm-ros info [--checkpoint PATH]   versions, device, ROS distro; what a checkpoint is
    ilrm-ros convert SRC --out DST      any checkpoint layout -> our format
    ilrm-ros checkpoint split|join ...  checkpoint <-> parts of <= 16 MiB (+ manifest)
    ilrm-ros demo [--out DIR]           the mapping node on an embedded generated sequence
    ilrm-ros data synth ...             generate posed-image datasets (transforms.json / bags)
    ilrm-ros train --config ...         train a model
    ilrm-ros eval --checkpoint ...      evaluate against baselines
    ilrm-ros bag BAG --out DIR          run the mapping core over a rosbag2 bag
    ilrm-ros bench model|render|node|map-soak ...

Each subcommand lives in the module that owns it, as ``cli_main(argv) -> int`` (or the
function named after ``module:``); this
file only dispatches (imports stay lazy so `info` and `--help` are instant).
"""
from __future__ import annotations

import importlib
import logging
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("ilrm_ros.tools.info", "versions, device, ROS distro; --checkpoint PATH: what a checkpoint is"),
    "demo": ("ilrm_ros.tools.demo", "run the mapping node on an embedded generated sequence over DDS"),
    "train": ("ilrm_ros.train.train", "train an iLRM model on generated or transforms.json data"),
    "eval": ("ilrm_ros.train.evaluate", "evaluate a checkpoint against nearest-view / mean-colour baselines"),
    "bag": ("ilrm_ros.tools.bag", "map a rosbag2 bag offline (no DDS)"),
    "convert": ("ilrm_ros.tools.checkpoints:convert_main", "convert any supported checkpoint to our format"),
    "kernels": ("ilrm_ros.tools.kernels", "check (or --build) the compiled CPU kernels (rasterizer, model)"),
}
GROUPS: dict[str, dict[str, tuple[str, str]]] = {
    "checkpoint": {"random": ("ilrm_ros.tools.checkpoints:random_main",
                              "write a random-weight checkpoint in the authors' layout (tests, GPU checks)"),
                   "split": ("ilrm_ros.tools.checkpoints:split_main", "cut a checkpoint into <= 16 MiB parts + manifest"),
                   "join": ("ilrm_ros.tools.checkpoints:join_main", "join checkpoint parts back into one file (checked)")},
    "data": {"synth": ("ilrm_ros.data.synth", "generate procedural indoor scenes (transforms.json and bags)")},
    "bench": {
        "model": ("ilrm_ros.tools.bench.model", "model latency/memory vs views and resolution"),
        "render": ("ilrm_ros.tools.bench.render", "rasterizer latency/memory vs Gaussians and resolution"),
        "node": ("ilrm_ros.tools.bench.node", "mapping-node latency breakdown and memory"),
        "map-soak": ("ilrm_ros.tools.bench.map_soak", "bounded-map soak test over a simulated hour"),
    },
}


def _usage() -> str:
    lines = ["usage: ilrm-ros <command> [args...]", "", "commands:"]
    lines += [f"  {name:<16} {help_}" for name, (_, help_) in COMMANDS.items()]
    for group, subs in GROUPS.items():
        lines += [f"  {group + ' ' + sub:<16} {help_}" for sub, (_, help_) in subs.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in COMMANDS:
        target = COMMANDS[cmd][0]
    elif cmd in GROUPS and rest and rest[0] in GROUPS[cmd]:
        target, rest = GROUPS[cmd][rest[0]][0], rest[1:]
    else:
        print(f"ilrm-ros: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, _, func = target.partition(":")
    return int(getattr(importlib.import_module(module), func or "cli_main")(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
