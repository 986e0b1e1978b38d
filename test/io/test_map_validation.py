"""Specification of io.map_validation through load_map: bad files are refused, the map is kept."""
import numpy as np
import pytest

import hostile_cases as hc
from ilrm_ros.mapping.map_io import load_map
from ilrm_ros.io.map_validation import MapFileError, check_ply_header


def write(tmp_path, data: bytes, name="m.ply"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_a_valid_file_loads(tmp_path):
    gmap = load_map(write(tmp_path, hc.ply_bytes(40)))
    assert len(gmap) == 40


def test_a_file_of_nan_gaussians_is_refused_with_the_count(tmp_path):
    path = write(tmp_path, hc.ply_bytes(40, {"x": np.nan}))
    with pytest.raises(MapFileError, match="40 of 40 Gaussians have non-finite values"):
        load_map(path)


@pytest.mark.parametrize("values, what", [({"scale_0": 40.0}, "scales outside"), ({"rot_0": 0.0}, "zero rotation"),
                                          ({"y": 1e12}, "positions beyond"), ({"opacity": np.inf}, "non-finite")])
def test_insane_values_are_named(tmp_path, values, what):
    with pytest.raises(MapFileError, match=what):
        load_map(write(tmp_path, hc.ply_bytes(10, values)))


def test_a_vertex_count_the_file_cannot_hold_is_refused_before_reading(tmp_path):
    path = write(tmp_path, hc.ply_bytes(10, declared=10**12))
    with pytest.raises(MapFileError, match="declares 1000000000000 vertices"):
        check_ply_header(path)
    with pytest.raises(MapFileError, match="truncated"):
        load_map(write(tmp_path, hc.ply_bytes(10, cut=5), "cut.ply"))


def test_a_file_whose_gaussians_are_all_pruned_is_refused_rather_than_emptying_the_map(tmp_path):
    with pytest.raises(MapFileError, match="none of its 10 Gaussians"):
        load_map(write(tmp_path, hc.ply_bytes(10, {"opacity": -30.0})))
