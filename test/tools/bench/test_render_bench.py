"""`ilrm-ros bench render` produces a table and a JSON report with one row per case."""
import json

import pytest
import torch

from ilrm_ros.tools.bench.render import cli_main, make_scene


def test_benchmark_scene_is_all_on_screen_at_2_to_6_m():
    g, cameras = make_scene(2000, 64, torch.device("cpu"))
    assert (cameras.width, cameras.height) == (64, 64) and torch.equal(cameras.viewmats, torch.eye(4)[None])
    z = g.means[:, 2]
    assert z.min() >= 2.0 and z.max() <= 6.0
    pix = (cameras.Ks[0] @ (g.means / z[:, None]).T).T[:, :2]
    assert pix.min() >= 0 and pix.max() <= 64
    assert g.scales.min() >= 0.01 and g.scales.max() <= 0.05


def test_in_process_run_writes_a_json_report_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_main(["--n", "200", "1000", "--res", "32", "--repeats", "1", "--in-process", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    cases = report["cases"]
    grid = [(n, mode) for n in (200, 1000) for mode in ("forward", "forward+backward")]
    assert [(c["backend"], c["gaussians"], c["mode"]) for c in cases] == (
        [("native", n, m) for n, m in grid] + [("torch", n, m) for n, m in grid])
    for c in cases:
        assert c["error"] == "" and c["seconds"] > 0 and c["peak_mb"] > 0 and 0 < c["alpha_mean"] <= 1
    for fast, slow in zip(cases[:4], cases[4:]):  # the kernels and their twins draw the same picture
        assert fast["alpha_mean"] == pytest.approx(slow["alpha_mean"], abs=1e-4)
    assert "frustum" in report["scene"] and report["native_kernels"] == "loaded"
    printed = capsys.readouterr().out
    assert "median s" in printed and "forward+backward" in printed and "compiled kernels' " in printed


@pytest.mark.slow
def test_subprocess_cases_report_their_own_memory_peak(tmp_path):
    out = tmp_path / "bench.json"
    assert cli_main(["--n", "500", "--res", "32", "--repeats", "1", "--no-backward", "--out", str(out)]) == 0
    cases = json.loads(out.read_text())["cases"]
    assert [c["backend"] for c in cases] == ["native", "torch"]
    for case in cases:
        assert case["error"] == "" and case["extra_mb"] >= 0 and case["mem_note"]
