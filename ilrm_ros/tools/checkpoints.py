"""Checkpoint commands: ``ilrm-ros convert`` and ``ilrm-ros checkpoint random|split|join``.

    ilrm-ros convert SRC --out DST [--dtype fp16|bf16|fp32] [--architecture A] [--trust-pickle]
        any layout model.checkpoint accepts -> our format, with the detected config
    ilrm-ros checkpoint random ARCH --out PATH [--seed N] [--dtype ...] [--layout authors|ours]
        N(0, 0.02) weights of a config, written in the authors' layout of re10k/dl3dv or ours
        (tests, GPU checks and interoperability; never a model to map with)
    ilrm-ros checkpoint split SRC --out DIR [--max-mib 16]
        NAME.partNNN (each <= 16 MiB) + NAME.shards.json (sizes, sha256s)
    ilrm-ros checkpoint join DIR/NAME.shards.json [--out PATH]
        the parts back into one file, checked byte for byte (same as cat NAME.part* > NAME)

``ilrm-ros info --checkpoint PATH`` describes a file (ilrm_ros/tools/info.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ilrm_ros.model.checkpoint import SHARD_BYTES, STORAGE_DTYPES, join_shards, save_checkpoint, split_file
from ilrm_ros.model.loading import CheckpointError, load_model_file, random_model
from ilrm_ros.model.official import AUTHORS_ARCHITECTURES, save_authors_layout


def convert(src: Path, dst: Path, dtype: str = "fp32", architecture: str = "auto", trust_pickle: bool = False) -> dict:
    """Rewrite ``src`` in our format at ``dst``; returns what was converted (layout, architecture, sizes)."""
    model, source = load_model_file(src, architecture, "cpu", trust_pickle)
    meta = {"converted_from": str(src), "source_layout": source.layout, "source_model_id": source.model_id,
            **{k: v for k, v in source.meta.items() if k != "converted_from"}}
    save_checkpoint(dst, model, meta, dtype=dtype)
    return {"source": source.summary(), "written": str(dst), "bytes": dst.stat().st_size}


def convert_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ilrm-ros convert", description="Convert any supported checkpoint to our format.")
    ap.add_argument("src", type=Path, help="ours, the authors' .ckpt / .pt, a state dict or .safetensors")
    ap.add_argument("--out", type=Path, required=True, help="destination (.pt)")
    ap.add_argument("--dtype", choices=sorted(STORAGE_DTYPES), default="fp32", help="storage dtype (loads as fp32)")
    ap.add_argument("--architecture", default="auto", help="auto (detected), re10k, dl3dv or a config name / YAML")
    ap.add_argument("--trust-pickle", action="store_true", help="allow Python objects in SRC (trusted files only)")
    args = ap.parse_args(argv)
    try:
        done = convert(args.src, args.out, args.dtype, args.architecture, args.trust_pickle)
    except CheckpointError as exc:
        print(f"ilrm-ros convert: {exc}", file=sys.stderr)
        return 2
    for key, value in done["source"].items():
        print(f"{key:<20} {value}")
    print(f"{'written':<20} {done['written']} ({done['bytes'] / 1e6:.1f} MB, {args.dtype})")
    return 0


def random_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ilrm-ros checkpoint random",
                                 description="Write a random-weight checkpoint (tests, GPU checks); not for mapping.")
    ap.add_argument("architecture", help="re10k, dl3dv or any config name / YAML")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=sorted(STORAGE_DTYPES), default="fp32")
    ap.add_argument("--layout", choices=("authors", "ours"), default="authors",
                    help="the authors' release layout (re10k/dl3dv only) or our format")
    args = ap.parse_args(argv)
    model = random_model(args.architecture, args.seed)
    if args.layout == "authors":
        if args.architecture not in AUTHORS_ARCHITECTURES:
            ap.error(f"--layout authors needs one of {sorted(AUTHORS_ARCHITECTURES)}")
        save_authors_layout(model, args.out, args.architecture, STORAGE_DTYPES[args.dtype])
    else:
        save_checkpoint(args.out, model, {"random_seed": args.seed}, dtype=args.dtype)
    print(f"wrote {args.out} ({args.architecture}, {args.layout} layout, seed {args.seed}, "
          f"{args.out.stat().st_size / 1e6:.1f} MB)")
    return 0


def split_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ilrm-ros checkpoint split",
                                 description="Cut a checkpoint into parts of at most --max-mib MiB + a manifest.")
    ap.add_argument("src", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder for NAME.partNNN and NAME.shards.json")
    ap.add_argument("--max-mib", type=float, default=SHARD_BYTES / 2**20)
    args = ap.parse_args(argv)
    manifest = split_file(args.src, args.out, int(args.max_mib * 2**20))
    print(f"wrote {manifest}")
    return 0


def join_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ilrm-ros checkpoint join",
                                 description="Join the parts of NAME.shards.json back into one checkpoint (checked).")
    ap.add_argument("manifest", type=Path, help="NAME.shards.json (the parts next to it)")
    ap.add_argument("--out", type=Path, help="destination (default: the original name next to the manifest)")
    args = ap.parse_args(argv)
    try:
        dst = join_shards(args.manifest, args.out)
    except (ValueError, FileNotFoundError) as exc:
        print(f"ilrm-ros checkpoint join: {exc}", file=sys.stderr)
        return 2
    print(f"joined {dst} ({dst.stat().st_size / 1e6:.1f} MB)")
    return 0
