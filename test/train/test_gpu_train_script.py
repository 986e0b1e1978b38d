"""scripts/gpu_train.sh (training on a lent GPU) and its pieces: the time budget of
``ilrm-ros train``, snapshot selection on validation data (train/select.py) and the report
(train/train_report.py).

Fast here: the script parses, rejects bad arguments, keeps every step time-boxed inside the
device call, chooses on validation (never held-out) data, shards the weights at 16 MiB. The
whole ``--dry-run`` (about 40 s on 2 cores: synth, train, select, eval, shard, join) is
marked slow and runs only with ILRM_GPU_TRAIN_DRYRUN=1.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ilrm_ros.data import synth
from ilrm_ros.train import select, train_report
from ilrm_ros.train.train import train
from ilrm_ros.train.train_config import load_train_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_train.sh"


def _script() -> str:
    """The script and the step library it sources (scripts/gpu_steps.sh: step(), the time boxes)."""
    return SCRIPT.read_text() + (SCRIPT.parent / "gpu_steps.sh").read_text()


def test_script_parses_and_rejects_bad_arguments(tmp_path):
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    for bad in (["--nope"], ["--budget", "ten"]):
        out = subprocess.run(["bash", str(SCRIPT), *bad], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "OUT": str(tmp_path / "o"), "GPU_TRAIN_WORK": str(tmp_path / "w")})
        assert out.returncode == 2 and "gpu_train:" in out.stderr
        assert not (tmp_path / "o").exists()  # nothing written before the arguments are checked
    help_ = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert help_.returncode == 0 and "--dry-run" in help_.stdout and "checkpoint join" in help_.stdout


def test_budget_fits_the_device_call_and_every_step_is_time_boxed():
    text = _script()
    budget = int(re.search(r"^BUDGET_S=(\d+)", text, re.M).group(1))
    m = re.search(r'run\(command="bash scripts/gpu_train.sh", carry=\["wheels"\], timeout_s=(\d+)\)', text)
    assert m and budget <= 540 < int(m.group(1)) <= 600  # one run <= 9 minutes
    assert 'timeout -k 10 "$limit"' in text
    names = re.findall(r'step "?([\w${}]+)', text)
    for want in ("card", "synth_train", "synth_val", "synth_heldout", "train", "select", "eval_${which}_v$v",
                 "shard", "join", "join_cmp", "join_load"):
        assert want in names, want


def test_selection_uses_validation_data_and_eval_uses_heldout_data_with_distinct_seeds():
    text = _script()
    assert re.search(r'ilrm_ros\.train\.select .*--data "\$WORK/data/val"', text)
    assert re.search(r'eval --checkpoint "\$ckpt" --data "\$WORK/data/heldout"', text)
    seeds = {d: re.search(rf'--out "\$WORK/data/{d}".*?--seed (\d+)', text, re.S).group(1)
             for d in ("train", "val", "heldout")}
    assert len(set(seeds.values())) == 3 and seeds["heldout"] == "1000"
    assert "--max-mib 16" in text


def test_gpu_config_trains_wide_and_narrow_windows_with_depth_at_the_node_resolution():
    cfg = load_train_config("gpu_128")
    assert cfg.image_size == [128, 128] and (cfg.views_min, cfg.views_max) == (2, 8)
    assert cfg.window_span >= 32 and 0 < cfg.window_span_min <= 4 and cfg.depth_weight > 0
    assert cfg.init_from.endswith("ilrm_small.pt") and cfg.time_budget_s > 0
    assert (ROOT / cfg.init_from).exists() and cfg.keep_checkpoints >= 4


def test_time_budget_stops_training_with_a_checkpoint(tmp_path):
    data = tmp_path / "data"
    assert synth.cli_main(["--out", str(data), "--scenes", "2", "--frames", "8", "--res", "32", "--seed", "3",
                           "--format", "npz", "--workers", "1"]) == 0
    cfg = load_train_config("tiny_test", {"data": str(data), "out": str(tmp_path / "run"), "steps": 10_000,
                                          "time_budget_s": 0.5, "ckpt_every": 10_000, "log_every": 1_000,
                                          "device": "cpu", "threads": 1})
    summary = train(cfg)
    assert 0 < summary["step"] < 10_000
    assert (tmp_path / "run" / "checkpoints" / f"step_{summary['step']:07d}.pt").exists()
    assert train_report.training_summary(tmp_path / "run" / "log.csv")["last_checkpoint_step"] == summary["step"]


def test_best_index_takes_the_highest_mean_validation_psnr_earliest_on_ties():
    scores = [{"mean_model_psnr": s} for s in (20.0, 21.5, 21.5, 19.0)]
    assert select.best_index(scores) == 1
    with pytest.raises(ValueError):
        select.best_index([])


def test_report_marks_missing_pieces_and_formats_gains(tmp_path):
    work, out = tmp_path / "w", tmp_path / "o"
    (work / "eval").mkdir(parents=True)
    out.mkdir()
    rep = {"model": {"psnr": 22.0, "ssim": 0.7}, "nearest_view": {"psnr": 19.5, "ssim": 0.5},
           "mean_color": {"psnr": 17.0, "ssim": 0.6}, "per_scene": [{}, {}]}
    (work / "eval" / "trained_v2.json").write_text(json.dumps(rep))
    (work / "steps.tsv").write_text("train\t0\t12.5\t300\t\nselect\t124\t90.0\t90\ttimed out\n")
    report = train_report.build_report(out, work, [2, 4], dry_run=True)
    assert report["eval"][0]["trained"] == {"psnr": 22.0, "ssim": 0.7} and report["eval"][0]["scenes"] == 2
    assert report["eval"][1]["trained"] is None and report["weights"] is None
    text = train_report.format_markdown(report)
    assert "+2.50 dB" in text and "| 4 | missing |" in text and "| select | 124 | 90.0 | 90 |" in text
    assert train_report.cli_main([str(out), str(work), "--views", "2", "4", "--dry-run"]) == 1  # incomplete


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ILRM_GPU_TRAIN_DRYRUN") != "1",
                    reason="about 40 s on 2 cores: set ILRM_GPU_TRAIN_DRYRUN=1 to run the whole dry run")
def test_dry_run_end_to_end(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_TRAIN_WORK": str(tmp_path / "work"),
           "GPU_TRAIN_PYTHON": sys.executable}
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=400)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    o = tmp_path / "out"
    parts = sorted(o.glob("ilrm_gpu128.pt.part*"))
    assert len(parts) >= 2 and all(p.stat().st_size <= 16 * 2**20 for p in parts)
    report = json.loads((o / "report.json").read_text())
    assert report["dry_run"] and report["chosen"] and report["training"]["steps"] > 0
    assert [r["views"] for r in report["eval"]] == [2, 4, 8]
    assert all(r["trained"] and r["shipped"] and r["nearest_view"] and r["mean_color"] for r in report["eval"])
    assert {s["step"]: s["rc"] for s in report["steps"]}["join_cmp"] == "0"
    assert "time budget" in (o / "log.txt").read_text()  # the dry run stopped on its wall-clock budget


def test_validation_score_averages_every_view_count_and_span(monkeypatch):
    seen = []

    def fake_evaluate(model, scenes, settings, device):
        seen.append((settings.views, settings.span))
        psnr = 20.0 + settings.views + (0.0 if settings.span is None else settings.span / 10)
        return {m: {"psnr": psnr} for m in ("model", "nearest_view", "mean_color")}

    monkeypatch.setattr(select, "evaluate", fake_evaluate)
    one = select.validation_score(None, [], [2, 4], "cpu")
    assert set(one["views"]) == {"2", "4"} and one["mean_model_psnr"] == pytest.approx(23.0)
    seen.clear()
    two = select.validation_score(None, [], [2, 4], "cpu", spans=(16, 6))
    assert seen == [(2, 16), (4, 16), (2, 6), (4, 6)]
    assert set(two["views"]) == {"2@16", "4@16", "2@6", "4@6"}
    assert two["mean_model_psnr"] == pytest.approx(23.0 + (1.6 + 0.6) / 2)
    seen.clear()
    narrow = select.validation_score(None, [], [2, 8], "cpu", spans=(16, 6))  # 8 views + 2 targets > 6 frames
    assert seen == [(2, 16), (8, 16), (2, 6)] and set(narrow["views"]) == {"2@16", "8@16", "2@6"}
