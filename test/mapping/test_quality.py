"""Live map quality (mapping/quality.py): view scores, the running tracker, the hold-out policy."""
import math
import threading

import pytest
import torch

from ilrm_ros.mapping.quality import (PSNR_CAP, HoldoutPolicy, QualityTracker, ViewScore, is_held_out,
                                      score_view)


def test_identical_images_score_cap_and_one():
    img = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(0))
    s = score_view(img, img.clone())
    assert s.psnr == PSNR_CAP
    assert s.ssim == pytest.approx(1.0, abs=1e-6)


def test_known_noise_level_matches_the_formula():
    truth = torch.full((3, 32, 32), 0.5)
    sigma = 0.05
    noise = torch.where(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1)) < 0.5, -sigma, sigma)
    s = score_view(truth + noise, truth)  # every pixel off by exactly ±sigma: MSE = sigma²
    assert s.psnr == pytest.approx(10 * math.log10(1 / sigma**2), abs=1e-3)  # 26.02 dB
    assert s.ssim < 0.9


def test_constant_offset_psnr_and_ssim():
    truth = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2)) * 0.5
    s = score_view(truth + 0.1, truth)
    assert s.psnr == pytest.approx(20.0, abs=1e-3)
    assert 0.5 < s.ssim < 1.0  # structure intact, luminance term < 1


def test_mask_scores_only_masked_pixels():
    truth = torch.zeros(3, 30, 30)
    rendered = truth.clone()
    rendered[:, :, 15:] = 1.0  # the right half is all wrong
    mask = torch.zeros(30, 30, dtype=torch.bool)
    mask[:, :10] = True
    masked = score_view(rendered, truth, mask)
    assert masked.psnr == PSNR_CAP and masked.ssim == pytest.approx(1.0, abs=1e-6)
    full = score_view(rendered, truth)
    assert full.psnr == pytest.approx(10 * math.log10(2.0), abs=1e-4)  # MSE 0.5
    empty = score_view(rendered, truth, torch.zeros(30, 30, dtype=torch.bool))
    assert math.isnan(empty.psnr) and math.isnan(empty.ssim)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        score_view(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(ValueError):
        score_view(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8), torch.ones(8, 9, dtype=torch.bool))


def test_tracker_latest_mean_count_and_reset():
    t = QualityTracker()
    empty = t.stats()
    assert empty.count == 0 and math.isnan(empty.psnr_mean) and math.isnan(empty.ssim_latest)
    for p, s in ((20.0, 0.5), (30.0, 0.7), (25.0, 0.9)):
        assert t.update(ViewScore(p, s))
    assert not t.update(ViewScore(math.nan, math.nan))
    st = t.stats()
    assert st.count == 3 and t.skipped == 1
    assert st.psnr_latest == 25.0 and st.ssim_latest == 0.9
    assert st.psnr_mean == pytest.approx(25.0) and st.ssim_mean == pytest.approx(0.7)
    t.reset()
    assert t.stats().count == 0 and t.skipped == 0


def test_tracker_is_thread_safe():
    t = QualityTracker()

    def work():
        for _ in range(2000):
            t.update(ViewScore(10.0, 0.5))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    st = t.stats()
    assert st.count == 8000 and st.psnr_mean == pytest.approx(10.0) and st.ssim_mean == pytest.approx(0.5)


def test_holdout_every_nth_keyframe():
    assert [i for i in range(12) if is_held_out(i, 4)] == [3, 7, 11]
    assert not any(is_held_out(i, n) for i in range(10) for n in (0, 1))
    policy = HoldoutPolicy(3)
    assert [policy.next() for _ in range(7)] == [False, False, True, False, False, True, False]
    policy.reset()
    assert [policy.next() for _ in range(3)] == [False, False, True]
    with pytest.raises(ValueError):
        HoldoutPolicy(-1)
