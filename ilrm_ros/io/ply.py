"""3D Gaussian Splatting PLY files (the layout SuperSplat, gsplat and the Inria viewers read).

One ``vertex`` element, binary little-endian float32 properties in this order::

    x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 [f_rest_0 ...] opacity scale_0 scale_1 scale_2
    rot_0 rot_1 rot_2 rot_3 [extra fields ...]

Stored values are *pre-activation*: ``f_dc = (rgb − 0.5) / C0`` (C0 = 0.28209479, SH degree 0),
``opacity = logit(o)``, ``scale_i = log(s_i)``, ``rot = (w, x, y, z)``; normals are written as 0.
Before ``logit``/``log``, opacities are clamped to [1e-6, 1 − 1e-6] and scales to ≥ 1e-12, so
0 and 1 survive the trip as 1e-6 and 1 − 1e-6; every other value round-trips to float32 precision.

Reading (:func:`read_ply`, :func:`load_ply`) goes through ``plyfile`` and accepts what other
tools write: ascii or binary (either endianness), other property types, missing normals, extra
properties (kept in ``extras``), and higher SH bands ``f_rest_*`` (returned by :func:`read_ply`
as ``sh_rest``; :func:`load_ply` keeps only the DC colour and says so in the log). Loaded
quaternions are normalised and colours clamped to [0, 1].
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from plyfile import PlyData

from ilrm_ros.core.gaussians import SH_C0, Gaussians

logger = logging.getLogger(__name__)


OPACITY_EPS = 1e-6
SCALE_MIN = 1e-12
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DC = ["f_dc_0", "f_dc_1", "f_dc_2"]
_SCALE = ["scale_0", "scale_1", "scale_2"]
_ROT = ["rot_0", "rot_1", "rot_2", "rot_3"]
_NORMALS = ["nx", "ny", "nz"]
_REQUIRED = ["x", "y", "z", *_DC, "opacity", *_SCALE, *_ROT]


@dataclass
class PlyGaussians:
    """Everything :func:`read_ply` found in a 3DGS PLY file.

    gaussians: activated values, float32 CPU tensors, fields (N, k).
    sh_rest:   (N, K − 1, 3) SH coefficients of bands ≥ 1 (``f_rest_*``), or None.
    extras:    other per-vertex properties by name, float32 arrays (N,).
    comments:  the header's comment lines.
    """

    gaussians: Gaussians
    sh_rest: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)


def rgb_to_sh_dc(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] -> degree-0 SH coefficient: (..., 3) -> (..., 3)."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(dc: np.ndarray) -> np.ndarray:
    """Degree-0 SH coefficient -> RGB (not clamped): (..., 3) -> (..., 3)."""
    return dc * SH_C0 + 0.5


def _vertex_table(g: Gaussians, sh_rest: np.ndarray | None, extras: dict[str, np.ndarray]) -> np.ndarray:
    """The structured float32 array of the vertex element, fields in the standard order."""
    if g.means.dim() > 2:
        g = g.flatten()
    g = g.detach().to("cpu", torch.float64)
    n = len(g)
    cols: list[tuple[str, np.ndarray]] = []
    cols += [(name, g.means[:, i].numpy()) for i, name in enumerate("xyz")]
    cols += [(name, np.zeros(n)) for name in _NORMALS]
    dc = rgb_to_sh_dc(g.colors.numpy())
    cols += [(name, dc[:, i]) for i, name in enumerate(_DC)]
    if sh_rest is not None:
        sh_rest = np.asarray(sh_rest)
        if sh_rest.ndim != 3 or sh_rest.shape[0] != n or sh_rest.shape[2] != 3:
            raise ValueError(f"sh_rest must be (N={n}, K-1, 3), got {sh_rest.shape}")
        flat = sh_rest.transpose(0, 2, 1).reshape(n, -1)  # channel-major, as the 3DGS code writes it
        cols += [(f"f_rest_{i}", flat[:, i]) for i in range(flat.shape[1])]
    op = g.opacities.numpy().clip(OPACITY_EPS, 1.0 - OPACITY_EPS)
    cols.append(("opacity", np.log(op) - np.log1p(-op)))
    log_scales = np.log(g.scales.numpy().clip(SCALE_MIN, None))
    cols += [(name, log_scales[:, i]) for i, name in enumerate(_SCALE)]
    cols += [(name, g.quats[:, i].numpy()) for i, name in enumerate(_ROT)]
    taken = {name for name, _ in cols}
    for name, values in extras.items():
        values = np.asarray(values)
        if not _NAME.match(name) or name in taken or name.startswith("f_rest_"):
            raise ValueError(f"extra field name {name!r} is not a free identifier")
        if values.shape != (n,):
            raise ValueError(f"extra field {name!r} must have shape ({n},), got {values.shape}")
        cols.append((name, values))
        taken.add(name)
    table = np.empty(n, dtype=[(name, "<f4") for name, _ in cols])
    for name, values in cols:
        table[name] = values
    return table


def save_ply(
    dst: str | Path | BinaryIO,
    g: Gaussians,
    extras: dict[str, np.ndarray] | None = None,
    comments: list[str] | str | None = None,
    sh_rest: np.ndarray | None = None,
) -> None:
    """Write Gaussians as a binary little-endian 3DGS PLY file.

    dst: a path or a binary file object (written from its current position, not closed).
    g: activated Gaussians, fields (N, k) (leading batch dims are merged).
    extras: more per-Gaussian float fields, name -> (N,), appended after ``rot_3``.
    comments: header comment lines (no newlines).
    sh_rest: (N, K − 1, 3) higher SH bands to write as ``f_rest_*`` (e.g. passed through
        from :func:`read_ply`).
    """
    table = _vertex_table(g, sh_rest, extras or {})
    if isinstance(comments, str):
        comments = [comments]
    lines = ["ply", "format binary_little_endian 1.0"]
    for comment in comments or []:
        if "\n" in comment or "\r" in comment:
            raise ValueError("PLY comments must be single lines")
        lines.append(f"comment {comment}")
    lines.append(f"element vertex {len(table)}")
    lines += [f"property float {name}" for name in table.dtype.names]
    lines.append("end_header")
    payload = ("\n".join(lines) + "\n").encode("ascii") + table.tobytes()
    if isinstance(dst, (str, Path)):
        Path(dst).write_bytes(payload)
    else:
        dst.write(payload)


def read_ply(src: str | Path | BinaryIO, validate: bool = False) -> PlyGaussians:
    """Read a 3DGS PLY file (ours or another tool's): see the module docstring.

    ``validate``: check a file path's header against its size before reading, and the raw
    values after (``mapping.map_validation``); raises its ``MapFileError`` (a ValueError).
    """
    if validate and isinstance(src, (str, Path)):
        from ilrm_ros.io.map_validation import check_ply_header

        check_ply_header(src)
    ply = PlyData.read(str(src) if isinstance(src, Path) else src)
    if "vertex" not in ply:
        raise ValueError("not a Gaussian-splat PLY: it has no 'vertex' element")
    vertex = ply["vertex"].data
    names = list(vertex.dtype.names or ())
    missing = [name for name in _REQUIRED if name not in names]
    if missing:
        raise ValueError(f"not a 3DGS PLY: vertex properties {missing} are missing (found {names})")
    if validate:
        from ilrm_ros.io.map_validation import check_vertex_values

        check_vertex_values({name: vertex[name] for name in _REQUIRED}, str(src))

    def cols(keys: list[str]) -> np.ndarray:
        return np.stack([np.asarray(vertex[k], dtype=np.float64).reshape(-1) for k in keys], axis=-1)

    rgb = sh_dc_to_rgb(cols(_DC))
    n_clamped = int(((rgb < 0) | (rgb > 1)).any(axis=1).sum())
    if n_clamped:
        logger.debug("clamped the colour of %d Gaussians into [0, 1]", n_clamped)
    quats = cols(_ROT)
    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    quats = np.where(norm > 0, quats / np.where(norm > 0, norm, 1.0), np.array([1.0, 0.0, 0.0, 0.0]))
    opacity_logit = cols(["opacity"])[:, 0]
    gaussians = Gaussians(
        means=torch.from_numpy(cols(["x", "y", "z"])).float(),
        quats=torch.from_numpy(quats).float(),
        scales=torch.from_numpy(np.exp(cols(_SCALE))).float(),
        opacities=torch.sigmoid(torch.from_numpy(opacity_logit)).float(),
        colors=torch.from_numpy(rgb.clip(0.0, 1.0)).float(),
    )

    rest = sorted((n for n in names if n.startswith("f_rest_")), key=lambda n: int(n.rsplit("_", 1)[1]))
    sh_rest = None
    if rest:
        if len(rest) % 3:
            raise ValueError(f"{len(rest)} f_rest_* properties: not a multiple of 3")
        sh_rest = cols(rest).astype(np.float32).reshape(len(vertex), 3, -1).transpose(0, 2, 1).copy()
    known = set(_REQUIRED) | set(_NORMALS) | set(rest)
    extras = {n: np.asarray(vertex[n], dtype=np.float32) for n in names if n not in known}
    return PlyGaussians(gaussians=gaussians, sh_rest=sh_rest, extras=extras, comments=list(ply.comments))


def load_ply(src: str | Path | BinaryIO, validate: bool = False) -> Gaussians:
    """Read the Gaussians of a 3DGS PLY file (SH degree 0 colour only, extra fields ignored).

    ``validate``: see :func:`read_ply`."""
    contents = read_ply(src, validate=validate)
    if contents.sh_rest is not None:
        degree = int(round((contents.sh_rest.shape[1] + 1) ** 0.5)) - 1
        logger.info("%s: SH degree %d in the file; keeping only the DC colour", src, degree)
    if contents.extras:
        logger.debug("ignoring extra PLY fields %s", sorted(contents.extras))
    return contents.gaussians
