"""`ilrm-ros bench model` runs end to end and writes what it prints."""
import json
import sys

import pytest

from ilrm_ros.tools.bench.model import PAPER_REFERENCE, cli_main, parse_resolution


def test_parse_resolution_accepts_square_and_hxw():
    assert parse_resolution("128") == (128, 128)
    assert parse_resolution("64x96") == (64, 96)


def test_bench_writes_one_case_per_setting_with_paper_rows(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli_main(["--config", "tiny", "--views", "2", "1", "--res", "32", "32x48", "--runs", "2", "--warmup", "0",
                   "--device", "cpu", "--no-render", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    cases = data["cases"]
    assert [(c["views"], c["height"], c["width"]) for c in cases] == [(1, 32, 32), (1, 32, 48), (2, 32, 32), (2, 32, 48)]
    for c in cases:
        assert c["device"] == "cpu" and c["model_ms"] > 0 and len(c["model_ms_all"]) == 2
        assert c["model_cpu_ms"] is not None and c["model_cpu_ms"] > 0
        assert c["gaussians"] == c["views"] * (c["height"] // 2) * (c["width"] // 2)
        assert c["render_ms"] is None and c["peak_mem_mb"] is not None
        if sys.platform.startswith("linux"):  # pinned as a node for that window would pin it (glibc)
            assert c["mmap_threshold_mib"] == 4
    assert data["paper_reference"] == PAPER_REFERENCE and data["parameters"] == 258752
    printed = capsys.readouterr().out
    assert "RE10K, 2 views, 256x256" in printed and "530 ms" in printed and "render column skipped" in printed
    assert "mmap threshold pinned per case" in printed or not sys.platform.startswith("linux")


def test_bench_reports_counted_flops_achieved_rate_and_the_same_process_matmul_ratio(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_main(["--config", "tiny", "--views", "2", "--res", "32", "--runs", "2", "--warmup", "1",
                     "--device", "cpu", "--no-render", "--profile", "--out", str(out)]) == 0
    (case,) = json.loads(out.read_text())["cases"]
    # tiny: d = 64, 1 iteration; the counted FLOPs are at least those of its MLP matmuls
    tokens = 2 * (32 // 16) ** 2
    assert case["gflop"] * 1e9 >= 2 * (2 * tokens * 64 * 256) * 2
    assert case["ref_shape"] == [tokens, 64, 256] and case["ref_gflops"] > 0 and case["gflops"] > 0
    # the reference is the faster of the GEMM kernels this process has, each one reported
    assert case["ref_kernels"]["matmul"] > 0
    assert case["ref_gflops"] == pytest.approx(max(case["ref_kernels"].values()), rel=0.5)
    # the ratio is the median of per-pair ratios: near the ratio of the median rates, never a constant
    assert case["ratio"] == pytest.approx(case["gflops"] / case["ref_gflops"], rel=0.5)
    assert len(case["profile"]) == 5 and all(0 <= p["share"] <= 1 for p in case["profile"])
    printed = capsys.readouterr().out
    assert "ratio" in printed and "GFLOP/s" in printed


def test_cpu_attention_is_counted_like_torch_counts_cuda_attention():
    import torch

    from ilrm_ros.tools.bench.flops import count_flops

    q, k = torch.randn(2, 4, 8, 16), torch.randn(2, 4, 24, 16)
    with torch.inference_mode():
        flops = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, k))
    assert flops == 2 * 4 * 8 * 24 * 16 * 2 * 2  # QK^T and the weighted sum, 2 FLOPs per multiply-add


def test_the_fused_inference_forward_counts_the_same_flops_as_the_plain_one():
    """oneDNN linears are unknown to torch's counter: without their formula the fused path would count
    less work than it does and the efficiency ratio would be wrong."""
    import torch

    from ilrm_ros.model.ilrm import ILRM, ILRMConfig
    from ilrm_ros.tools.bench.flops import count_flops
    from ilrm_ros.tools.bench.model import make_inputs

    model = ILRM(ILRMConfig(dim=64, iterations=1, head_dim=32, patch_size=4, viewpoint_factor=2, uplift=2,
                            ray_encoding="plucker9", layout="wide")).eval()
    images, c2w, K = make_inputs(2, 16, 16, torch.device("cpu"))

    def forward(fused: bool):
        model.processor.set_fused(fused)
        with torch.inference_mode():
            return model(images, c2w, K)

    plain, fused = count_flops(lambda: forward(False)), count_flops(lambda: forward(True))
    # the same linears and attention; only the tiny ray geometry differs (one 6-row product per pixel
    # instead of a 3-row one: 0.2 % here), while any uncounted linear would be several per cent
    assert plain > 0 and fused == pytest.approx(plain, rel=0.005)
