"""`ilrm-ros kernels [--build]`: check or build every compiled CPU library of the package.

The CPU rasterizer's kernels (``render/native.py``; with the map fusion's depth test) and the
model's kernels (attention, tokenizer inputs, Gaussian head, LayerNorm: ``model/native.py``).
``--build`` compiles each one (``make setup`` runs it); without it each reports whether it loads
and, if not, why. Exit 1 when any is missing or
failed to build: the torch twins then run in its place, slower.
"""
from __future__ import annotations

from collections.abc import Callable

from ilrm_ros.model import native as model_native
from ilrm_ros.render import native

__all__ = ["LIBRARIES", "cli_main"]

LIBRARIES: tuple[Callable[[list[str]], int], ...] = (native.cli_main, model_native.cli_main)
"""Each library's own ``cli_main`` (same arguments: ``--build``, ``--out`` is theirs alone)."""


def cli_main(argv: list[str] | None = None) -> int:
    """Run every library's ``cli_main`` with ``argv`` (``[]`` or ``["--build"]``); 1 if any failed."""
    args = list(argv or [])
    if any(a not in ("--build",) for a in args):
        print("usage: ilrm-ros kernels [--build]")
        return 2
    codes = [main(args) for main in LIBRARIES]
    return 1 if any(codes) else 0
