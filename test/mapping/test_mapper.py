"""The Mapper without ROS and without a trained model (mapping/mapper.py).

Frames in -> keyframes by motion -> a window every ``stride`` new keyframes -> map updates ->
renders; reset, save/load, and what happens to a frame whose pose is unusable.

The model is a stub with iLRM's call contract (:class:`PlaneModel`): every view puts one
Gaussian per 8x8 pixel block on a plane in front of its camera, so where the Gaussians must
land in the map frame is known exactly. The camera looks along +z (OpenCV) and drives
along +x.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.io.drop_report import DropReporter
from ilrm_ros.io.frames import Frame
from ilrm_ros.io.input_stage import InputRejected, place
from ilrm_ros.mapping.chunks import MapReplica
from ilrm_ros.mapping.config import load_mapping_config
from ilrm_ros.mapping.map_io import sidecar_path
from ilrm_ros.mapping.mapper import Mapper
from ilrm_ros.model.ilrm import ILRMConfig

SIZE = 32            # model input (pixels, square)
FOCAL = 32.0         # ~53 degree field of view
BLOCK = 8            # one stub Gaussian per BLOCK x BLOCK pixels
PLANE_DEPTH = 2.0    # in the model's normalised frame
WINDOW, STRIDE = 3, 2
STEP_M = 0.25        # camera travel between keyframes
GAUSSIANS_PER_VIEW = (SIZE // BLOCK) ** 2
PLANE_M = PLANE_DEPTH * (WINDOW - 1) * STEP_M
"""The plane's depth in metres: a window's cameras span (WINDOW - 1) * STEP_M, which the model sees as 1."""


class PlaneModel(torch.nn.Module):
    """iLRM's call contract without learning.

    ``model(images (B, V, 3, H, W), c2w (B, V, 4, 4), K (B, V, 3, 3))`` -> Gaussians with
    fields (B, N, k), N = V * (H / BLOCK) * (W / BLOCK), view-major then row-major: one
    Gaussian per BLOCK x BLOCK pixel block, on the ray through the block's centre at camera
    depth PLANE_DEPTH (units of ``c2w``), coloured by the block's mean colour, opacity 0.8,
    as wide as the block.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cfg = ILRMConfig(name="plane_stub", input_height=SIZE, input_width=SIZE, window_views=WINDOW,
                              window_stride=STRIDE)

    def forward(self, images: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor) -> Gaussians:
        b, v, _, h, w = images.shape
        centre = torch.arange(BLOCK / 2, h, BLOCK), torch.arange(BLOCK / 2, w, BLOCK)
        ys, xs = torch.meshgrid(*centre, indexing="ij")
        pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)             # (P, 3)
        rays = torch.einsum("bvij,pj->bvpi", torch.linalg.inv(K.float()), pix)           # (B, V, P, 3), z = 1
        means = torch.einsum("bvij,bvpj->bvpi", c2w[..., :3, :3].float(), rays * PLANE_DEPTH)
        means = means + c2w[..., None, :3, 3].float()
        colors = torch.nn.functional.avg_pool2d(images.flatten(0, 1).float(), BLOCK)     # (B*V, 3, h', w')
        colors = colors.permute(0, 2, 3, 1).reshape(b, -1, 3)
        n = means.shape[1] * means.shape[2]
        width = PLANE_DEPTH * BLOCK / (2 * K[..., 0, 0].float())                          # (B, V)
        return Gaussians(means=means.reshape(b, n, 3),
                         quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(b, n, 4),
                         scales=width[..., None, None].expand(b, v, n // v, 3).reshape(b, n, 3),
                         opacities=torch.full((b, n), 0.8),
                         colors=colors)


def new_mapper() -> Mapper:
    cfg = load_mapping_config(overrides={
        "model.device": "cpu", "model.height": SIZE, "model.width": SIZE, "window.size": WINDOW,
        "window.stride": STRIDE, "keyframes.min_translation_m": 0.1, "keyframes.min_rotation_deg": 10.0,
        "keyframes.max_interval_s": 0.0})
    return Mapper(cfg, model=PlaneModel(), model_id="plane_stub")


def pose(x: float, yaw_deg: float = 0.0) -> np.ndarray:
    """Camera at (x, 0, 0) looking along +z, turned by ``yaw_deg`` about its y axis (c2w, OpenCV)."""
    a = np.radians(yaw_deg)
    c2w = np.eye(4)
    c2w[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    c2w[0, 3] = x
    return c2w


def image(seed: int) -> np.ndarray:
    """A deterministic (SIZE, SIZE, 3) uint8 pattern."""
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def frame(i: int, c2w: np.ndarray | None) -> Frame:
    K = np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1]])
    return Frame(rgb=image(i), K=K, stamp_ns=(i + 1) * 250_000_000, frame_id="camera", c2w=c2w)


def drive(mapper: Mapper, keyframes: int, start: int = 0):
    """Offer ``keyframes`` frames STEP_M apart; returns the windows that became due."""
    windows = []
    for i in range(start, start + keyframes):
        w = mapper.add_frame(frame(i, pose(i * STEP_M)))
        windows += [w] if w is not None else []
    return windows


def first_window(mapper: Mapper):
    (window,) = drive(mapper, WINDOW)
    return mapper.process_window(window)


# ------------------------------------------------------------------ keyframes and windows


def test_a_frame_becomes_a_keyframe_only_when_the_camera_moved_or_turned_enough():
    mapper = new_mapper()
    offered = [pose(0.0), pose(0.03), pose(0.08), pose(0.15), pose(0.15, yaw_deg=5.0), pose(0.15, yaw_deg=12.0)]
    admitted = []
    for i, c2w in enumerate(offered):
        before = mapper.stats()["num_keyframes_total"]
        mapper.add_frame(frame(i, c2w))
        admitted.append(mapper.stats()["num_keyframes_total"] > before)
    # first; 3 cm; 8 cm; 15 cm from the first keyframe; 5 degrees; 12 degrees
    assert admitted == [True, False, False, True, False, True]


def test_a_window_of_the_newest_keyframes_is_due_after_window_size_then_every_stride_keyframes():
    windows = drive(new_mapper(), 7)
    assert [w.keyframe_ids for w in windows] == [[0, 1, 2], [2, 3, 4], [4, 5, 6]]
    assert [w.window_id for w in windows] == [0, 1, 2]


def test_a_frame_without_a_pose_is_refused():
    with pytest.raises(ValueError, match="posed frame"):
        new_mapper().add_frame(frame(0, None))


# ------------------------------------------------------------------ a window into the map


def test_a_window_puts_each_views_gaussians_on_the_plane_in_front_of_its_camera_in_the_map_frame():
    mapper = new_mapper()
    result = first_window(mapper)
    g = result.gaussians
    assert len(g) == result.num_gaussians_window == WINDOW * GAUSSIANS_PER_VIEW
    for v, kf in enumerate(result.window.keyframes):
        means = g.means[v * GAUSSIANS_PER_VIEW:(v + 1) * GAUSSIANS_PER_VIEW].double().numpy()
        cam = (means - kf.c2w[:3, 3]) @ kf.c2w[:3, :3]
        np.testing.assert_allclose(cam[:, 2], PLANE_M, rtol=1e-5)
        u = FOCAL * cam[:, 0] / cam[:, 2] + SIZE / 2
        np.testing.assert_allclose(np.unique(np.round(u, 3)), np.arange(BLOCK / 2, SIZE, BLOCK), atol=1e-3)


def test_a_window_emits_upserts_from_which_a_subscriber_rebuilds_the_same_map():
    mapper = new_mapper()
    update = first_window(mapper).update
    assert update.revision == 1 and update.num_added == WINDOW * GAUSSIANS_PER_VIEW
    assert update.upserts and not update.deletes and not update.cleared
    assert sum(len(u.rows) for u in update.upserts) == mapper.stats()["num_gaussians"] == update.num_added

    replica = MapReplica()
    replica.apply_all(update.transport_parts())
    np.testing.assert_array_equal(np.concatenate(list(replica.chunk_arrays().values())), mapper.all_rows())


def test_the_next_window_over_the_same_plane_replaces_what_it_sees_again_instead_of_doubling_it():
    mapper = new_mapper()
    first_window(mapper)
    (window,) = drive(mapper, STRIDE, start=WINDOW)
    update = mapper.process_window(window).update
    assert update.revision == 2 and update.upserts and update.num_replaced > 0
    assert mapper.stats()["num_windows"] == 2
    assert mapper.stats()["num_gaussians"] == 2 * WINDOW * GAUSSIANS_PER_VIEW - update.num_removed
    assert mapper.stats()["num_gaussians"] < 2 * WINDOW * GAUSSIANS_PER_VIEW


# ------------------------------------------------------------------ renders


def test_the_map_renders_the_plane_from_a_keyframe_pose():
    mapper = new_mapper()
    kf = first_window(mapper).window.keyframes[-1]
    view = mapper.render(kf.c2w, kf.K, SIZE, SIZE)
    assert view.rgb.shape == (SIZE, SIZE, 3) and view.rgb.dtype == np.uint8
    hit = view.alpha > 0.5
    assert hit.mean() > 0.5
    np.testing.assert_allclose(np.nanmedian(view.depth[hit]), PLANE_M, rtol=0.05)


def test_looking_away_from_the_map_renders_the_background_and_no_depth():
    mapper = new_mapper()
    kf = first_window(mapper).window.keyframes[-1]
    view = mapper.render(pose(kf.c2w[0, 3], yaw_deg=180.0), kf.K, SIZE, SIZE)
    assert (view.alpha == 0).all() and np.isnan(view.depth).all()
    assert (view.rgb == 255).all()  # render.background: white


def test_each_window_is_rendered_at_its_newest_keyframe_and_at_the_novel_pose_behind_it():
    mapper = new_mapper()
    result = first_window(mapper)
    keyframe, novel = mapper.window_renders(result)
    assert (keyframe.name, novel.name) == ("keyframe", "novel")
    np.testing.assert_allclose(novel.c2w[:3, 3] - keyframe.c2w[:3, 3], [0.0, 0.0, -0.3])  # render.novel_offset
    assert np.nanmedian(novel.depth[novel.alpha > 0.5]) > np.nanmedian(keyframe.depth[keyframe.alpha > 0.5])
    assert "render_s" in result.timings


# ------------------------------------------------------------------ reset, save, load


def test_reset_empties_the_map_and_the_keyframes_and_starts_windows_over():
    mapper = new_mapper()
    first_window(mapper)
    old_id = mapper.stats()["map_id"]

    update = mapper.reset()

    assert update.cleared and update.map_id != old_id
    stats = mapper.stats()
    assert (stats["num_gaussians"], stats["num_chunks"], stats["num_keyframes"]) == (0, 0, 0)
    assert len(mapper.keyframes) == 0 and mapper.all_rows().shape == (0, 14)
    # the next frame is a first keyframe even where the last one was; a window needs WINDOW of them again
    assert mapper.add_frame(frame(10, pose((WINDOW - 1) * STEP_M))) is None
    (window,) = drive(mapper, WINDOW - 1, start=11)
    assert window.keyframe_ids == [3, 4, 5]  # keyframe ids are never reused


def test_save_then_load_gives_back_the_same_map(tmp_path):
    mapper = new_mapper()
    first_window(mapper)
    path = mapper.save(tmp_path / "map.ply")
    side = json.loads(sidecar_path(path).read_text())
    assert sorted(int(k) for k in side["keyframe_poses"]) == [0, 1, 2]

    other = new_mapper()
    drive(other, WINDOW, start=20)  # its own keyframes, never processed: the load replaces whatever is there
    update = other.load(path)

    assert update.cleared and len(update.upserts) == mapper.stats()["num_chunks"]
    saved, loaded = mapper.all_rows(), other.all_rows()
    assert loaded.shape == saved.shape
    np.testing.assert_array_equal(loaded[:, :3], saved[:, :3])             # positions exactly
    np.testing.assert_allclose(loaded, saved, rtol=1e-5, atol=1e-6)       # the rest through logit / log


# ------------------------------------------------------------------ an unusable pose


def offer(mapper: Mapper, reporter: DropReporter, f: Frame, T: np.ndarray):
    """What the node does when a frame's TF arrived (ros/node.py): validate the pose with
    ``place``, count a rejection by its reason, or hand the posed frame to the mapper."""
    try:
        place(f, T)
    except InputRejected as exc:
        reporter.drop(exc.rejection.reason, exc.rejection.cause, exc.rejection.message)
        return None
    return mapper.add_frame(f)


BAD_POSES = {
    "nan": np.full((4, 4), np.nan),
    "scaled rotation": np.diag([2.0, 2.0, 2.0, 1.0]),
    "reflection": np.diag([-1.0, 1.0, 1.0, 1.0]),
    "too far from the map origin": pose(1e8),
}


def test_a_frame_with_an_unusable_pose_is_dropped_under_bad_pose_and_the_map_is_kept():
    mapper, lines = new_mapper(), []
    reporter = DropReporter(lambda level, message: lines.append(message))
    first_window(mapper)
    rows, stats = mapper.all_rows(), mapper.stats()

    for i, T in enumerate(BAD_POSES.values()):
        assert offer(mapper, reporter, frame(WINDOW + i, None), T) is None

    assert reporter.counters.snapshot() == {"dropped_bad_pose": len(BAD_POSES)}
    assert lines and all("[dropped_bad_pose]" in line for line in lines)
    np.testing.assert_array_equal(mapper.all_rows(), rows)
    assert mapper.stats() == stats
    # the next good frame carries on where the map was
    assert offer(mapper, reporter, frame(9, None), pose(WINDOW * STEP_M)) is None
    assert offer(mapper, reporter, frame(10, None), pose((WINDOW + 1) * STEP_M)).keyframe_ids == [2, 3, 4]


def test_a_window_whose_gaussians_all_pass_the_opacity_floor_is_not_copied():
    import torch

    from ilrm_ros.core.gaussians import Gaussians
    from ilrm_ros.mapping.mapper import select_window_gaussians

    n = 20
    g = Gaussians(means=torch.zeros(n, 3), quats=torch.ones(n, 4), scales=torch.ones(n, 3),
                  opacities=torch.full((n,), 0.5), colors=torch.zeros(n, 3))
    assert select_window_gaussians(g, 0.1, 0) is g
    kept = select_window_gaussians(g, 0.6, 0)
    assert len(kept) == 0 and kept is not g
