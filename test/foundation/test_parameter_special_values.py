"""Every documented special value of a parameter ("0 = never", "empty = …") does what it says.

The first test finds the special values in the parameter descriptions, so a new one
cannot be added without a test here.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ilrm_ros.mapping.config import config_from_flat, parameter_specs
from ilrm_ros.io.frames import Frame
from ilrm_ros.mapping.fusion import MapConfig, WindowCameras
from ilrm_ros.mapping.gaussian_map import GaussianMap
from ilrm_ros.io.input_stage import InputLimits, camera_frame_id
from ilrm_ros.mapping.keyframes import KeyframePolicy
from ilrm_ros.mapping.mapper import select_window_gaussians
from ilrm_ros.io.pose_buffer import PoseBuffer
from ilrm_ros.core.gaussians import Gaussians

S = 1_000_000_000
SPECIAL = re.compile(r"(\b0 = |empty = )")
TESTED = {
    "frames.camera_frame", "frames.tf_max_future_s", "keyframes.max_interval_s", "window.size", "window.stride",
    "model.checkpoint", "model.height", "model.width", "model.max_gaussians_per_window",
    "map.max_integration_distance_m", "map.max_gaussians", "map.max_gaussians_per_chunk", "map.publish_period_s",
    "input.max_input_pixels", "input.max_decoded_bytes", "render.max_render_pixels", "input.rectified",
    "input.qos", "map.save_path", "refine.window_iters", "refine.window_budget_s", "refine.views_per_iter",
    "refine.ssim_weight", "refine.map_views_per_iter", "refine.map_publish_period_s",
}


def test_every_documented_special_value_is_tested_here():
    documented = {s.name for s in parameter_specs() if SPECIAL.search(s.description)
                  or "auto =" in s.description or "empty path" in s.description}
    assert documented <= TESTED, f"special values without a test: {sorted(documented - TESTED)}"


def _gaussians(means) -> Gaussians:
    n = len(means)
    return Gaussians(means=torch.tensor(means, dtype=torch.float32), quats=torch.tensor([[1.0, 0, 0, 0]] * n),
                     scales=torch.full((n, 3), 0.05), opacities=torch.full((n,), 0.9), colors=torch.full((n, 3), 0.5))


def test_max_interval_0_means_never_admit_for_time_alone():
    cfg = config_from_flat({"keyframes.max_interval_s": 0.0, "keyframes.min_translation_m": 1.0,
                            "keyframes.min_rotation_deg": 90.0})
    policy = KeyframePolicy(cfg.keyframes)
    frame = lambda t: Frame(rgb=np.zeros((4, 4, 3), np.uint8), K=np.eye(3), stamp_ns=t, frame_id="c", c2w=np.eye(4))
    assert policy.admit(frame(0))
    assert not any(policy.admit(frame(t * S)) for t in (1, 10, 3600, 10**6))
    moved = frame(10**6 * S + 1)
    moved.c2w = np.eye(4)
    moved.c2w[0, 3] = 2.0
    assert policy.admit(moved)  # motion still counts


def test_max_interval_above_0_admits_after_that_time():
    policy = KeyframePolicy(config_from_flat({"keyframes.max_interval_s": 2.0}).keyframes)
    frame = lambda t: Frame(rgb=np.zeros((4, 4, 3), np.uint8), K=np.eye(3), stamp_ns=t, frame_id="c", c2w=np.eye(4))
    assert policy.admit(frame(0)) and not policy.admit(frame(S)) and policy.admit(frame(2 * S))


def test_camera_frame_empty_means_the_image_header_frame():
    assert camera_frame_id("cam_optical", "") == "cam_optical"
    assert camera_frame_id("cam_optical", "override_optical") == "override_optical"


def test_input_limits_0_mean_no_limit():
    InputLimits(0, 0).check(10**6, 10**6, 8, "image")  # no exception
    with pytest.raises(Exception, match="max_input_pixels"):
        InputLimits(100, 0).check(11, 10, 3, "image")
    with pytest.raises(Exception, match="max_decoded_bytes"):
        InputLimits(0, 100).check(10, 10, 3, "image")


def test_render_max_pixels_0_means_no_limit():
    from ilrm_ros.ros.services import render_camera

    k = [50.0, 0, 32, 0, 50.0, 32, 0, 0, 1]
    assert render_camera(100_000, 100_000, k, 0).shape == (3, 3)
    with pytest.raises(ValueError, match="max_render_pixels"):
        render_camera(100_000, 100_000, k, 4_194_304)


def test_tf_max_future_0_means_no_check():
    now = 100 * S
    PoseBuffer(max_future_s=0).set_transform("map", "base", now + 10**9 * S, [0, 0, 0], [0, 0, 0, 1], now_ns=now)
    with pytest.raises(ValueError, match="ahead of the clock"):
        PoseBuffer(max_future_s=10).set_transform("map", "base", now + 11 * S, [0, 0, 0], [0, 0, 0, 1], now_ns=now)


def test_max_gaussians_per_window_0_keeps_all():
    g = _gaussians(np.random.default_rng(0).uniform(-1, 1, (50, 3)))
    assert len(select_window_gaussians(g, 0.0, 0)) == 50
    assert len(select_window_gaussians(g, 0.0, 10)) == 10


@pytest.mark.parametrize("distance, kept", [(0.0, 2), (100.0, 1)])
def test_max_integration_distance_0_keeps_far_gaussians(distance, kept):
    cfg = config_from_flat({"map.max_integration_distance_m": distance, "map.max_gaussians": 0,
                            "map.max_gaussians_per_chunk": 0})
    gmap = GaussianMap(cfg.map)  # the map reads the node's own configuration section
    cams = WindowCameras(c2w=torch.eye(4, dtype=torch.float64)[None],
                         K=torch.tensor([[[32.0, 0, 32], [0, 32.0, 32], [0, 0, 1]]], dtype=torch.float64),
                         height=64, width=64)
    gmap.integrate(_gaussians([[0.0, 0.0, 5.0], [0.0, 0.0, 500.0]]), cams, window_id=0)
    assert len(gmap) == kept


@pytest.mark.parametrize("total, per_chunk", [(0, 0), (100, 0), (0, 20)])
def test_map_caps_0_mean_unlimited(total, per_chunk):
    gmap = GaussianMap(MapConfig(chunk_size_m=1.0, max_gaussians=total, max_gaussians_per_chunk=per_chunk))
    gmap.add(_gaussians(np.random.default_rng(1).uniform(0.0, 0.99, (300, 3))))  # all in one chunk
    caps = [c for c in (total, per_chunk) if c > 0]
    assert len(gmap) == 300 if not caps else len(gmap) <= min(caps)


def test_publish_period_0_publishes_the_map_after_every_window():
    import time

    from builtin_interfaces.msg import Time

    from ilrm_ros.ros.outputs import MapOutputs

    published = []
    node = SimpleNamespace(cfg=config_from_flat({"map.publish_period_s": 0.0}), map_frame="map",
                           mapper=SimpleNamespace(all_rows=lambda: np.zeros((0, 14), np.float32)),
                           get_clock=lambda: SimpleNamespace(now=lambda: SimpleNamespace(to_msg=Time)))
    fake = SimpleNamespace(node=node, _map_dirty=True, _last_map_publish=time.monotonic(),
                           _header=lambda: MapOutputs._header(fake), pub_map=SimpleNamespace(publish=published.append))
    MapOutputs.maybe_publish_map(fake)  # just after a publish (time ~ the last one): still published
    assert len(published) == 1
    node.cfg.map.publish_period_s, fake._map_dirty = 2.0, True
    fake._last_map_publish = time.monotonic()
    MapOutputs.maybe_publish_map(fake)
    assert len(published) == 1


def test_save_path_empty_means_save_map_needs_a_path():
    from ilrm_ros.ros.services import MapServices

    node = SimpleNamespace(cfg=config_from_flat({"map.save_path": ""}))
    resp = MapServices(node).save(SimpleNamespace(path=""), SimpleNamespace(success=None, message=""))
    assert resp.success is False and "map.save_path is empty" in resp.message


def test_qos_auto_follows_the_publishers_and_rectified_auto_follows_the_topic_name():
    from rclpy.qos import ReliabilityPolicy as R

    from ilrm_ros.ros.qos import resolve_input_qos

    assert resolve_input_qos("auto", []) == "sensor_data"
    assert resolve_input_qos("auto", [R.RELIABLE, R.RELIABLE]) == "reliable"
    assert resolve_input_qos("auto", [R.RELIABLE, R.BEST_EFFORT]) == "sensor_data"
    assert resolve_input_qos("reliable", [R.BEST_EFFORT]) == "reliable"
    rectified = lambda setting, topic: {"always": True, "never": False}.get(setting, "rect" in topic)
    assert rectified("auto", "/camera/image_rect") and not rectified("auto", "/camera/image_raw")


def test_model_size_and_window_0_mean_the_architecture_defaults():
    from ilrm_ros.mapping.inference import fill_model_defaults
    from ilrm_ros.model.ilrm import load_model_config

    cfg = config_from_flat({"model.height": 0, "model.width": 0, "window.size": 0, "window.stride": 0})
    arch = load_model_config("small")
    fill_model_defaults(cfg.model, cfg.window, arch)
    assert (cfg.model.height, cfg.model.width, cfg.window.size) == (arch.input_height, arch.input_width,
                                                                     arch.window_views)
    assert cfg.window.stride == min(arch.window_stride, arch.window_views)


def test_checkpoint_empty_means_the_shipped_checkpoint():
    from ilrm_ros.model.checkpoint import default_checkpoint_path

    assert config_from_flat({}).model.checkpoint == ""
    assert default_checkpoint_path().is_file()


def _refine_case():
    """Three cameras looking at a few Gaussians; the context images are of shifted colours."""
    from ilrm_ros.render.render import render_gaussians

    g = _gaussians([[x, y, 2.0] for x in (-0.3, 0.0, 0.3) for y in (-0.2, 0.2)])
    c2w = torch.eye(4).repeat(3, 1, 1)
    c2w[:, 0, 3] = torch.tensor([-0.1, 0.0, 0.1])
    K = torch.tensor([[16.0, 0, 8], [0, 16.0, 8], [0, 0, 1]]).repeat(3, 1, 1)
    target = Gaussians(means=g.means, quats=g.quats, scales=g.scales, opacities=g.opacities,
                       colors=torch.rand(len(g), 3, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        images = render_gaussians(target, c2w, K, 16, 16).rgb.permute(0, 3, 1, 2).contiguous()
    return g, SimpleNamespace(c2w=c2w, K=K), images


def test_refine_window_iters_0_means_off():
    from ilrm_ros.mapping.refine import refine_window

    g, cams, images = _refine_case()
    out, stats = refine_window(g, cams, images, config_from_flat({"refine.window_iters": 0}).refine)
    assert out is g and stats.iterations == 0 and stats.stopped_by == "off"


def test_refine_window_budget_0_means_no_time_limit():
    from ilrm_ros.mapping.refine import refine_window

    g, cams, images = _refine_case()
    slow = iter(range(0, 10**6, 100))  # every reading 100 s later
    cfg = config_from_flat({"refine.window_iters": 4, "refine.window_budget_s": 0.0, "refine.downscale": 1}).refine
    _, stats = refine_window(g, cams, images, cfg, clock=lambda: float(next(slow)))
    assert stats.iterations == 4
    cfg.window_budget_s = 50.0
    _, stats = refine_window(g, cams, images, cfg, clock=lambda: float(next(slow)))
    assert stats.iterations == 0 and stats.stopped_by == "budget"


def test_refine_views_per_iter_0_means_every_view_every_step():
    from ilrm_ros.mapping.refine import refine_window

    g, cams, images = _refine_case()

    def run(views: int, seed: int) -> Gaussians:
        cfg = config_from_flat({"refine.window_iters": 3, "refine.window_budget_s": 0.0, "refine.downscale": 1,
                                "refine.views_per_iter": views, "refine.seed": seed}).refine
        return refine_window(g, cams, images, cfg)[0]

    assert torch.equal(run(0, 1).colors, run(0, 2).colors)  # all views: the seed has nothing to pick
    assert not torch.equal(run(1, 1).colors, run(1, 2).colors)


@pytest.mark.parametrize("views", [0, 1])
def test_refine_map_views_per_iter_0_means_every_keyframe_of_the_step(monkeypatch, views):
    """The map refiner optimises with views_per_iter = map_views_per_iter (0 = all: tested above)."""
    import ilrm_ros.mapping.map_refine as map_refine
    from ilrm_ros.io.frames import Keyframe

    g, cams, images = _refine_case()
    gmap = GaussianMap(MapConfig(chunk_size_m=1.0))
    gmap.add(g)
    kfs = [Keyframe(id=i, frame=Frame(rgb=(images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
                                      K=cams.K[i].double().numpy(), stamp_ns=i, frame_id="c",
                                      c2w=cams.c2w[i].double().numpy())) for i in range(3)]
    seen, real = [], map_refine.optimise_gaussians

    def spy(g, cameras, images, cfg, *rest):
        seen.append((cfg.views_per_iter, len(cameras.c2w)))
        return real(g, cameras, images, cfg, *rest)

    monkeypatch.setattr(map_refine, "optimise_gaussians", spy)
    cfg = config_from_flat({"refine.map_enabled": True, "refine.map_views_per_iter": views, "refine.map_covisible": 2,
                            "refine.views_per_iter": 5}).refine
    map_refine.MapRefiner(cfg).step(gmap, kfs)
    assert seen == [(views, 3)]


def test_refine_ssim_weight_0_means_l1_only():
    from ilrm_ros.mapping.refine import _loss

    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    assert float(_loss(a, b, 0.0)) == pytest.approx(float((a - b).abs().mean()))
    assert float(_loss(a, b, 0.5)) != pytest.approx(float((a - b).abs().mean()))


@pytest.mark.parametrize("period, due_again", [(0.0, True), (1.0, False)])
def test_refine_map_publish_period_0_sends_after_every_step(period, due_again):
    from ilrm_ros.mapping.chunks import ChunkUpdate, MapUpdate, UpdateAction
    from ilrm_ros.mapping.held_chunks import HeldChunks

    held = HeldChunks(config_from_flat({"refine.map_publish_period_s": period}).refine.map_publish_period_s)
    step = lambda rev: MapUpdate("m", rev, [ChunkUpdate(UpdateAction.DELETE, "m", (0, 0, 0), 1.0, rev)])  # noqa: E731
    held.hold(step(1))
    assert held.due(100.0) and held.release(100.0, "m").revision == 1
    held.hold(step(2))   # the next step, at the same moment
    assert held.due(100.0) is due_again

