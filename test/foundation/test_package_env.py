"""What importing ilrm_ros sets for the process (ilrm_ros/__init__.py): thread runtimes that suit shared cores."""
from __future__ import annotations

import os
import subprocess
import sys

_PROBE = "import os, ilrm_ros; print(os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_NUM_THREADS'])"


def _run(env: dict[str, str]) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True, timeout=60)
    return out.stdout.split()


def test_idle_openmp_threads_sleep_and_openblas_runs_on_one_thread_by_default():
    assert _run({}) == ["PASSIVE", "1"]


def test_explicit_settings_in_the_environment_win():
    assert _run({"OMP_WAIT_POLICY": "ACTIVE", "OPENBLAS_NUM_THREADS": "2"}) == ["ACTIVE", "2"]
