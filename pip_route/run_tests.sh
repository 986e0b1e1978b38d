#!/usr/bin/env bash
# Run the test suite in the pip-route venv. ROS traffic stays on localhost on a random
# domain; pytest's exit code 5 ("no tests collected") counts as a failure here, because
# this suite always has tests and collecting none means something is broken.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 1 ))}
export PYTHONUNBUFFERED=1
echo "[test] ROS_DOMAIN_ID=$ROS_DOMAIN_ID"
.venv/bin/python -m pytest -q --durations=15 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "[test] pytest collected no tests (exit code 5): treating as failure" >&2
  exit 1
fi
exit "$rc"
