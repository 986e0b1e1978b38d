"""Small helpers shared by several test files (imported as ``support``; test/ is on sys.path)."""
from __future__ import annotations

import torch


def look_from(position, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(4, 4) OpenCV camera-to-world at ``position`` looking at the origin (the world's y is down)."""
    pos = torch.tensor(position, dtype=dtype)
    fwd = -pos / pos.norm()
    right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=dtype), fwd)
    right = right / right.norm()
    c2w = torch.eye(4, dtype=dtype)
    c2w[:3, :3] = torch.stack([right, torch.linalg.cross(fwd, right), fwd], dim=1)
    c2w[:3, 3] = pos
    return c2w
