#!/usr/bin/env bash
# Train iLRM at the node's 128x128 on one lent GPU (H100/H200, 16 CPU cores), <= 9 minutes.
#
# Device tool invocation (repository root of a copy of the working tree; OUT set by the tool):
#   run(command="bash scripts/gpu_train.sh", carry=["wheels"], timeout_s=570)
# The script's own budget is 510 s (--budget); every step is time-boxed to what is left.
# wheels/ (git-ignored, optional) is filled here by scripts/fetch_gpu_wheels.sh: gsplat is then
# installed into a scratch folder and its kernels compiled while the data is generated; if that
# fails, is not done 60 s after the data (GPU_TRAIN_GSPLAT_WAIT), or there is no wheel, training
# renders with the torch rasterizer on the GPU.
# The machine needs a Python whose torch sees CUDA ($GPU_TRAIN_PYTHON, .venv/bin/python, python3,
# python), numpy, pillow, pyyaml. No network, no ROS.
#
# Steps (each time-boxed; rc per step in report.json):
#   card        nvidia-smi, torch + CUDA                                        -> $OUT/card.json
#   gsplat      install the carried wheel and compile its kernels (in parallel with synth)
#   synth_*     ilrm-ros data synth on all CPUs: training (480 scenes x 32 frames, seed 11),
#               validation (16 x 32, seed 2000) and held-out (24 x 24, seed 1000: the shipped
#               checkpoint's evaluation set), 128x128, npz
#   train       ilrm-ros train --config gpu_128 (V 2..8, windows over the whole 32-frame sequence:
#               wide baselines), from the shipped checkpoint (--from-scratch: random init),
#               time_budget_s = what is left minus RESERVE_AFTER_TRAIN_S
#   select      python -m ilrm_ros.train.select: every kept snapshot and the starting checkpoint
#               scored on the VALIDATION scenes (mean model PSNR over V=2/4/8 in 16-frame windows and
#               V=2/4 in 6-frame ones, the node's narrow windows); the best -> fp16
#   eval_*      ilrm-ros eval V=2/4/8 on the held-out scenes (span 16, 2 targets, as the shipped
#               table), for the chosen and the shipped checkpoints, with both baselines
#   shard       ilrm-ros checkpoint split: $OUT/ilrm_gpu128.pt.partNNN (each <= 16 MiB) + .shards.json
#   join, join_cmp, join_load   ilrm-ros checkpoint join; cmp with the chosen file; ilrm-ros info
#   report      python -m ilrm_ros.train.train_report -> $OUT/report.json, report.md
# $OUT also gets log.txt (every step's output) and train_log.csv. Join the weights back with
#   ilrm-ros checkpoint join OUT/ilrm_gpu128.pt.shards.json --out ilrm_gpu128.pt
# (or `cat ilrm_gpu128.pt.part* > ilrm_gpu128.pt` and compare sha256 with the manifest).
#
# --dry-run: the same steps on the CPU at tiny sizes (32x32 scenes of 12 frames, 4 training,
# 2 validation, 2 held-out; batch 1, 6 s of training stopped by the time budget, a snapshot
# every 5 steps), no gsplat. About 40 s on 2 cores.
#
# Usage: bash scripts/gpu_train.sh [--dry-run] [--from-scratch] [--budget SECONDS] [--out DIR]
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
DRY=0
SCRATCH=0
BUDGET_S=510
OUT_DIR=${OUT:-$ROOT/outputs/gpu_train}
while (( $# )); do
  case $1 in
    --dry-run) DRY=1 ;;
    --from-scratch) SCRATCH=1 ;;
    --budget) BUDGET_S=$2; shift ;;
    --out) OUT_DIR=$2; shift ;;
    -h|--help) sed -n '2,37p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "gpu_train: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $BUDGET_S =~ ^[0-9]+$ ]] || { echo "gpu_train: --budget needs whole seconds, got $BUDGET_S" >&2; exit 2; }

START=$(date +%s)
DEADLINE=$(( START + BUDGET_S ))
RESERVE_S=15                 # kept for the report
RESERVE_AFTER_TRAIN_S=150    # select + eval + shard + join (GPU); the dry run needs less
MIN_STEP_S=5
WORK=${GPU_TRAIN_WORK:-${TMPDIR:-/tmp}/ilrm_gpu_train}
WHEELS=${GPU_TRAIN_WHEELS:-$ROOT/wheels}
GSPLAT_SITE=$WORK/site_gsplat
NAME=ilrm_gpu128.pt
LOG=$OUT_DIR/log.txt
STEPS=$WORK/steps.tsv
VIEWS=(2 4 8)

mkdir -p "$OUT_DIR" "$WORK"
rm -rf "$WORK"/{logs,run,eval,data,site_gsplat,joined,steps.tsv,select.json,"$NAME"}
rm -f "$OUT_DIR"/{card.json,report.json,report.md,log.txt,train_log.csv} "$OUT_DIR/$NAME".*
mkdir -p "$WORK/logs" "$WORK/eval"
: > "$LOG"
: > "$STEPS"

TAG=gpu_train
TAIL_LINES=${GPU_TRAIN_TAIL:-6}
# shellcheck source=scripts/gpu_steps.sh
source "$ROOT/scripts/gpu_steps.sh"  # say, pick_python, record, append_log, step, skip

PY=$(pick_python "${GPU_TRAIN_PYTHON:-}") || { say "no Python with torch$( (( DRY )) || echo ' and CUDA') (set GPU_TRAIN_PYTHON)"; exit 2; }
export PYTHONUNBUFFERED=1 PY WORK WHEELS GSPLAT_SITE DRY
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_EXTENSIONS_DIR=$WORK/torch_extensions
ILRM=("$PY" -m ilrm_ros.tools.cli)
NPROC=$(nproc)
say "python $PY; out $OUT_DIR; work $WORK; budget ${BUDGET_S}s; dry run $DRY; from scratch $SCRATCH; $NPROC CPUs"

# --------------------------------------------------------------------------- sizes
if (( DRY )); then
  DEV=cpu
  RESERVE_AFTER_TRAIN_S=60
  TRAIN_DATA=(--scenes 4 --frames 12 --res 32); VAL_DATA=(--scenes 2 --frames 12 --res 32)
  HELD_DATA=(--scenes 2 --frames 12 --res 32)
  TRAIN_SET=(--set steps=400 --set batch_size=1 --set image_size=[32,32] --set window_span=12 --set ckpt_every=5
             --set log_every=5 --set warmup_steps=1 --set threads=2)
  SPAN=12; SELECT_SPANS=(12 6)
else
  DEV=cuda
  TRAIN_DATA=(--scenes 480 --frames 32 --res 128); VAL_DATA=(--scenes 16 --frames 32 --res 128)
  HELD_DATA=(--scenes 24 --frames 24 --res 128)
  TRAIN_SET=()
  SPAN=16; SELECT_SPANS=(16 6)   # select on wide windows and on the node's narrow ones, as the CPU recipe
fi
(( SCRATCH )) && TRAIN_SET+=(--set "init_from=''")
SHIPPED=ilrm_ros/checkpoints/ilrm_small.pt

install_gsplat() {  # the carried gsplat wheel into its own folder, then compile its kernels once
  local todo
  mapfile -t todo < <("$PY" -m ilrm_ros.tools.bench.gpu_check wheels "$WHEELS" | grep -E '/(gsplat|packaging)-')
  (( ${#todo[@]} )) || { echo "no gsplat wheel to install in $WHEELS"; return 3; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$GSPLAT_SITE" "${todo[@]}" || return 4
  MAX_JOBS=4 PYTHONPATH=$GSPLAT_SITE:$PYTHONPATH "$PY" -m ilrm_ros.tools.bench.gpu_check warm-gsplat "$WORK/gsplat.json"
}
export -f install_gsplat

# --------------------------------------------------------------------------- steps
step card 30 "$PY" -m ilrm_ros.tools.bench.gpu_check card "$OUT_DIR/card.json"
GSPLAT_PID=""
if (( DRY )); then
  record gsplat skip 0 0 "dry run: no CUDA build"
elif [ ! -d "$WHEELS" ]; then
  record gsplat skip 0 0 "no $WHEELS folder: torch rasterizer"
else
  ( step gsplat 200 bash -c install_gsplat ) &
  GSPLAT_PID=$!
fi
WORKERS=$(( NPROC > 4 && ! DRY ? NPROC - 4 : NPROC ))  # 4 cores left to gsplat's compile
step synth_train 120 "${ILRM[@]}" data synth --out "$WORK/data/train" "${TRAIN_DATA[@]}" --seed 11 --format npz \
  --workers "$WORKERS" &&
  step synth_val 30 "${ILRM[@]}" data synth --out "$WORK/data/val" "${VAL_DATA[@]}" --seed 2000 --format npz \
    --workers "$WORKERS" &&
  step synth_heldout 30 "${ILRM[@]}" data synth --out "$WORK/data/heldout" "${HELD_DATA[@]}" --seed 1000 \
    --format npz --workers "$WORKERS"
SYNTH_RC=$?
if [ -n "$GSPLAT_PID" ]; then  # wait at most GPU_TRAIN_GSPLAT_WAIT s more; training must not wait for a slow compile
  for (( i = 0; i < ${GPU_TRAIN_GSPLAT_WAIT:-60}; i++ )); do kill -0 "$GSPLAT_PID" 2> /dev/null || break; sleep 1; done
  if ! kill -0 "$GSPLAT_PID" 2> /dev/null && wait "$GSPLAT_PID"; then
    export PYTHONPATH=$GSPLAT_SITE:$PYTHONPATH; say "gsplat on PYTHONPATH"
  else
    say "gsplat NOT used (failed or still compiling; its step ends at its own limit): the torch rasterizer renders"
  fi
fi
if (( SYNTH_RC == 0 )); then
  TRAIN_S=$(( DEADLINE - $(date +%s) - RESERVE_S - RESERVE_AFTER_TRAIN_S - 45 ))  # 45 s: start-up, loading
  (( TRAIN_S < 10 )) && TRAIN_S=10
  (( DRY )) && TRAIN_S=6  # the dry run proves the stop on the wall-clock budget too
  step train $(( TRAIN_S + 45 )) "${ILRM[@]}" train --config gpu_128 --data "$WORK/data/train" --out "$WORK/run" \
    --set device="$DEV" --set time_budget_s="$TRAIN_S" "${TRAIN_SET[@]}"
  cp "$WORK/run/log.csv" "$OUT_DIR/train_log.csv" 2>/dev/null
  CANDIDATES=()
  (( SCRATCH )) || CANDIDATES=(--candidate "$SHIPPED")
  step select 90 "$PY" -m ilrm_ros.train.select --run "$WORK/run" --data "$WORK/data/val" --views "${VIEWS[@]}" \
    --span "${SELECT_SPANS[@]}" --device "$DEV" --out "$WORK/$NAME" --json "$WORK/select.json" "${CANDIDATES[@]}"
  for v in "${VIEWS[@]}"; do  # held-out V=2/4/8 for the chosen and the shipped checkpoints
    for which in trained shipped; do
      ckpt=$SHIPPED
      [ "$which" = trained ] && ckpt=$WORK/$NAME
      [ -f "$ckpt" ] && step "eval_${which}_v$v" 40 "${ILRM[@]}" eval --checkpoint "$ckpt" --data "$WORK/data/heldout" \
        --views "$v" --targets 2 --span "$SPAN" --device "$DEV" --json "$WORK/eval/${which}_v$v.json"
    done
  done
  # the weights in $OUT as parts of <= 16 MiB; they must join back to the chosen file byte for byte and load
  [ -f "$WORK/$NAME" ] && step shard 30 "${ILRM[@]}" checkpoint split "$WORK/$NAME" --out "$OUT_DIR" --max-mib 16 &&
    step join 30 "${ILRM[@]}" checkpoint join "$OUT_DIR/$NAME.shards.json" --out "$WORK/joined/$NAME" &&
    step join_cmp 10 cmp "$WORK/joined/$NAME" "$WORK/$NAME" &&
    step join_load 30 "${ILRM[@]}" info --checkpoint "$WORK/joined/$NAME"
else
  say "no data: training skipped"
fi

dry_flag=()
(( DRY )) && dry_flag=(--dry-run)
timeout -k 5 "$RESERVE_S" "$PY" -m ilrm_ros.train.train_report "$OUT_DIR" "$WORK" --views "${VIEWS[@]}" \
  "${dry_flag[@]}" > "$WORK/logs/report.log" 2>&1
REPORT_RC=$?
{ echo "===== report (rc $REPORT_RC)"; cat "$WORK/logs/report.log"; } >> "$LOG"
grep -v '^INFO ' "$WORK/logs/report.log"
say "done in $(( $(date +%s) - START ))s; files in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')"

failed=$(awk -F'\t' '$2 != "0" && $2 != "skip" { print $1 }' "$STEPS" | tr '\n' ' ')
if [ -n "$failed" ] || (( REPORT_RC != 0 )); then
  say "failed steps: ${failed:-none} (report rc $REPORT_RC)"
  exit 1
fi
exit 0
