"""The package's compiled C libraries: one description each, built with the system C compiler, loaded with ctypes.

Two libraries use this (each module keeps its own sources, flags and function declarations):
the CPU rasterizer's kernels (``render/native.py``) and the model's CPU kernels
(``model/native.py``). ``make setup`` and ``ilrm-ros kernels --build`` build both;
``colcon build`` builds the same files with the same flags (``CMakeLists.txt``). A library that
is missing, out of date or cannot load leaves its torch twin running, and :func:`load_library`
says why.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLibrary", "build_library", "library_path", "load_library", "LoadedLibrary"]

BASE_FLAGS = ("-O3", "-fno-trapping-math", "-fPIC", "-shared", "-std=c11")
"""Flags every library is compiled with (then ``-march=native`` where the compiler takes it)."""


@dataclass(frozen=True)
class CLibrary:
    """What one shared library is made of and where it lives."""

    title: str                                   # for messages: "CPU rasterizer kernels"
    sources: tuple[Path, ...]
    path: Path                                   # where builds put it (git-ignored)
    env_var: str                                 # a path in this variable overrides ``path``
    declare: Callable[[ctypes.CDLL], None]       # sets argtypes/restype; AttributeError if a symbol is missing
    flags: tuple[str, ...] = ()                  # compile flags beyond BASE_FLAGS
    link: tuple[str, ...] = ("-lm",)


def build_library(lib: CLibrary, dest: Path | None = None, compiler: str | None = None) -> Path:
    """Compile ``lib`` into ``dest`` (default ``lib.path``) with ``compiler`` (default ``$CC``, cc or gcc).

    Tries ``-march=native`` first and drops it where the compiler refuses it. The library appears
    at ``dest`` only when complete (written beside it, then renamed). Raises ``RuntimeError`` with
    the compiler's message on failure.
    """
    dest = dest or lib.path
    cc = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc) on PATH")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".{os.getpid()}.tmp")
    tail = [*lib.flags, "-o", str(tmp), *(str(src) for src in lib.sources), *lib.link]
    done = None
    for arch in (["-march=native"], []):
        done = subprocess.run([cc, *BASE_FLAGS, *arch, *tail], capture_output=True, text=True)
        if done.returncode == 0:
            os.replace(tmp, dest)
            return dest
    names = ", ".join(src.name for src in lib.sources)
    raise RuntimeError(f"compiling {names} failed: {done.stderr.strip()[-2000:]}")


def library_path(lib: CLibrary) -> Path:
    """Where ``lib`` is loaded from: ``$<env_var>`` when set, else ``lib.path``."""
    env = os.environ.get(lib.env_var)
    return Path(env) if env else lib.path


def load_library(lib: CLibrary) -> tuple[ctypes.CDLL | None, str]:
    """Load ``lib`` and declare its functions -> (library, "") or (None, why not)."""
    path = library_path(lib)
    if not path.is_file():
        return None, f"{path} not built (make setup builds it)"
    try:
        handle = ctypes.CDLL(str(path))
    except OSError as e:
        return None, f"cannot load {path}: {e}"
    try:
        lib.declare(handle)
    except AttributeError as e:   # a library built from older sources
        return None, f"{path} is out of date ({e}); make setup rebuilds it"
    return handle, ""


class LoadedLibrary:
    """One :class:`CLibrary`, loaded on first use: what each kernel module exposes as ``load``, ``status``,
    ``reload``, ``build`` and ``cli_main``."""

    def __init__(self, lib: CLibrary) -> None:
        self.lib = lib
        self._result: tuple[ctypes.CDLL | None, str] | None = None

    def _get(self) -> tuple[ctypes.CDLL | None, str]:
        if self._result is None:
            self._result = load_library(self.lib)
        return self._result

    def load(self) -> ctypes.CDLL | None:
        """The loaded library, or None (see :meth:`status`)."""
        return self._get()[0]

    def status(self) -> str:
        """Empty when the library is loaded, else why not (for logs and benchmarks)."""
        return self._get()[1]

    def reload(self) -> str:
        """Forget the loaded library (e.g. after ``$<env_var>`` changed), load it again; its :meth:`status`."""
        self._result = None
        return self.status()

    def build(self, dest: Path | None = None, compiler: str | None = None) -> Path:
        """:func:`build_library` of this library."""
        return build_library(self.lib, dest, compiler)

    def cli(self, argv: list[str] | None = None) -> int:
        """``--build [--out PATH]``: compile the library (exit 1 on failure); else load it afresh and report
        where from, or why not (exit 1)."""
        ap = argparse.ArgumentParser(prog="ilrm-ros kernels", description=f"build or check the {self.lib.title}")
        ap.add_argument("--build", action="store_true", help="compile the sources into --out")
        ap.add_argument("--out", type=Path, default=self.lib.path)
        args = ap.parse_args(argv)
        if args.build:
            try:
                print(f"built {self.build(args.out)}")
            except RuntimeError as e:
                print(f"{self.lib.title} not built: {e}", file=sys.stderr)
                return 1
            return 0
        why = self.reload()
        print(f"{self.lib.title}: " + ("loaded from " + str(library_path(self.lib)) if not why else why))
        return 0 if not why else 1
