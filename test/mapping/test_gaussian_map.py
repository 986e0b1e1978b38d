"""The global Gaussian map: chunk keys, fusion (replace / carve / no duplicates), caps,
frustum queries.

Scenes are planes (a wall, a floor) "observed" by cameras we construct: a tiny stand-in
for the model casts one ray per viewpoint-grid pixel and puts a Gaussian where it hits.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ilrm_ros.core.wire import COL_MEANS
from ilrm_ros.mapping.chunks import (
    ChunkUpdate,
    MapReplica,
    UpdateAction,
    array_to_gaussians,
    chunk_keys,
    chunk_to_array,
    gaussians_to_array,
    key_of,
    split_for_transport,
)
from ilrm_ros.mapping.fusion import MapConfig, WindowCameras, contribution_score
from ilrm_ros.mapping.frustum import in_view
from ilrm_ros.mapping.gaussian_map import GaussianMap
from ilrm_ros.mapping.map_bounding import smallest_first
from ilrm_ros.core.gaussians import Gaussians

IMG = 64          # image size (pixels)
FOCAL = 64.0      # ~53 degree field of view
STRIDE = 2        # one Gaussian per 2x2 pixels (the "viewpoint grid")

WALL = (torch.tensor([0.0, 0.0, 1.0]), 3.0)    # plane z = 3
FLOOR = (torch.tensor([0.0, 1.0, 0.0]), 1.0)   # plane y = 1 (OpenCV-style: y down)


# ------------------------------------------------------------------ scene helpers


def look_at(eye, target, down=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """OpenCV camera-to-world (4, 4): z towards target, y along `down` projected."""
    eye, target, down = (torch.tensor(x, dtype=torch.float32) for x in (eye, target, down))
    f = target - eye
    f = f / f.norm()
    x = torch.linalg.cross(down, f)
    x = x / x.norm()
    y = torch.linalg.cross(f, x)
    c2w = torch.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, f, eye
    return c2w


def intrinsics() -> torch.Tensor:
    return torch.tensor([[FOCAL, 0, IMG / 2], [0, FOCAL, IMG / 2], [0, 0, 1]])


def cameras(*c2ws: torch.Tensor) -> WindowCameras:
    return WindowCameras(c2w=torch.stack(c2ws), K=intrinsics().expand(len(c2ws), 3, 3), height=IMG, width=IMG)


def observe(cams: WindowCameras, planes=(WALL,), noise: float = 0.0, seed: int = 0) -> Gaussians:
    """One Gaussian per grid pixel per view at the nearest plane hit (the model stand-in).

    Returns (V * (IMG/STRIDE)^2, ...) Gaussians in view-major order, like iLRM.
    """
    gen = torch.Generator().manual_seed(seed)
    px = torch.arange(STRIDE / 2, IMG, STRIDE, dtype=torch.float32)
    vv, uu = torch.meshgrid(px, px, indexing="ij")
    out = []
    for c2w, k in zip(cams.c2w, cams.K):
        d_cam = torch.stack([(uu - k[0, 2]) / k[0, 0], (vv - k[1, 2]) / k[1, 1], torch.ones_like(uu)], -1).reshape(-1, 3)
        d = d_cam @ c2w[:3, :3].T
        o = c2w[:3, 3]
        t = torch.full((d.shape[0],), math.inf)
        for n, off in planes:
            denom = d @ n
            ti = (off - o @ n) / denom
            t = torch.where((denom.abs() > 1e-6) & (ti > 1e-3) & (ti < t), ti, t)
        hit = torch.isfinite(t)
        t = t[hit]
        if noise:
            t = t * (1 + noise * torch.randn(t.shape, generator=gen))
        means = o + t[:, None] * d[hit]
        z = t  # depth along the unit-z ray parametrisation
        footprint = (z * STRIDE / k[0, 0]).reshape(-1, 1)
        n_hit = means.shape[0]
        colors = torch.stack([torch.sin(means[:, 0]) * 0.5 + 0.5, torch.cos(means[:, 1]) * 0.5 + 0.5,
                              torch.full((n_hit,), 0.5)], -1)
        out.append(Gaussians(means=means, quats=torch.tensor([1.0, 0, 0, 0]).expand(n_hit, 4).clone(),
                             scales=footprint.expand(n_hit, 3) * torch.tensor([0.5, 0.5, 0.1]),
                             opacities=torch.full((n_hit,), 0.9), colors=colors))
    return Gaussians.cat(out)


def window_mask(gmap: GaussianMap, window_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(means (N, 3), born-by-window mask (N,)) over the whole map in chunk order."""
    born = torch.cat([gmap.chunks[k].born for k in sorted(gmap.chunks)])
    return gmap.all_gaussians().means, born == window_id


def inside_image(means: torch.Tensor, c2w: torch.Tensor, margin: float) -> torch.Tensor:
    pc = (means - c2w[:3, 3]) @ c2w[:3, :3]
    z = pc[:, 2].clamp_min(1e-6)
    u = FOCAL * pc[:, 0] / z + IMG / 2
    v = FOCAL * pc[:, 1] / z + IMG / 2
    return (pc[:, 2] > 0) & (u >= margin) & (u < IMG - margin) & (v >= margin) & (v < IMG - margin)


def unlimited(**kw) -> MapConfig:
    return MapConfig(max_gaussians_per_chunk=0, max_gaussians=0, **kw)


# ------------------------------------------------------------------ chunk keys


def test_chunk_keys_are_floor_of_position_over_chunk_size_including_negative_coordinates():
    means = torch.tensor([[-0.1, -2.0, 1.99], [-2.0001, 0.0, -0.0], [3.9999, -4.0, 4.0]])
    keys = chunk_keys(means, 2.0)
    assert keys.dtype == torch.int32
    assert keys.tolist() == [[-1, -1, 0], [-2, 0, 0], [1, -2, 2]]
    assert key_of((-0.1, -2.0, 1.99), 2.0) == (-1, -1, 0)


def test_every_gaussian_lies_inside_the_block_of_its_chunk_key():
    cams = cameras(look_at((-3.0, -0.5, -1.0), (-4.0, 0.5, 3.0)), look_at((2.0, 0.0, 0.0), (3.0, 1.0, 3.0)))
    gmap = GaussianMap(unlimited(chunk_size_m=0.7))
    gmap.integrate(observe(cams, planes=(WALL, FLOOR)), cams, window_id=0)
    assert any(k[0] < 0 for k in gmap.chunks) and any(k[0] > 0 for k in gmap.chunks)
    for key, chunk in gmap.chunks.items():
        lo = torch.tensor(key, dtype=torch.float64) * 0.7
        m = chunk.rows[:, COL_MEANS].double()
        assert bool(((m >= lo - 1e-9) & (m < lo + 0.7 + 1e-9)).all()), key


# ------------------------------------------------------------------ fusion


def test_same_window_twice_with_fusion_does_not_duplicate_and_without_fusion_doubles():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)), look_at((0.3, 0, -1.0), (0.3, 0.5, 3.0)))
    g = observe(cams, planes=(WALL, FLOOR))
    fused, plain = GaussianMap(unlimited()), GaussianMap(unlimited(fusion=False))
    for m in (fused, plain):
        m.integrate(g, cams, window_id=0)
    once = len(fused)
    assert once == len(plain) > 1000
    fused.integrate(g, cams, window_id=1)
    plain.integrate(g, cams, window_id=1)
    assert len(fused) <= 1.1 * once
    assert len(plain) == 2 * once


def test_noisy_repeated_observations_stay_bounded_with_fusion():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)), look_at((0.3, 0, -1.0), (0.3, 0.5, 3.0)))
    gmap = GaussianMap(unlimited())
    counts = []
    for w in range(6):
        gmap.integrate(observe(cams, planes=(WALL, FLOOR), noise=0.005, seed=w), cams, window_id=w)
        counts.append(len(gmap))
    assert max(counts) <= 1.1 * counts[0]


def test_closer_camera_replaces_the_farther_cameras_gaussians_where_it_sees():
    far = cameras(look_at((0, 0, -3.0), (0, 0, 3.0)))
    near_c2w = look_at((0.5, 0.2, 1.5), (0.5, 0.2, 3.0))
    near = cameras(near_c2w)
    gmap = GaussianMap(unlimited())
    gmap.integrate(observe(far), far, window_id=0)
    gmap.integrate(observe(near), near, window_id=1)
    means, from_far = window_mask(gmap, 0)
    seen_close = inside_image(means, near_c2w, margin=STRIDE * 2)
    assert int(seen_close.sum()) > 500
    assert int((from_far & seen_close).sum()) == 0            # replaced there ...
    assert int((from_far & ~inside_image(means, near_c2w, margin=-8)).sum()) > 500  # ... kept elsewhere

    # The far camera again: it must not overwrite the close observation nor add duplicates.
    gmap.integrate(observe(far), far, window_id=2)
    means, from_near = window_mask(gmap, 1)
    _, from_far_again = window_mask(gmap, 2)
    inner = inside_image(means, near_c2w, margin=STRIDE * 2)
    assert int((from_near & inner).sum()) == int(seen_close.sum())
    assert int((from_far_again & inner).sum()) <= 0.02 * int(inner.sum())


def test_carving_removes_stale_gaussians_in_front_of_a_newly_observed_surface():
    ghost_plane = (torch.tensor([0.0, 0.0, 1.0]), 1.5)   # an object at z = 1.5 that has since gone
    cam_a = cameras(look_at((0, 0, -0.5), (0, 0, 3.0)))
    gmap = GaussianMap(unlimited())
    gmap.integrate(observe(cam_a, planes=(ghost_plane,)), cam_a, window_id=0)
    behind = observe(cameras(look_at((0, 0, 3.5), (0, 0, 10.0))), planes=((torch.tensor([0.0, 0, 1]), 4.5),))
    gmap.add(behind, window_id=-1)   # occluded by the wall for the next camera: must stay
    n_ghost = int((gmap.all_gaussians().means[:, 2] < 2).sum())
    assert n_ghost > 500

    cam_b_c2w = look_at((0.4, 0, -1.0), (0.4, 0, 3.0))
    cam_b = cameras(cam_b_c2w)
    update = gmap.integrate(observe(cam_b, planes=(WALL,)), cam_b, window_id=1)
    means = gmap.all_gaussians().means
    ghost_left = means[:, 2] < 2
    in_view = inside_image(means, cam_b_c2w, margin=STRIDE * 2)
    assert int((ghost_left & in_view).sum()) == 0
    assert update.num_carved > 0.5 * n_ghost
    assert int((means[:, 2] > 4).sum()) == len(behind)       # behind the wall: untouched
    assert int((means[:, 2] - 3.0).abs().lt(0.01).sum()) > 500   # the wall is in


def test_pruning_drops_transparent_and_tiny_gaussians():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    g = observe(cams)
    n = len(g)
    g.opacities[: n // 4] = 0.001
    g.scales[n // 4: n // 2] = 1e-6
    gmap = GaussianMap(unlimited(min_opacity=0.005, min_scale=1e-4))
    gmap.integrate(g, cams, window_id=0)
    assert len(gmap) == n - n // 2


def test_dedup_voxel_keeps_at_most_one_gaussian_per_cell():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)), look_at((0.05, 0, -1.0), (0.05, 0, 3.0)))
    gmap = GaussianMap(unlimited(dedup_voxel=0.1))
    gmap.integrate(observe(cams), cams, window_id=0)
    cells = chunk_keys(gmap.all_gaussians().means, 0.1)
    assert len(torch.unique(cells, dim=0)) == len(gmap)


# ------------------------------------------------------------------ caps and eviction


def _random_windows(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    for w in range(n):
        eye = (torch.rand(3, generator=gen) * torch.tensor([8.0, 0.5, 2.0]) - torch.tensor([4.0, 0.5, 1.0])).tolist()
        target = [eye[0] + float(torch.randn(1, generator=gen)), 0.5, 3.0]
        cams = cameras(look_at(eye, target), look_at([eye[0] + 0.2, eye[1], eye[2]], target))
        yield w, cams, observe(cams, planes=(WALL, FLOOR), noise=0.01, seed=w)


@pytest.mark.parametrize("mode", ["global", "local"])
def test_caps_hold_and_eviction_is_deterministic(mode):
    def run():
        gmap = GaussianMap(MapConfig(chunk_size_m=1.0, max_gaussians_per_chunk=900, max_gaussians=6000,
                                        eviction=mode, evict_to_fraction=0.9))
        evicted = 0
        for w, cams, g in _random_windows(6):
            evicted += gmap.integrate(g, cams, window_id=w).num_evicted
            assert len(gmap) <= 6000
            assert max(len(c) for c in gmap.chunks.values()) <= 900
        assert evicted > 0
        return gmap

    a, b = run(), run()
    assert 5400 <= len(a) <= 6000
    ga, gb = a.all_gaussians(), b.all_gaussians()
    assert torch.equal(ga.means, gb.means) and torch.equal(ga.colors, gb.colors)
    assert sorted(a.chunks) == sorted(b.chunks)


def _flat_gaussians(means: torch.Tensor, opacities: torch.Tensor) -> Gaussians:
    n = means.shape[0]
    return Gaussians(means=means, quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(),
                     scales=torch.full((n, 3), 0.01), opacities=opacities, colors=torch.full((n, 3), 0.5))


def test_global_eviction_keeps_the_highest_contribution_scores():
    n = 200
    means = torch.rand(n, 3) * 4 - 2
    opac = torch.rand(n) * 0.9 + 0.05
    gmap = GaussianMap(MapConfig(max_gaussians_per_chunk=0, max_gaussians=50, eviction="global",
                                    evict_to_fraction=1.0, eviction_pool=1.0))
    gmap.add(_flat_gaussians(means, opac), window_id=0)
    kept = gmap.all_gaussians().opacities
    assert len(kept) == 50
    assert torch.equal(torch.sort(kept).values, torch.sort(opac).values[-50:])


def test_local_eviction_drops_the_farthest_from_the_robot_first():
    n = 300
    means = torch.rand(n, 3) * 10 - 5
    gmap = GaussianMap(MapConfig(max_gaussians_per_chunk=0, max_gaussians=100, eviction="local",
                                    evict_to_fraction=1.0, eviction_pool=1.0))
    cams = cameras(look_at((1.0, 0, 0), (1.0, 0, 5.0)))
    robot = torch.tensor([3.0, 0.0, 0.0])
    gmap.integrate(_flat_gaussians(means, torch.full((n,), 0.8)), cams, window_id=0, robot_position=robot)
    kept = gmap.all_gaussians().means
    d_all = torch.sort((means - robot).norm(dim=1)).values
    assert len(kept) == 100
    assert float((kept - robot).norm(dim=1).max()) == pytest.approx(float(d_all[99]), abs=1e-6)


def test_an_exceeded_cap_is_brought_down_to_the_low_watermark_then_left_alone():
    cfg = MapConfig(max_gaussians_per_chunk=0, max_gaussians=1000, evict_to_fraction=0.8)
    gmap = GaussianMap(cfg)
    gen = torch.Generator().manual_seed(0)
    sizes, evicted = [], []
    for w in range(6):
        up = gmap.add(_flat_gaussians(torch.rand(150, 3, generator=gen) * 4, torch.full((150,), 0.5)), window_id=w)
        sizes.append(len(gmap))
        evicted.append(up.num_evicted)
    assert sizes == [150, 300, 450, 600, 750, 900]
    up = gmap.add(_flat_gaussians(torch.rand(150, 3, generator=gen) * 4, torch.full((150,), 0.5)), window_id=6)
    assert len(gmap) == 800 and up.num_evicted == 250 and sum(evicted) == 0


def test_eviction_ties_go_oldest_window_first_then_oldest_insertion():
    prio = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.5])
    born = torch.tensor([3, 2, 2, 5], dtype=torch.int32)
    born = torch.cat([born, torch.tensor([9], dtype=torch.int32)])
    gid = torch.tensor([10, 12, 11, 1, 50])
    assert smallest_first(prio, born, gid, 3).tolist() == [4, 2, 1]


def test_contribution_score_grows_with_opacity_size_and_observations():
    rows = torch.zeros(3, 14)
    rows[:, 6] = torch.tensor([0.5, 1.0, 1.0])
    rows[:, 7:10] = torch.tensor([[0.1] * 3, [0.1] * 3, [0.2] * 3])
    s = contribution_score(rows, torch.tensor([1, 1, 1]))
    assert s[0] < s[1] < s[2]
    assert contribution_score(rows, torch.tensor([2, 2, 2]))[0] == pytest.approx(2 * float(s[0]))


def test_memory_and_stats_track_the_content():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    gmap = GaussianMap(unlimited())
    assert gmap.memory_bytes() == 0
    gmap.integrate(observe(cams), cams, window_id=7, keyframe_ids=[1, 2])
    st = gmap.stats()
    assert st["num_gaussians"] == len(gmap) > 0
    assert st["num_chunks"] == len(gmap.chunks)
    assert st["memory_bytes"] == gmap.memory_bytes() >= 56 * len(gmap)
    assert st["revision"] == 1 and st["num_windows"] == 1 and st["num_keyframes"] == 2
    assert all(c.window_ids == [7] for c in gmap.chunks.values())


# ------------------------------------------------------------------ queries


def test_frustum_rows_taken_before_a_window_give_the_map_as_it_was_then():
    """The live-quality views take the rows before their window is fused and cull them after its chunks
    went out: the map's arrays are never changed in place, so the result is that of the earlier map."""
    first = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    gmap = GaussianMap(MapConfig(chunk_size_m=0.5))
    gmap.integrate(observe(first), first, window_id=0)
    query = look_at((0.2, 0, -0.5), (0.0, 0.2, 3.0))
    before = gmap.gaussians_in_frustum(query, intrinsics(), IMG, IMG)
    taken = gmap.frustum_rows(query, intrinsics(), IMG, IMG)
    closer = cameras(look_at((0, 0, 1.0), (0, 0, 3.0)))
    update = gmap.integrate(observe(closer, noise=0.01, seed=3), closer, window_id=1)   # replaces / adds there
    assert update.updates and len(before) > 0
    later = taken.gaussians()
    assert torch.equal(later.means, before.means) and torch.equal(later.colors, before.colors)
    assert not torch.equal(gmap.gaussians_in_frustum(query, intrinsics(), IMG, IMG).means, before.means)


def test_frustum_query_matches_brute_force_culling_and_skips_chunks_behind():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)), look_at((2.0, 0, 5.0), (2.0, 0.5, 0.0)))
    gmap = GaussianMap(unlimited(chunk_size_m=0.5))
    gmap.integrate(observe(cams, planes=(WALL, FLOOR)), cams, window_id=0)
    query = look_at((-1.0, 0, 0.0), (-1.0, 0.3, 3.0))
    got = gmap.gaussians_in_frustum(query, intrinsics(), IMG, IMG, near=0.01, far=100.0)
    every = gmap.all_gaussians()
    visible = inside_image(every.means, query, margin=0.0)
    assert 0 < len(got) < len(every)
    got_set = {tuple(x) for x in got.means.tolist()}
    assert all(tuple(x) in got_set for x in every.means[visible].tolist())
    behind = ((got.means - query[:3, 3]) @ query[:3, 2]) < -0.2
    assert int(behind.sum()) == 0


def test_rows_in_views_are_the_rows_any_camera_sees_grouped_by_chunk():
    """The map refiner's gathering: every row of every chunk that one of the cameras (each with its own image
    size) may see, as brute-force culling over all rows finds them, grouped by chunk in key order."""
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)), look_at((2.0, 0, 5.0), (2.0, 0.5, 0.0)))
    gmap = GaussianMap(unlimited(chunk_size_m=0.5))
    gmap.integrate(observe(cams, planes=(WALL, FLOOR)), cams, window_id=0)
    views = [WindowCameras(c2w=look_at((-1.0, 0, 0.0), (-1.0, 0.3, 3.0)), K=intrinsics(), height=IMG, width=IMG),
             WindowCameras(c2w=look_at((1.5, 0, 0.5), (1.0, 0.8, 3.0)), K=intrinsics(), height=IMG // 2,
                           width=IMG)]
    got = gmap.rows_in_views(views)
    keys = [part[0] for part in got]
    assert keys == sorted(keys) and 0 < len(keys) < len(gmap.chunks)
    expected = {}
    for key, chunk in gmap.chunks.items():
        rows = chunk.rows.numpy()
        seen = in_view(rows, views[0], 0.01, 1e4, 3.0) | in_view(rows, views[1], 0.01, 1e4, 3.0)
        if seen.any():
            expected[key] = (np.flatnonzero(seen), rows[seen], chunk.last_window_id)
    assert keys == list(expected)
    for key, idx, chunk_rows, last_window in got:
        np.testing.assert_array_equal(idx, expected[key][0])
        np.testing.assert_array_equal(chunk_rows[idx], expected[key][1])
        np.testing.assert_array_equal(chunk_rows, gmap.chunks[key].rows.numpy())
        assert last_window == expected[key][2] == 0
    half = gmap.rows_in_views(views[1:])   # the half-height camera alone sees fewer rows than at full height
    full = gmap.rows_in_views([WindowCameras(c2w=views[1].c2w, K=intrinsics(), height=IMG, width=IMG)])
    assert 0 < sum(len(p[1]) for p in half) < sum(len(p[1]) for p in full)
    assert gmap.rows_in_views([WindowCameras(c2w=look_at((0, 0, -1.0), (0, 0, -5.0)), K=intrinsics(), height=IMG,
                                             width=IMG)]) == []   # looking away from everything


def test_all_gaussians_is_ordered_by_chunk_key():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    gmap = GaussianMap(unlimited(chunk_size_m=0.5))
    gmap.integrate(observe(cams, planes=(WALL, FLOOR)), cams, window_id=0)
    keys = chunk_keys(gmap.all_gaussians().means, 0.5).tolist()
    assert keys == sorted(keys)
    assert np.array_equal(np.unique(np.array(keys), axis=0), np.array(sorted(gmap.chunks)))


# ------------------------------------------------------------------ chunk updates and transport


def _map_rows(gmap: GaussianMap) -> np.ndarray:
    return np.concatenate([gmap.chunks[k].rows.numpy() for k in sorted(gmap.chunks)]) if gmap.chunks \
        else np.zeros((0, 14), np.float32)


def _replica_rows(rep: MapReplica) -> np.ndarray:
    arrays = list(rep.chunk_arrays().values())
    return np.concatenate(arrays) if arrays else np.zeros((0, 14), np.float32)


def test_replica_rebuilt_from_the_update_stream_equals_the_map_bit_for_bit():
    cfg = MapConfig(chunk_size_m=1.0, max_gaussians_per_chunk=700, max_gaussians=5000, eviction="local")
    gmap = GaussianMap(cfg)
    rep = MapReplica()
    rng = np.random.default_rng(0)
    sent: list[ChunkUpdate] = []
    actions = {UpdateAction.UPSERT: 0, UpdateAction.DELETE: 0, UpdateAction.CLEAR: 0}
    max_parts = 0
    for w, cams, g in _random_windows(14, seed=3):
        update = gmap.reset() if w == 8 else gmap.integrate(g, cams, window_id=w, keyframe_ids=[2 * w, 2 * w + 1])
        parts = update.transport_parts(max_bytes=16 * 1024)
        for p in parts:
            actions[p.action] += 1
            max_parts = max(max_parts, p.num_parts)
        # Parts of one revision may arrive in any order; stale messages arrive late.
        order = rng.permutation(len(parts))
        stale = [sent[i] for i in rng.choice(len(sent), size=min(10, len(sent)), replace=False)] if sent else []
        rep.apply_all([parts[i] for i in order] + stale)
        sent.extend(parts)
        assert rep.num_incomplete() == 0
        np.testing.assert_array_equal(_replica_rows(rep), _map_rows(gmap))
        assert sorted(rep.chunk_arrays()) == sorted(gmap.chunks)
    assert actions[UpdateAction.DELETE] > 0 and actions[UpdateAction.CLEAR] == 1 and max_parts > 1
    assert rep.num_ignored > 0
    # A subscriber joining late rebuilds the same map from a snapshot; a current one ignores it.
    late = MapReplica()
    late.apply_all(gmap.snapshot().transport_parts())
    np.testing.assert_array_equal(_replica_rows(late), _map_rows(gmap))
    ignored_before = rep.num_ignored
    rep.apply_all(gmap.snapshot().updates)
    assert rep.num_ignored - ignored_before == len(gmap.chunks) + 1
    assert torch.equal(rep.gaussians().means, gmap.all_gaussians().means)


def test_replica_ignores_older_revisions_and_keeps_deleted_chunks_deleted():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    gmap = GaussianMap(unlimited(chunk_size_m=0.5))
    first = gmap.integrate(observe(cams), cams, window_id=0)
    key = first.upserts[0].key
    chunk_rev1 = first.upserts[0]
    delete = ChunkUpdate(UpdateAction.DELETE, gmap.map_id, key, 0.5, revision=5)
    rep = MapReplica()
    rep.apply_all(first.updates)
    assert key in rep.chunk_arrays()
    assert rep.apply(delete) is True
    assert rep.apply(chunk_rev1) is False            # older than the delete: no resurrection
    assert key not in rep.chunk_arrays()


def test_replica_shows_a_multi_part_chunk_only_when_all_parts_arrived():
    rows = np.arange(3000 * 14, dtype=np.float32).reshape(3000, 14)
    whole = ChunkUpdate(UpdateAction.UPSERT, "m", (0, 0, 0), 1.0, revision=1, rows=rows)
    parts = split_for_transport(whole, max_bytes=20_000)
    assert len(parts) > 2
    rep = MapReplica()
    rep.apply_all(parts[:-1])
    assert rep.chunk_arrays() == {} and rep.num_incomplete() == 1
    rep.apply(parts[-1])
    np.testing.assert_array_equal(rep.chunk_arrays()[(0, 0, 0)], rows)


def test_split_for_transport_keeps_every_message_within_one_mebibyte():
    n = 50_000
    rows = np.random.default_rng(1).random((n, 14), dtype=np.float32)
    whole = ChunkUpdate(UpdateAction.UPSERT, "m", (1, -2, 3), 2.0, revision=9, rows=rows,
                        keyframe_ids=tuple(range(64)))
    parts = split_for_transport(whole)
    assert len(parts) == math.ceil(n * 56 / (1 << 20)) or len(parts) == math.ceil(n * 56 / (1 << 20)) + 1
    assert all(p.nbytes() <= 1 << 20 for p in parts)
    assert all(p.rows.nbytes + 4096 + 8 * 64 <= 1 << 20 for p in parts)
    assert [p.part for p in parts] == list(range(len(parts)))
    assert {p.num_parts for p in parts} == {len(parts)} and {p.revision for p in parts} == {9}
    np.testing.assert_array_equal(np.concatenate([chunk_to_array(p) for p in parts]), rows)
    for p in parts:
        np.testing.assert_allclose(p.bounds_min, p.rows[:, :3].min(0), rtol=0, atol=0)
    small = split_for_transport(ChunkUpdate(UpdateAction.UPSERT, "m", (0, 0, 0), 2.0, 1, rows=rows[:10]))
    assert len(small) == 1 and small[0].num_parts == 1


def test_row_layout_round_trips_through_gaussians():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    g = observe(cams)
    arr = gaussians_to_array(g).numpy()
    assert arr.shape == (len(g), 14) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr[:, 0:3], g.means.numpy())
    np.testing.assert_array_equal(arr[:, 3:6], g.colors.numpy())
    np.testing.assert_array_equal(arr[:, 6], g.opacities.numpy())
    np.testing.assert_array_equal(arr[:, 7:10], g.scales.numpy())
    np.testing.assert_array_equal(arr[:, 10:14], g.quats.numpy())
    back = array_to_gaussians(arr)
    assert torch.equal(back.quats, g.quats) and torch.equal(back.opacities, g.opacities)


def test_emptied_chunks_are_sent_as_delete_and_reset_as_clear():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    gmap = GaussianMap(MapConfig(chunk_size_m=0.5, max_gaussians_per_chunk=0, max_gaussians=1,
                                    eviction="global"))
    up = gmap.integrate(observe(cams), cams, window_id=0)
    assert len(gmap) == 1 and len(up.upserts) == 1
    assert len(up.deletes) == 0   # chunks emptied within one operation were never sent
    clear = gmap.reset()
    assert clear.cleared and clear.revision > up.revision and len(gmap) == 0
    cams2 = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    gmap2 = GaussianMap(unlimited(chunk_size_m=0.5))
    gmap2.integrate(observe(cams2, planes=((torch.tensor([0.0, 0, 1]), 1.5),)), cams2, window_id=0)
    before = set(gmap2.chunks)
    up2 = gmap2.integrate(observe(cams2), cams2, window_id=1)   # carves the z = 1.5 plane entirely
    deleted = {u.key for u in up2.deletes}
    assert deleted and deleted <= before and not (deleted & set(gmap2.chunks))
    assert all(u.revision == up2.revision for u in up2.updates)


def test_an_expected_depth_image_can_stand_in_for_the_z_buffer_of_the_means():
    ghost_plane = (torch.tensor([0.0, 0.0, 1.0]), 1.5)
    cam_c2w = look_at((0, 0, -0.5), (0, 0, 3.0))

    def run(with_depth: bool) -> int:
        gmap = GaussianMap(unlimited())
        cams = cameras(cam_c2w)
        gmap.integrate(observe(cams, planes=(ghost_plane,)), cams, window_id=0)
        wall = observe(cams)
        sparse = wall.index(torch.arange(0, len(wall), 37))   # too few means to z-buffer most cells
        depth = torch.full((1, IMG, IMG), 3.5)                # the wall's z seen from z = -0.5
        cams2 = WindowCameras(c2w=cam_c2w[None], K=intrinsics()[None], height=IMG, width=IMG,
                              depths=depth if with_depth else None)
        return gmap.integrate(sparse, cams2, window_id=1).num_carved

    assert run(with_depth=True) > 3 * run(with_depth=False)


def test_replica_follows_a_new_session_with_a_lower_revision_count_and_ignores_the_old_one():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    old = GaussianMap(unlimited(chunk_size_m=0.5))
    old_stream = []
    for w in range(3):
        old_stream += old.integrate(observe(cams, noise=0.01, seed=w), cams, window_id=w).updates
    rep = MapReplica()
    rep.apply_all(old_stream)
    new = GaussianMap(unlimited(chunk_size_m=0.5))               # e.g. a map loaded from disk
    new.add(observe(cameras(look_at((1.0, 0, -1.0), (1.0, 0, 3.0)))))
    assert new.revision < old.revision
    rep.apply_all(new.snapshot().updates)
    rep.apply_all(old_stream[-3:])                               # late messages of the old session
    np.testing.assert_array_equal(_replica_rows(rep), _map_rows(new))
    assert rep.map_id == new.map_id


def test_rows_handed_out_in_updates_are_never_changed_by_later_windows():
    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    gmap = GaussianMap(unlimited())
    first = gmap.integrate(observe(cams), cams, window_id=0)
    copies = [u.rows.copy() for u in first.updates]
    closer = cameras(look_at((0, 0, 0.5), (0, 0, 3.0)))
    second = gmap.integrate(observe(closer, noise=0.01, seed=1), closer, window_id=1)
    assert second.num_replaced > 0
    for u, c in zip(first.updates, copies):
        np.testing.assert_array_equal(u.rows, c)
        assert not u.rows.flags.writeable


def _project_torch(means, cams, downsample, near):
    """The plain torch twin of fusion.project (its code before the numpy passes)."""
    rot_t = cams.c2w[:, :3, :3].transpose(1, 2)
    pc = torch.baddbmm(-(rot_t @ cams.centers[:, :, None]), rot_t, means.T.contiguous().expand(len(cams), 3, -1))
    x, y, z = pc.unbind(1)
    inv_z = z.clamp_min(1e-9).reciprocal()
    k = cams.K
    u = (k[:, 0, 0, None] * x + k[:, 0, 1, None] * y) * inv_z + k[:, 0, 2, None]
    v = k[:, 1, 1, None] * y * inv_z + k[:, 1, 2, None]
    visible = (z > near) & (u >= 0) & (u < cams.width) & (v >= 0) & (v < cams.height)
    w = -(-cams.width // downsample)
    cell = torch.where(visible, (v / downsample).long() * w + (u / downsample).long(), 0)
    return z, cell, visible, (x * x + y * y + z * z).sqrt()


def test_project_gives_the_bits_of_the_plain_torch_projection():
    from ilrm_ros.mapping.fusion import project

    gen = torch.Generator().manual_seed(5)
    means = torch.randn(5000, 3, generator=gen) * 3.0
    means[:10] = torch.tensor([float("nan"), 0.0, 1.0])  # non-finite rows are invisible, cell 0
    c2w = torch.eye(4).repeat(3, 1, 1)
    c2w[:, 0, 3] = torch.tensor([-0.5, 0.0, 0.7])
    K = torch.tensor([[50.3, 0.2, 31.7], [0.0, 49.1, 24.2], [0.0, 0.0, 1.0]])
    cams = WindowCameras(c2w=c2w, K=K, height=48, width=64)
    p = project(means, cams, 4, 0.05)
    z, cell, visible, dist = _project_torch(means, cams, 4, 0.05)
    assert visible.any() and not visible.all()
    assert torch.equal(p.visible, visible) and torch.equal(p.cell, cell)
    for got, want in ((p.z, z), (p.dist, dist)):  # bit for bit (NaN where the mean is NaN)
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_prune_mask_equals_its_plain_torch_twin_on_non_finite_and_huge_rows():
    from ilrm_ros.mapping.fusion import prune_mask

    gen = torch.Generator().manual_seed(6)
    rows = torch.rand(400, 14, generator=gen) * 0.02
    rows[:, 6] = torch.rand(400, generator=gen) * 0.02        # opacities around min_opacity
    rows[0, 3], rows[1, 12], rows[2, 8] = float("nan"), float("inf"), float("-inf")
    rows[3, :] = 3.0e38                                         # huge but finite: its sum overflows float32
    cfg = MapConfig(max_scale=0.015)
    smax = rows[:, 7:10].amax(dim=1)
    plain = torch.isfinite(rows).all(dim=1) & (rows[:, 6] >= cfg.min_opacity) & (smax >= cfg.min_scale)
    plain &= smax <= cfg.max_scale
    got = prune_mask(rows, cfg)
    assert torch.equal(got, plain) and not got[:3].any() and 0 < int(got.sum()) < 400
    rows[3, 6:10] = torch.tensor([0.5, 0.01, 0.01, 0.01])    # huge means, plausible rest: kept
    assert bool(prune_mask(rows, cfg)[3])


def test_integrate_runs_torch_single_threaded_and_restores_the_thread_count():
    import ilrm_ros.mapping.fusion as fusion_module

    cams = cameras(look_at((0, 0, -1.0), (0, 0, 3.0)))
    g = observe(cams)
    seen = []
    project = fusion_module.project

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return project(*args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gmap = GaussianMap(unlimited())
        import ilrm_ros.mapping.gaussian_map as gm
        gm.project = spy
        try:
            gmap.integrate(g, cams, window_id=0)
        finally:
            gm.project = project
        assert seen == [1] and torch.get_num_threads() == 2 and len(gmap) > 0
    finally:
        torch.set_num_threads(before)
