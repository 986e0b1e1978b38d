"""Specification of ilrm_ros.ros.services: what a render_view request may ask for."""
from types import SimpleNamespace

import numpy as np
import pytest

from ilrm_ros.io.input_stage import MAX_TRANSLATION_M
from ilrm_ros.ros.services import render_camera, render_pose

ORIGIN = SimpleNamespace(x=0.0, y=0.0, z=0.0)
IDENTITY = SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0)


def test_a_pose_in_another_frame_is_brought_into_the_map():
    T_map_frame = np.eye(4)
    T_map_frame[:3, 3] = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(render_pose(T_map_frame, ORIGIN, IDENTITY), T_map_frame)


def test_a_pose_the_input_stage_would_drop_is_a_bad_request():
    T_map_frame = np.eye(4)
    T_map_frame[1, 3] = 2 * MAX_TRANSLATION_M  # the requested pose is fine, the map pose is not
    with pytest.raises(ValueError, match="render_view pose: .* from the map origin"):
        render_pose(T_map_frame, ORIGIN, IDENTITY)
    with pytest.raises(ValueError, match="render_view pose"):
        render_pose(np.diag([1.0, 1.0, -1.0, 1.0]), ORIGIN, IDENTITY)  # a reflection


def test_a_render_camera_needs_a_usable_pinhole_and_a_bounded_size():
    k = [50.0, 0, 31.5, 0, 50.0, 31.5, 0, 0, 1]
    assert render_camera(64, 64, k, max_pixels=64 * 64).shape == (3, 3)
    with pytest.raises(ValueError, match="max_render_pixels"):
        render_camera(65, 64, k, max_pixels=64 * 64)
    with pytest.raises(ValueError, match="fx, fy > 0"):
        render_camera(64, 64, [0.0] * 9, max_pixels=0)
