"""Small models and inputs shared by the model tests."""
from pathlib import Path

import torch

from ilrm_ros.model.ilrm import ILRM, ILRMConfig

#: The authors' checkpoint manifests (every tensor name and shape of their two releases).
REFERENCE = Path(__file__).resolve().parent / "reference"


def tiny(layout: str = "wide", **kw) -> ILRM:
    base = dict(dim=64, iterations=1, head_dim=32, patch_size=4)
    if layout == "re10k":
        base.update(layout="re10k", ray_encoding="plucker6", viewpoint_factor=1, uplift=1, predict_offset=False)
    base.update(kw)
    return ILRM(ILRMConfig(**base))


def inputs(H: int = 16, W: int = 16, v: int = 2):
    c2w = torch.eye(4).repeat(1, v, 1, 1)
    c2w[0, :, 0, 3] = torch.linspace(0, 1, v)
    K = torch.tensor([[16.0, 0, W / 2], [0, 16.0, H / 2], [0, 0, 1]]).repeat(1, v, 1, 1)
    return torch.rand(1, v, 3, H, W), c2w, K


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def random_cameras(b: int, v: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """c2w (B, V, 4, 4) with random rotations and centres, K (B, V, 3, 3) with different focal lengths."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(b, v, 3, 3, generator=gen))
    c2w = torch.eye(4).repeat(b, v, 1, 1)
    c2w[..., :3, :3] = q * torch.sign(torch.linalg.det(q))[..., None, None]
    c2w[..., :3, 3] = 2 * torch.randn(b, v, 3, generator=gen)
    K = torch.zeros(b, v, 3, 3)
    K[..., 0, 0] = w * (0.6 + torch.rand(b, v, generator=gen))
    K[..., 1, 1] = h * (0.6 + torch.rand(b, v, generator=gen))
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = w / 2, h / 2, 1.0
    return c2w, K
