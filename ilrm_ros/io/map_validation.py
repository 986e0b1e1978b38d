"""Checks a map file must pass before it may replace the map (``load_map``).

Two stages, both raising :class:`MapFileError` (a ValueError) with a message that names
the file, the problem and how many Gaussians have it:

* :func:`check_ply_header` reads only the header and compares the declared element
  counts with the file size, *before* a reader allocates anything (a header that claims
  10^12 vertices must not take the node's memory);
* :func:`check_vertex_values` checks the raw vertex columns: every value finite, positions
  within ``MAX_COORDINATE_M``, scales (stored as logs) within ``SCALE_RANGE_M``, a
  rotation quaternion that is not zero. Opacity logits only need to be finite (every
  finite logit is an opacity in (0, 1)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_COORDINATE_M = 1e7
SCALE_RANGE_M = (1e-13, 1e4)
MAX_HEADER_BYTES = 1 << 16
_TYPE_BYTES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
               "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


class MapFileError(ValueError):
    """A map file that must not be loaded; the message says why."""


@dataclass(frozen=True)
class PlyHeader:
    fmt: str
    header_bytes: int
    elements: list[tuple[str, int, int | None]]  # name, count, bytes per row (None: has list properties)


def parse_ply_header(path: str | Path) -> PlyHeader:
    """The header of a PLY file (format, byte length, elements with row sizes); MapFileError if malformed."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise MapFileError(f"{path}: not a PLY file (no 'ply' ... 'end_header' in the first {MAX_HEADER_BYTES} "
                           "bytes)")
    newline = head.find(b"\n", end)
    header_bytes = (newline + 1) if newline >= 0 else len(head)
    fmt, elements = "", []
    for line in head[:end].decode("ascii", errors="replace").splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            try:
                count = int(words[2])
            except ValueError:
                raise MapFileError(f"{path}: element {words[1]!r} has a non-integer count {words[2]!r}") from None
            if count < 0:
                raise MapFileError(f"{path}: element {words[1]!r} has a negative count {count}")
            elements.append([words[1], count, 0])
        elif words[0] == "property" and elements and elements[-1][2] is not None:
            elements[-1][2] = None if words[1] == "list" else elements[-1][2] + _TYPE_BYTES.get(words[1], 4)
    return PlyHeader(fmt, header_bytes, [tuple(e) for e in elements])


def check_ply_header(path: str | Path) -> PlyHeader:
    """Reject a PLY whose declared element counts cannot fit in the file."""
    header = parse_ply_header(path)
    size = Path(path).stat().st_size
    body = size - header.header_bytes
    vertex = next((e for e in header.elements if e[0] == "vertex"), None)
    if vertex is None:
        raise MapFileError(f"{path}: no 'vertex' element: not a Gaussian-splat PLY")
    if header.fmt.startswith("binary"):
        need = 0
        for name, count, row in header.elements:
            if row is None:  # list properties: at least one byte per row
                row = 1
            need += count * row
        if need > body:
            raise MapFileError(f"{path}: header declares {vertex[1]} vertices ({need} bytes of data) but the file "
                               f"holds {body} bytes after its header: truncated or corrupt")
    elif header.fmt == "ascii":
        with open(path, "rb") as f:
            f.seek(header.header_bytes)
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        if vertex[1] > lines + 1:
            raise MapFileError(f"{path}: header declares {vertex[1]} vertices but the file has {lines} data lines")
    else:
        raise MapFileError(f"{path}: unknown PLY format {header.fmt!r}")
    return header


def _bad_rows(values: np.ndarray) -> np.ndarray:
    return ~np.isfinite(values).all(axis=1)


def check_vertex_values(columns: dict[str, np.ndarray], source: str) -> None:
    """Raw 3DGS vertex columns (name -> (N,)) -> MapFileError naming every kind of bad value found."""
    def stack(names: list[str]) -> np.ndarray:
        return np.stack([np.asarray(columns[n], dtype=np.float64) for n in names], axis=1)

    means = stack(["x", "y", "z"])
    log_scales = stack(["scale_0", "scale_1", "scale_2"])
    rot = stack(["rot_0", "rot_1", "rot_2", "rot_3"])
    n = len(means)
    problems = []
    checks = [
        ("non-finite values", _bad_rows(means) | _bad_rows(log_scales) | _bad_rows(rot)
         | _bad_rows(stack(["f_dc_0", "f_dc_1", "f_dc_2"])) | ~np.isfinite(np.asarray(columns["opacity"], float))),
        (f"positions beyond {MAX_COORDINATE_M:g} m", np.abs(np.nan_to_num(means)).max(axis=1, initial=0)
         > MAX_COORDINATE_M),
        (f"scales outside [{SCALE_RANGE_M[0]:g}, {SCALE_RANGE_M[1]:g}] m",
         ((log_scales < math.log(SCALE_RANGE_M[0])) | (log_scales > math.log(SCALE_RANGE_M[1]))).any(axis=1)),
        ("zero rotation quaternions", np.linalg.norm(np.nan_to_num(rot, nan=1.0), axis=1) < 1e-6),
    ]
    for what, bad in checks:
        count = int(np.count_nonzero(bad))
        if count:
            problems.append(f"{count} of {n} Gaussians have {what} (first: vertex {int(np.argmax(bad))})")
    if problems:
        raise MapFileError(f"{source}: refusing to load: " + "; ".join(problems))
