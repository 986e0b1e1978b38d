"""Revisiting a place with the real model: the fused map does not double there, and the
re-rendered map of the revisited region is no worse than the last single window's."""
import numpy as np
import pytest

from ilrm_ros.mapping.config import load_mapping_config
from ilrm_ros.data.synth import SynthConfig, synth_sequence
from ilrm_ros.io.frames import Frame
from ilrm_ros.mapping.mapper import Mapper, render_view
from ilrm_ros.tools.bag import psnr_u8
from ilrm_ros.model.checkpoint import default_checkpoint_path

pytestmark = pytest.mark.slow


def _drive(fusion: bool, passes: int = 2):
    _, seq = synth_sequence(99, 0, SynthConfig(width=128, height=128, num_frames=17, trajectory="ground"))
    cfg = load_mapping_config(overrides={"map.fusion": fusion, "model.device": "cpu"})
    mapper = Mapper(cfg)
    held = [4, 9, 14]
    counts, last = [], None
    for p in range(passes):
        for i in (i for i in range(17) if i not in held):
            frame = Frame(rgb=seq.images[i], K=seq.K[i], stamp_ns=(p * 17 + i + 1) * 250_000_000, frame_id="cam",
                          c2w=seq.c2w[i].astype(np.float64))
            window = mapper.add_frame(frame)
            if window is not None:
                last = mapper.process_window(window).gaussians
        counts.append(mapper.stats()["num_gaussians"])
    scores = []
    for i in held:
        K = seq.K[i].astype(np.float64)
        c2w = seq.c2w[i].astype(np.float64)
        scores.append((psnr_u8(mapper.render(c2w, K, 128, 128).rgb, seq.images[i]),
                       psnr_u8(render_view(last, c2w, K, 128, 128, mapper.background).rgb, seq.images[i])))
    return counts, np.array(scores)


@pytest.mark.skipif(not default_checkpoint_path().exists(), reason="needs the shipped checkpoint")
def test_a_second_pass_over_mapped_places_does_not_double_the_map_and_renders_no_worse():
    (first, second), scores = _drive(fusion=True)
    # measured: stage-1 checkpoint 27,018 -> 37,713 (1.40x), stage 2 24,491 -> 36,743 (1.50x); append: 2x
    assert second < 1.6 * first, (first, second)
    (a_first, a_second), _ = _drive(fusion=False)
    assert a_second > 1.9 * a_first  # plain appending (at least) doubles: the bound above means something
    map_psnr, window_psnr = scores.mean(axis=0)
    assert map_psnr >= window_psnr, scores
