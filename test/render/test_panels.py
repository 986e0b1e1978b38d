"""Image grids for side-by-side comparisons (truth | map render | nearest keyframe)."""
import numpy as np
import pytest

from ilrm_ros.render.panels import image_grid


def _solid(h, w, rgb):
    return np.broadcast_to(np.array(rgb, np.uint8), (h, w, 3)).copy()


def test_each_image_lands_in_its_own_cell_in_row_major_order():
    rows = [[_solid(8, 10, (255, 0, 0)), _solid(8, 10, (0, 255, 0))],
            [_solid(8, 10, (0, 0, 255)), _solid(8, 10, (9, 9, 9))]]
    grid = image_grid(rows, ("a", "b"), gap=4)
    head = 14
    assert grid.shape == (head + 2 * (8 + 4) + 4, 2 * (10 + 4) + 4, 3)
    centre = lambda r, c: grid[head + 4 + r * 12 + 4, 4 + c * 14 + 5]  # noqa: E731
    assert tuple(centre(0, 0)) == (255, 0, 0) and tuple(centre(0, 1)) == (0, 255, 0)
    assert tuple(centre(1, 0)) == (0, 0, 255) and tuple(centre(1, 1)) == (9, 9, 9)
    assert tuple(grid[-1, -1]) == (255, 255, 255)  # the gaps are background


def test_a_row_with_a_missing_image_is_refused():
    with pytest.raises(ValueError, match="2 images"):
        image_grid([[_solid(4, 4, (0, 0, 0))]], ("truth", "render"))
