"""The transform tree of a :class:`~ilrm_ros.io.pose_buffer.PoseBuffer`, evaluated at a time.

What is stored per child frame (:class:`FrameHistory`: an optional static transform and
time-sorted dynamic samples, each with its own parent) and the pure functions that answer
a lookup from it: which parent governs a frame at a time, the chains of both frames up to
their common ancestor, every link evaluated at the time (linear translation, slerp
rotation, no extrapolation), and tf2's latest common time. The lookup errors mirror
tf2's exceptions. Locking and insertion policy are the buffer's business, not this
module's.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from ilrm_ros.core.rotations import slerp
from ilrm_ros.io.frames import NS_PER_S
from ilrm_ros.io.rigid import invert_transform, make_transform

# --------------------------------------------------------------------------- errors


class TransformError(LookupError):
    """Base of all lookup failures (tf2's TransformException)."""


class FrameNotFound(TransformError):
    """A frame id was never seen (tf2's LookupException)."""


class ConnectivityError(TransformError):
    """Both frames exist but are in different trees (tf2's ConnectivityException)."""


class ExtrapolationError(TransformError):
    """A link has no data bracketing the requested time (tf2's ExtrapolationException).

    direction: ``"past"`` (requested before the oldest sample), ``"future"`` (after the
    newest) or ``"empty"`` (the link has no samples at all).
    """

    def __init__(self, message: str, direction: str, requested_ns: int, oldest_ns: int | None,
                 newest_ns: int | None, frame: str) -> None:
        super().__init__(message)
        self.direction = direction
        self.requested_ns = requested_ns
        self.oldest_ns = oldest_ns
        self.newest_ns = newest_ns
        self.frame = frame


# --------------------------------------------------------------------------- storage


@dataclass
class Sample:
    """One ``T_parent_child``: translation t (3,), unit quaternion q (4,) (x, y, z, w)."""

    parent: str
    t: np.ndarray
    q: np.ndarray


@dataclass
class FrameHistory:
    """Everything known about one child frame: its static transform and dynamic samples."""

    static: Sample | None = None
    stamps: list[int] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    stale_run: int = 0  # consecutive samples ignored as older than the cache

    def parents(self) -> set[str]:
        out = {s.parent for s in self.samples}
        if self.static is not None:
            out.add(self.static.parent)
        return out

    def latest_parent(self) -> str:
        return self.samples[-1].parent if self.samples else self.static.parent  # type: ignore[union-attr]


Frames = Mapping[str, FrameHistory]
"""Child frame id -> its history (the buffer's whole store)."""


def fmt_s(stamp_ns: int | None) -> str:
    """A stamp in seconds with nanosecond digits, for messages ("none" for None)."""
    return "none" if stamp_ns is None else f"{stamp_ns / NS_PER_S:.9f}"


def known_frames(frames: Frames) -> set[str]:
    """All frame ids of the tree (children and parents)."""
    out = set(frames)
    for frame in frames.values():
        out |= frame.parents()
    return out


# --------------------------------------------------------------------------- lookup


def parent_at(frames: Frames, child: str, stamp_ns: int) -> str | None:
    """The parent that governs ``child`` at ``stamp_ns`` (0: latest); None for a root."""
    node = frames.get(child)
    if node is None:
        return None
    stamps = node.stamps
    if stamps and (stamp_ns == 0 or stamps[0] <= stamp_ns <= stamps[-1] or node.static is None):
        if stamp_ns == 0 or stamp_ns >= stamps[-1]:
            return node.samples[-1].parent
        i = max(bisect.bisect_right(stamps, stamp_ns) - 1, 0)
        return node.samples[i].parent
    return node.static.parent if node.static is not None else None


def chain_up(frames: Frames, frame: str, stamp_ns: int) -> list[str]:
    """[frame, parent, grandparent, …, root] as of ``stamp_ns``."""
    chain, seen = [frame], {frame}
    parent = parent_at(frames, frame, stamp_ns)
    while parent is not None:
        if parent in seen:
            raise ConnectivityError(f"the transform tree has a loop through {parent!r}")
        seen.add(parent)
        chain.append(parent)
        parent = parent_at(frames, parent, stamp_ns)
    return chain


def paths_to_common_ancestor(frames: Frames, target: str, source: str, stamp_ns: int) -> tuple[list[str], list[str]]:
    """Children whose links lead from source/target up to their common ancestor."""
    known = known_frames(frames)
    for name, frame in (("target", target), ("source", source)):
        if frame not in known:
            raise FrameNotFound(f"{name} frame {frame!r} does not exist")
    src_chain, tgt_chain = chain_up(frames, source, stamp_ns), chain_up(frames, target, stamp_ns)
    tgt_set = set(tgt_chain)
    ancestor = next((f for f in src_chain if f in tgt_set), None)
    if ancestor is None:
        raise ConnectivityError(f"{target!r} and {source!r} are not connected (roots {tgt_chain[-1]!r} "
                                f"and {src_chain[-1]!r})")
    return src_chain[: src_chain.index(ancestor)], tgt_chain[: tgt_chain.index(ancestor)]


def common_time(frames: Frames, children: Iterable[str]) -> int:
    """Newest time every dynamic link of ``children`` has data (0 if all are static)."""
    latest = [frames[c].stamps[-1] for c in children if frames[c].stamps]
    return min(latest) if latest else 0


def link_at(frames: Frames, child: str, stamp_ns: int, target: str, source: str) -> np.ndarray:
    """T_parent_child at ``stamp_ns`` (4, 4), with tf2's rule for samples of different parents.

    ``target`` and ``source`` only name the lookup in an :class:`ExtrapolationError`.
    """
    node = frames[child]
    stamps = node.stamps
    if stamps and stamps[0] <= stamp_ns <= stamps[-1]:
        i = bisect.bisect_left(stamps, stamp_ns)
        if stamps[i] == stamp_ns:
            s = node.samples[i]
            return make_transform(s.t, s.q)
        s0, s1 = node.samples[i - 1], node.samples[i]
        if s0.parent != s1.parent:
            return make_transform(s0.t, s0.q)
        alpha = (stamp_ns - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
        return make_transform(s0.t + alpha * (s1.t - s0.t), slerp(s0.q, s1.q, alpha))
    if node.static is not None:
        return make_transform(node.static.t, node.static.q)
    direction = "past" if stamp_ns < stamps[0] else "future"
    raise ExtrapolationError(
        f"lookup {target!r} <- {source!r} would require extrapolation into the {direction}: requested "
        f"{fmt_s(stamp_ns)} but {child!r} -> {node.latest_parent()!r} has data in "
        f"[{fmt_s(stamps[0])}, {fmt_s(stamps[-1])}]", direction, stamp_ns, stamps[0], stamps[-1], child)


def _up(frames: Frames, children: list[str], stamp_ns: int, target: str, source: str) -> np.ndarray:
    """T_ancestor_first for a path of children (first = the lowest frame)."""
    T = np.eye(4)
    for child in children:
        T = link_at(frames, child, stamp_ns, target, source) @ T
    return T


def lookup_in(frames: Frames, target: str, source: str, stamp_ns: int) -> tuple[np.ndarray, int]:
    """``(T_target_source (4, 4) float64, the time used)``; ``stamp_ns`` 0 = latest common time.

    Frame ids must already be clean. Raises :class:`FrameNotFound`,
    :class:`ConnectivityError` or :class:`ExtrapolationError`.
    """
    src_path, tgt_path = paths_to_common_ancestor(frames, target, source, stamp_ns)
    if stamp_ns == 0:
        stamp_ns = common_time(frames, src_path + tgt_path)
        if stamp_ns:
            src_path, tgt_path = paths_to_common_ancestor(frames, target, source, stamp_ns)
    T_anc_src = _up(frames, src_path, stamp_ns, target, source)
    T_anc_tgt = _up(frames, tgt_path, stamp_ns, target, source)
    return invert_transform(T_anc_tgt) @ T_anc_src, stamp_ns
