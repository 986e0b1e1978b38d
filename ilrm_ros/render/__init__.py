"""Rendering of 3D Gaussians (gsplat on CUDA, pure PyTorch elsewhere); 3DGS PLY files are in ``ilrm_ros.io.ply``."""
from ilrm_ros.render.render import RenderOutput, normalized_depth, render, render_gaussians
from ilrm_ros.render.raster_config import RasterConfig

__all__ = ["RasterConfig", "RenderOutput", "normalized_depth", "render", "render_gaussians"]
