"""End-to-end: a tiny training run learns, resumes exactly, and eval writes its report.

Data come from `ilrm-ros data synth` (3 short sequences at 32x32, generated once per module).
"""
import csv
import json
import logging

import pytest
import torch

from ilrm_ros.data import synth
from ilrm_ros.train.run_state import latest_checkpoint, resume_config
from ilrm_ros.train.train import train
from ilrm_ros.train.train_config import load_train_config


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert synth.cli_main(["--out", str(out), "--scenes", "3", "--frames", "8", "--res", "32",
                           "--seed", "3", "--format", "npz", "--workers", "1"]) == 0
    return out


def _cfg(tmp_path, data, **kw):
    base = {"data": str(data), "out": str(tmp_path / "run"), "log_every": 1, "threads": 1}
    base.update(kw)
    return load_train_config("tiny_test", base)


def _progress_lines(caplog, tool: str) -> list[str]:
    """The headless progress lines of ``tool`` (pytest's stderr is no terminal), all INFO."""
    records = [r for r in caplog.records if r.getMessage().startswith(f"{tool}: ")]
    assert {r.levelno for r in records} == {logging.INFO}
    return [r.getMessage() for r in records]


def _losses(run_dir):
    with open(run_dir / "log.csv") as f:
        return [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_tiny_training_run_lowers_the_loss(tmp_path, tiny_data):
    cfg = _cfg(tmp_path, tiny_data, steps=20, ckpt_every=20)
    summary = train(cfg)
    rows = _losses(tmp_path / "run")
    assert [s for s, _ in rows] == list(range(1, 21))
    first = sum(v for _, v in rows[:5]) / 5
    last = sum(v for _, v in rows[-5:]) / 5
    assert last < 0.9 * first, (first, last)
    assert summary["step"] == 20
    run = tmp_path / "run"
    assert (run / "config.yaml").exists() and (run / "loss.png").stat().st_size > 0
    from ilrm_ros.model.checkpoint import load_checkpoint

    model, meta = load_checkpoint(run / "model_latest.pt")
    assert meta["step"] == 20 and meta["train_config"]["model"] == "tiny"


@pytest.mark.slow
def test_resume_continues_at_the_saved_step_and_matches_an_uninterrupted_run(tmp_path, tiny_data):
    straight = _cfg(tmp_path / "a", tiny_data, steps=8, ckpt_every=4)
    train(straight)
    ref = torch.load(latest_checkpoint(tmp_path / "a" / "run"), weights_only=False)

    split = _cfg(tmp_path / "b", tiny_data, steps=8, ckpt_every=4)
    train(split, until=4)
    assert latest_checkpoint(tmp_path / "b" / "run").name == "step_0000004.pt"
    cfg2 = resume_config("tiny_test", {"out": split.out})
    summary = train(cfg2, resume=True)
    assert summary["start_step"] == 4 and summary["step"] == 8
    assert [s for s, _ in _losses(tmp_path / "b" / "run")] == list(range(1, 9))
    got = torch.load(latest_checkpoint(tmp_path / "b" / "run"), weights_only=False)
    for k, v in ref["model"].items():
        assert torch.allclose(got["model"][k], v, atol=1e-6), k
    assert got["optimizer"]["state"][0]["step"] == ref["optimizer"]["state"][0]["step"]


def test_resume_without_checkpoint_starts_from_scratch_and_reports_progress(tmp_path, tiny_data, caplog):
    caplog.set_level(logging.INFO, logger="ilrm_ros.train.train")
    cfg = _cfg(tmp_path, tiny_data, steps=2, ckpt_every=2)
    summary = train(cfg, resume=True)
    assert summary["start_step"] == 0 and summary["step"] == 2
    assert _progress_lines(caplog, "train")[-1].startswith("train: done, 2/2 step in ")


def test_eval_cli_writes_the_report_schema(tmp_path, tiny_data, caplog):
    caplog.set_level(logging.INFO, logger="ilrm_ros.train.evaluate")
    from ilrm_ros.model.checkpoint import save_checkpoint
    from ilrm_ros.model.ilrm import ILRM, load_model_config
    from ilrm_ros.train.evaluate import cli_main

    ckpt = save_checkpoint(tmp_path / "m.pt", ILRM(load_model_config("tiny")), {"step": 0})
    out = tmp_path / "report.json"
    rc = cli_main(["--checkpoint", str(ckpt), "--data", str(tiny_data), "--views", "2", "--targets", "2",
                   "--max-scenes", "2", "--json", str(out), "--device", "cpu"])
    assert rc == 0
    assert _progress_lines(caplog, "eval")[-1].startswith("eval: done, 2/2 scene in ")
    rep = json.loads(out.read_text())
    # generated scenes carry depth: every row scores the rendered target depth; the average
    # ("depth") exists when some scene had rendered pixels opaque enough to score
    assert set(rep) - {"depth"} == {"model", "nearest_view", "mean_color", "views", "per_scene"}
    assert rep["views"] == 2 and len(rep["per_scene"]) == 2
    for m in ("model", "nearest_view", "mean_color"):
        assert set(rep[m]) == {"psnr", "ssim"}
        assert all(isinstance(rep[m][k], float) for k in ("psnr", "ssim"))
    row = rep["per_scene"][0]
    assert {"scene", "context", "targets", "model", "nearest_view", "mean_color", "depth"} <= set(row)
    assert set(row["depth"]) == {"abs_rel", "delta1", "median_ratio", "coverage"}
    assert len(row["context"]) == 2 and len(row["targets"]) == 2
    # the average is the mean of the rows
    assert rep["model"]["psnr"] == pytest.approx(sum(r["model"]["psnr"] for r in rep["per_scene"]) / 2)


def test_eval_takes_the_authors_layouts_and_feeds_the_model_its_own_pose_normalisation(tmp_path, tiny_data,
                                                                                     monkeypatch):
    import torch

    from ilrm_ros.model.ilrm import ILRM, load_model_config
    from ilrm_ros.train import evaluate

    path = tmp_path / "dl3dv_like.pt"
    torch.save({"model": ILRM(load_model_config("tiny")).state_dict(), "step": 3}, path)  # DL3DV container
    seen = []
    real = evaluate.normalize_targets_with_scale
    monkeypatch.setattr(evaluate, "normalize_targets_with_scale", lambda c, t, m: seen.append(m) or real(c, t, m))
    rc = evaluate.cli_main(["--checkpoint", str(path), "--data", str(tiny_data), "--views", "2", "--targets", "1",
                            "--max-scenes", "1", "--device", "cpu", "--architecture", "tiny"])
    assert rc == 0 and seen == ["ilrm_ros"]
    assert evaluate.cli_main(["--checkpoint", str(tmp_path / "none.pt"), "--data", str(tiny_data), "--views", "2"]) == 2


def test_export_writes_a_loadable_fp16_checkpoint_with_metadata(tmp_path):
    from ilrm_ros.model.checkpoint import load_checkpoint, save_checkpoint
    from ilrm_ros.model.ilrm import ILRM, load_model_config
    from ilrm_ros.train.run_state import export_model

    model = ILRM(load_model_config("tiny"))
    src = save_checkpoint(tmp_path / "src.pt", model, {"step": 7, "data_seed": 3})
    export_model(src, tmp_path / "out.pt", {"reproduce": "ilrm-ros train --config tiny_test"})
    loaded, meta = load_checkpoint(tmp_path / "out.pt")
    assert meta["step"] == 7 and meta["reproduce"].startswith("ilrm-ros train")
    meta_json = json.loads((tmp_path / "out.json").read_text())
    assert meta_json["data_seed"] == 3 and meta_json["dtype"] == "float16"
    assert meta_json["bytes"] == (tmp_path / "out.pt").stat().st_size < (tmp_path / "src.pt").stat().st_size
    for k, v in model.state_dict().items():
        assert torch.allclose(loaded.state_dict()[k], v, atol=1e-3, rtol=1e-3), k
