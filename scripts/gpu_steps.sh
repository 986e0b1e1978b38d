# Time-boxed steps for the scripts run on a lent GPU machine (gpu_check.sh, gpu_train.sh).
# Sourced, not run. The caller sets before sourcing:
#   TAG (log prefix), ROOT, DRY (1 = CPU dry run), START, DEADLINE (epoch seconds),
#   RESERVE_S (kept at the end), MIN_STEP_S (a step that would get less is skipped),
#   WORK (logs/ lives there), LOG (the collected log), STEPS (tab-separated step table),
#   TAIL_LINES (lines of a step's log echoed to the console).

say() { echo "[$TAG $(( $(date +%s) - START ))s] $*"; }

pick_python() {  # pick_python [OVERRIDE]: the first candidate with torch (and CUDA unless dry run)
  local c check='import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)'
  (( DRY )) && check='import torch'
  for c in ${1:-} "$ROOT/.venv/bin/python" python3 python; do
    command -v "$c" > /dev/null 2>&1 || continue
    if "$c" -c "$check" > /dev/null 2>&1; then echo "$c"; return 0; fi
  done
  return 1
}

record() {  # record NAME RC SECONDS LIMIT NOTE
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >> "$STEPS"
}

append_log() {  # append_log HEADER FILE: one block per step, serialised between parallel steps
  if command -v flock > /dev/null 2>&1; then
    ( flock 9; { echo "===== $1"; cat "$2"; } >> "$LOG" ) 9> "$WORK/log.lock"
  else
    { echo "===== $1"; cat "$2"; } >> "$LOG"
  fi
}

step() {  # step NAME MAX_SECONDS CMD...: run CMD time-boxed to min(MAX, budget left); returns its rc
  local name=$1 max=$2
  shift 2
  local left=$(( DEADLINE - $(date +%s) - RESERVE_S ))
  local limit=$(( max < left ? max : left ))
  local logf=$WORK/logs/$name.log
  if (( limit < MIN_STEP_S )); then
    record "$name" skip 0 0 "budget spent"
    say "[$name] SKIPPED: budget spent"
    return 99
  fi
  say "[$name] start (limit ${limit}s): $*"
  local t0 rc dt note=""
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" > "$logf" 2>&1
  rc=$?
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  (( rc == 124 || rc == 137 )) && note="timed out after ${limit}s"
  record "$name" "$rc" "$dt" "$limit" "$note"
  append_log "$name (rc $rc, ${dt}s, limit ${limit}s): $*" "$logf"
  tail -n "$TAIL_LINES" "$logf" | sed "s/^/  [$name] /"
  say "[$name] rc=$rc in ${dt}s${note:+ ($note)}"
  return "$rc"
}

skip() {  # skip NAME WHY
  record "$1" skip 0 0 "$2"
  say "[$1] skipped: $2"
}
