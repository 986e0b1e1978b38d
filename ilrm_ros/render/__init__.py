"""Rendering of 3D Gaussians (gsplat on CUDA, pure PyTorch elsewhere) and 3DGS PLY I/O."""
from ilrm_ros.render.ply import PlyGaussians, load_ply, read_ply, save_ply
from ilrm_ros.render.render import RenderOutput, normalized_depth, render, render_gaussians
from ilrm_ros.render.torch_rasterizer import RasterConfig

__all__ = [
    "PlyGaussians",
    "RasterConfig",
    "RenderOutput",
    "load_ply",
    "normalized_depth",
    "read_ply",
    "render",
    "render_gaussians",
    "save_ply",
]
