"""Procedural textures: deterministic, bounded, and band-limited by the pixel footprint."""
import numpy as np
import pytest

from ilrm_ros.data.textures import PATTERNS, Material, albedo, band_limit, value_noise


def _grid(n=64, extent=3.0):
    u, v = np.meshgrid(np.linspace(-extent, extent, n), np.linspace(-extent, extent, n))
    return u.ravel().astype(np.float32), v.ravel().astype(np.float32)


def test_value_noise_is_deterministic_bounded_and_smooth():
    u, v = _grid()
    a, b = value_noise(u, v, 3), value_noise(u, v, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, value_noise(u, v, 4))
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.std() > 0.1
    assert np.abs(value_noise(u + 1e-3, v, 3) - a).max() < 0.02  # continuous
    lattice = value_noise(np.array([2.0, 2.0]), np.array([5.0, 5.0]), 3)
    assert lattice[0] == lattice[1]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_gives_colours_in_range(pattern):
    rng = np.random.default_rng(0)
    mat = Material(pattern, rng.uniform(0, 1, (3, 3)), scale=0.3, angle=0.4, seed=5, detail=0.2)
    u, v = _grid()
    rgb = np.stack(albedo(mat, u, v, np.full_like(u, 0.005)), 1)
    assert rgb.shape == (u.size, 3) and rgb.min() >= 0 and rgb.max() <= 1
    if pattern != "solid":
        assert rgb.std(axis=0).max() > 0.02


def test_fine_checker_fades_to_its_mean_colour_when_pixels_are_coarse():
    colors = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
    mat = Material("checker", colors, scale=0.1, detail=0.0)
    u, v = _grid(97, 2.0)
    sharp = np.stack(albedo(mat, u, v, np.full_like(u, 0.01)), 1)  # 20 pixels per period
    blurred = np.stack(albedo(mat, u, v, np.full_like(u, 0.2)), 1)  # period below 2 pixels
    assert set(np.unique(sharp.round(6))) == {0.0, 1.0}
    np.testing.assert_allclose(blurred, 0.5, atol=1e-6)


def test_band_limit_ramps_between_two_and_four_pixels_per_period():
    fp = np.array([1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(band_limit(np.array([1.0, 2.0, 3.0, 4.0]), fp), [0.0, 0.0, 0.5, 1.0])


def test_unknown_pattern_is_rejected():
    with pytest.raises(ValueError):
        Material("plaid")
