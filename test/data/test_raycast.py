"""The analytic ray caster: depths against closed-form values, culling against brute force."""
import math

import numpy as np
import pytest

from ilrm_ros.data.primitives import intersect_enclosure, intersect_primitive, surface_frame
from ilrm_ros.data.raycast import camera_rays, cast_rays, render_depth
from ilrm_ros.data.scene_geometry import NUM_ENCLOSURE_FACES, SceneGeometry, signed_distance, split
from ilrm_ros.data.scene import Scene, render
from ilrm_ros.data.textures import Material
from ilrm_ros.data.path_geometry import body_to_camera_c2w


def _k(f, w, h):
    return np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])


def _room(**solids):
    return SceneGeometry(room_lo=[-5, -5, 0], room_hi=[5, 5, 3], **solids)


def _look_along_x(pos):
    """OpenCV camera at pos looking along world +x, level (image down = world -z)."""
    return body_to_camera_c2w(np.asarray(pos, float), yaw=0.0, pitch=0.0, roll=0.0)


def test_camera_facing_a_wall_sees_its_analytic_z_depth_everywhere():
    geo = _room()
    c2w = _look_along_x([1.0, 0.3, 1.5])  # wall x = 5 is 4 m ahead; z-depth is 4 for every pixel
    depth = render_depth(geo, c2w, _k(200.0, 32, 32), 32, 32)  # narrow enough to see only that wall
    np.testing.assert_allclose(depth, 4.0, rtol=1e-6)


def test_tilted_camera_depth_matches_ray_plane_formula():
    geo = _room()
    pitch = math.radians(30)  # looking down at the floor from 1.2 m
    c2w = body_to_camera_c2w(np.array([0.0, 0.0, 1.2]), yaw=0.4, pitch=pitch, roll=0.0)
    w, h, k = 24, 16, _k(30.0, 24, 16)
    depth = render_depth(geo, c2w, k, w, h)
    o, d = camera_rays(c2w, k, w, h)
    dz = d[2].reshape(h, w)
    floor_t = -1.2 / dz  # ray parameter to the floor z = 0 (the direction has unit z-depth)
    sees_floor = dz < 0
    assert sees_floor.mean() > 0.9
    expected = np.where(sees_floor, floor_t, depth)
    np.testing.assert_allclose(depth[sees_floor & (floor_t < 4.0)], expected[sees_floor & (floor_t < 4.0)],
                               rtol=1e-6)


def test_pixel_centre_convention_puts_the_principal_point_between_pixels():
    c2w = _look_along_x([0, 0, 1.5])
    o, d = camera_rays(c2w, _k(10.0, 4, 4), 4, 4)
    dirs = np.stack(d, 1).reshape(4, 4, 3)
    # pixels (1,1) and (2,2) are symmetric about the centre (2, 2) of a 4x4 image
    np.testing.assert_allclose(dirs[1, 1, 1:], -dirs[2, 2, 1:])
    np.testing.assert_allclose(dirs[..., 0], 1.0)  # unit component along the optical axis (world x)


def test_sphere_silhouette_radius_matches_projection():
    r, dist, f, n = 0.5, 4.0, 100.0, 101
    geo = _room(sph_center=[[1.0 + dist, 0.0, 1.5]], sph_radius=[r])
    geo.room_hi[0] = 9.0
    o, d = camera_rays(_look_along_x([1.0, 0.0, 1.5]), _k(f, n, n), n, n)
    hit = cast_rays(geo, o, d)
    depth = hit.t.reshape(n, n)
    on_sphere = (hit.prim == geo.first_sphere).reshape(n, n)
    # silhouette of a sphere seen head-on: a disc of radius f * r / sqrt(d^2 - r^2) pixels
    expected_radius = f * r / math.sqrt(dist**2 - r**2)
    measured_radius = math.sqrt(on_sphere.sum() / math.pi)
    assert measured_radius == pytest.approx(expected_radius, rel=0.02)
    assert depth[n // 2, n // 2] == pytest.approx(dist - r, rel=1e-6)  # nearest point, on the axis
    assert on_sphere[n // 2, n // 2] and not on_sphere[0, 0]


def test_box_cylinder_and_sphere_depths_on_the_optical_axis():
    cam = [0.0, 0.0, 1.0]
    c2w = _look_along_x(cam)
    k = _k(10.0, 3, 3)  # pixel (1, 1) looks exactly along the optical axis
    cases = [
        (_room(box_center=[[3.0, 0.0, 1.0]], box_half=[[0.5, 0.4, 0.3]], box_yaw=[0.0]), 2.5),
        (_room(box_center=[[3.0, 0.0, 1.0]], box_half=[[0.5, 0.5, 0.3]], box_yaw=[math.pi / 4]),
         3.0 - 0.5 * math.sqrt(2)),  # rotated 45 degrees: its edge points at the camera
        (_room(cyl_xy=[[2.0, 0.0]], cyl_radius=[0.3], cyl_z=[[0.0, 2.0]]), 1.7),
        (_room(sph_center=[[2.0, 0.0, 1.0]], sph_radius=[0.25]), 1.75),
    ]
    for geo, expected in cases:
        depth = render_depth(geo, c2w, k, 3, 3)
        assert depth[1, 1] == pytest.approx(expected, rel=1e-9)


def test_cylinder_cap_seen_from_above():
    geo = _room(cyl_xy=[[0.0, 0.0]], cyl_radius=[0.5], cyl_z=[[0.0, 0.8]])
    c2w = body_to_camera_c2w(np.array([0.0, 0.0, 2.0]), yaw=0.0, pitch=math.pi / 2, roll=0.0)  # straight down
    depth = render_depth(geo, c2w, _k(10.0, 3, 3), 3, 3)
    assert depth[1, 1] == pytest.approx(1.2, rel=1e-9)


def test_normals_point_back_towards_the_camera():
    geo = _room(box_center=[[2.5, 0.5, 1.0]], box_half=[[0.3, 0.3, 0.3]], box_yaw=[0.3],
                cyl_xy=[[2.5, -1.0]], cyl_radius=[0.3], cyl_z=[[0.0, 1.0]],
                sph_center=[[3.0, 0.0, 2.0]], sph_radius=[0.4])
    o, d = camera_rays(_look_along_x([0.0, 0.0, 1.2]), _k(20.0, 40, 30), 40, 30)
    dirs = np.stack(d, 1)
    hit = cast_rays(geo, o, dirs)
    points = o[None] + hit.t[:, None] * dirs
    normals, uv = surface_frame(geo, hit, points)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, rtol=1e-9)
    assert np.all(np.einsum("rk,rk->r", normals, dirs) < 0)
    assert set(np.unique(hit.prim)) >= {6, 7, 8}  # all three solids are in view


def _brute_force(geo, o, d):
    """Nearest hit over every primitive without any culling (reference)."""
    comps = split(d)
    t, face = intersect_enclosure(geo.room_lo, geo.room_hi, o, comps)
    prim = face.astype(np.int32)
    for gid in range(NUM_ENCLOSURE_FACES, geo.num_primitives):
        th, _ = intersect_primitive(geo, gid, o, comps, 1e-6)
        better = th < t
        t = np.where(better, th, t)
        prim = np.where(better, gid, prim)
    return t, prim


def test_culled_casting_equals_brute_force_in_random_scenes():
    rng = np.random.default_rng(0)
    for trial in range(6):
        geo = _room(
            box_center=rng.uniform([-4, -4, 0.2], [4, 4, 2.5], (5, 3)), box_half=rng.uniform(0.1, 1.0, (5, 3)),
            box_yaw=rng.uniform(-3, 3, 5),
            cyl_xy=rng.uniform(-4, 4, (3, 2)), cyl_radius=rng.uniform(0.1, 0.6, 3),
            cyl_z=np.sort(rng.uniform(0, 3, (3, 2)), axis=1),
            sph_center=rng.uniform([-4, -4, 0.2], [4, 4, 2.8], (3, 3)), sph_radius=rng.uniform(0.1, 0.7, 3),
        )
        for _ in range(20):
            o = rng.uniform([-4.9, -4.9, 0.1], [4.9, 4.9, 2.9])
            if signed_distance(geo, o[None])[0] > 0.05:
                break
        d = rng.normal(size=(3000, 3))
        if trial % 2:  # also a camera-like bundle of coherent rays
            d = np.array([1.0, 0.2, -0.1]) + 0.4 * rng.uniform(-1, 1, size=(3000, 3))
        t_ref, prim_ref = _brute_force(geo, o, d)
        hit = cast_rays(geo, o, d)
        np.testing.assert_array_equal(hit.prim, prim_ref)
        np.testing.assert_allclose(hit.t, t_ref, rtol=1e-12)


def test_float32_rays_agree_with_float64():
    geo = _room(box_center=[[2.0, 0.0, 1.0]], box_half=[[0.3, 0.6, 0.5]], box_yaw=[0.2],
                sph_center=[[3.0, 1.0, 1.5]], sph_radius=[0.5])
    o, d = camera_rays(_look_along_x([0.0, 0.0, 1.2]), _k(30.0, 48, 32), 48, 32)
    h64 = cast_rays(geo, o, d)
    h32 = cast_rays(geo, o, tuple(c.astype(np.float32) for c in d))
    assert (h64.prim == h32.prim).mean() > 0.995  # only grazing silhouette pixels may differ
    same = h64.prim == h32.prim
    np.testing.assert_allclose(h32.t[same], h64.t[same], rtol=1e-5)


def test_shadow_rays_any_hit_stop_before_the_light():
    geo = _room(box_center=[[0.0, 0.0, 1.0]], box_half=[[0.5, 0.5, 0.1]], box_yaw=[0.0])
    light = np.array([0.0, 0.0, 2.5])
    targets = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])  # under the box / in the open
    hit = cast_rays(geo, light, targets - light, include_enclosure=False, t_max=1 - 1e-6, any_hit=True)
    assert hit.prim[0] == NUM_ENCLOSURE_FACES and hit.prim[1] == -1


def test_signed_distance_of_primitives():
    geo = _room(box_center=[[0.0, 0.0, 1.0]], box_half=[[0.5, 0.5, 0.5]], box_yaw=[math.pi / 4],
                sph_center=[[3.0, 0.0, 1.0]], sph_radius=[0.5])
    pts = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [3.0, 0.0, 2.0], [4.5, 0.0, 1.0], [0, 1.5, 1.0]])
    sdf = signed_distance(geo, pts)
    np.testing.assert_allclose(sdf[:4], [-0.5, 0.5, 0.5, 0.5], atol=1e-12)
    assert sdf[4] == pytest.approx(min(1.5 - 0.5 * math.sqrt(2), 1.0))  # box corner vs floor
    assert signed_distance(geo, np.array([[0.0, 4.9, 0.05]]), floor_and_ceiling=False)[0] == pytest.approx(0.1)


def test_render_shades_a_lit_wall_and_returns_exact_depth():
    geo = _room()
    mats = [Material("solid", np.full((3, 3), 0.5), detail=0.0)]
    scene = Scene(geo, mats, np.zeros(geo.num_primitives, dtype=int), ambient=np.full(3, 0.2))
    rgb, depth = render(scene, _look_along_x([1.0, 0.0, 1.5]), _k(20.0, 16, 16), 16, 16, shadows=True)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    np.testing.assert_allclose(depth, 4.0, rtol=1e-6)
    # ambient only: linear 0.5 * 0.2 = 0.1 -> sRGB-ish gamma 1/2.2 -> about 89
    assert abs(int(rgb[8, 8, 0]) - round(255 * 0.1 ** (1 / 2.2))) <= 1
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) == 1
