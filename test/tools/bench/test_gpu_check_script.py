"""scripts/gpu_check.sh (the prepared GPU check) and its helpers in ilrm_ros.tools.bench:
gpu_check (the CLI the script calls), gpu_env and gpu_report.

Here: the script parses (``bash -n``), runs every step of the issue time-boxed, names the
device-tool invocation, and its helper picks wheels, blocks ROS, computes latencies and
target verdicts. The whole ``--dry-run`` (about 2 minutes on 2 cores: two full-size random
checkpoints, benchmarks and two bag runs on the CPU) runs only with
ILRM_GPU_CHECK_DRYRUN=1, not in CI.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ilrm_ros.tools.bench import gpu_env, gpu_report

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"

#: Every step the issue asks for, in the order the script runs them.
EXPECTED_STEPS = ["card", "wheels", "gsplat", "ckpt_re10k", "ckpt_dl3dv", "synth", "gpu_tests", "bench_re10k",
                  "bench_dl3dv", "bag_re10k", "bag_dl3dv", "bag_report", "bench_cpu"]


def _script() -> str:
    """The script and the step library it sources (scripts/gpu_steps.sh: step(), the time boxes)."""
    return SCRIPT.read_text() + (SCRIPT.parent / "gpu_steps.sh").read_text()


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_step_is_time_boxed_and_the_budget_fits_the_device_call():
    text = _script()
    calls = re.findall(r"^\s*(?:\( export [^;]*; )?(step|skip) (\w+)(?: (\d+))?", text, re.M)
    names = list(dict.fromkeys(name for _, name, _ in calls))
    assert names == EXPECTED_STEPS
    limits = {name: int(limit) for kind, name, limit in calls if kind == "step"}
    assert set(limits) == set(EXPECTED_STEPS)
    budget = int(re.search(r"^BUDGET_S=(\d+)", text, re.M).group(1))
    assert budget <= 480 and all(0 < v <= budget for v in limits.values())
    # the header names the exact device call, with a timeout above the script's budget
    m = re.search(r'run\(command="bash scripts/gpu_check.sh", carry=\["wheels"\], timeout_s=(\d+)\)', text)
    assert m and budget < int(m.group(1)) <= 600
    assert 'timeout -k 10 "$limit"' in text  # how step() bounds each command


def test_wheels_folder_is_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "-q", "wheels/gsplat-1.5.3-py3-none-any.whl"], cwd=ROOT)
    assert out.returncode == 0


def test_wheel_selection_installs_only_missing_distributions(tmp_path):
    for name in ("numpy-2.0.0-cp312-cp312-manylinux_2_17_x86_64.whl", "ruamel_yaml-0.19.1-py3-none-any.whl",
                 "surely_not_installed_pkg-1.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    assert gpu_env.wheel_distribution(Path("backports_zstd-1.8.0-cp312-cp312-x.whl")) == "backports-zstd"
    todo = [p.name for p in gpu_env.wheels_to_install(tmp_path)]
    assert "surely_not_installed_pkg-1.0-py3-none-any.whl" in todo
    assert not any(n.startswith("numpy") for n in todo)
    assert any(n.startswith("numpy") for n in (p.name for p in gpu_env.wheels_to_install(tmp_path, ("numpy",))))


def test_bag_tool_and_bench_import_without_ros():
    code = ("from ilrm_ros.tools.bench import gpu_env; gpu_env.block_ros()\n"
            "import ilrm_ros.tools.bag, ilrm_ros.mapping.mapper, ilrm_ros.io.bags, ilrm_ros.data.synth\n"
            "import ilrm_ros.tools.bench.model, ilrm_ros.tools.checkpoints, ilrm_ros.tools.cli\n"
            "try:\n    import rclpy\nexcept ModuleNotFoundError:\n    print('blocked')\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "blocked"


def test_window_latency_leaves_out_the_warm_up_window():
    windows = [{"queued_s": 0.5, "process_s": 1.0, "model_s": 0.9, "integrate_s": 0.1}] + [
        {"queued_s": 0.001, "process_s": p, "model_s": p - 0.01, "integrate_s": 0.01} for p in (0.02, 0.04, 0.03)]
    lat = gpu_report.window_latency(windows)
    assert lat.windows == 4 and lat.first_s == pytest.approx(1.5)
    assert lat.steady_median_s == pytest.approx(0.031) and lat.steady_max_s == pytest.approx(0.041)
    assert lat.model_median_s == pytest.approx(0.02)


def test_targets_pass_and_fail_against_the_issue_limits():
    def case(views, h, w, model_ms, render_ms):
        return {"device": "cuda", "views": views, "height": h, "width": w, "model_ms": model_ms,
                "render_ms": render_ms, "render_backend": "gsplat", "peak_mem_mb": 1.0}

    re10k = {"cases": [case(2, 256, 256, 6.0, 9.0)]}
    dl3dv = {"cases": [case(8, 544, 960, 90.0, 95.0), case(32, 544, 960, 400.0, 420.0)]}
    bag = {"device": "cuda", "kf_to_chunks": {"windows": 5, "steady_median_s": 0.03, "first_s": 1.0}}
    verdicts = {t.key: t.verdict for t in gpu_report.evaluate_targets(re10k, dl3dv, bag, "cuda")}
    assert verdicts == {"re10k_forward_render": "pass", "dl3dv_32_forward": "fail", "re10k_window_kf_to_chunks": "pass"}
    missing = gpu_report.evaluate_targets(None, None, None, "cuda")
    assert [t.verdict for t in missing] == ["missing"] * 3


def test_pytest_outcome_reads_the_final_line(tmp_path):
    log = tmp_path / "gpu_tests.log"
    log.write_text("....\n=========== 4 passed, 1 warning in 21.30s ===========\n")
    assert gpu_report.pytest_outcome(log) == "4 passed, 1 warning in 21.30s"
    assert gpu_report.pytest_outcome(tmp_path / "absent.log") == "no log"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ILRM_GPU_CHECK_DRYRUN") != "1",
                    reason="about 2 minutes on 2 cores: set ILRM_GPU_CHECK_DRYRUN=1 to run the whole dry run")
def test_dry_run_end_to_end(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_WORK": str(tmp_path / "work"),
           "GPU_CHECK_PYTHON": sys.executable}
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["bag.json", "bench.json", "card.json", "gpu_tests.txt", "log.txt", "renders.png", "summary.json"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [s["step"] for s in summary["steps"]] == [s for s in EXPECTED_STEPS if s in {x["step"] for x in summary["steps"]}]
    assert {s["step"] for s in summary["steps"]} == set(EXPECTED_STEPS)
    assert all(t["measured_s"] is not None for t in summary["targets"])
