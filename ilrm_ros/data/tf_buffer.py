"""A small ROS-free transform buffer used to resolve camera poses from recorded bags.

Frames form a tree (each child has exactly one parent, as in tf2). Every edge stores
``T_parent_child`` (maps points from the child frame into the parent frame), either
static or as a time series. Lookups compose the edges on the path between two frames
at a given stamp; dynamic edges are interpolated linearly in translation and by slerp
in rotation between the two samples that bracket the stamp. Stamps outside a dynamic
edge's sample range raise :class:`LookupError` (no extrapolation), except within
``tolerance_ns`` of its first/last sample, where that sample is used.

Quaternions follow ROS order ``(x, y, z, w)`` in this module.
"""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- rotations
def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) ``(..., 4)`` in ROS order x, y, z, w -> rotation ``(..., 3, 3)``."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    r = np.empty(q.shape[:-1] + (3, 3), dtype=np.float64)
    r[..., 0, 0] = 1 - 2 * (y * y + z * z)
    r[..., 0, 1] = 2 * (x * y - z * w)
    r[..., 0, 2] = 2 * (x * z + y * w)
    r[..., 1, 0] = 2 * (x * y + z * w)
    r[..., 1, 1] = 1 - 2 * (x * x + z * z)
    r[..., 1, 2] = 2 * (y * z - x * w)
    r[..., 2, 0] = 2 * (x * z - y * w)
    r[..., 2, 1] = 2 * (y * z + x * w)
    r[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def matrix_to_quat_xyzw(r: np.ndarray) -> np.ndarray:
    """Rotation matrix ``(3, 3)`` -> unit quaternion ``(4,)`` x, y, z, w with w >= 0.

    Uses the numerically stable branch on the largest diagonal term (Shepperd's method).
    """
    m = np.asarray(r, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        w = 0.25 * s
        x = (m[2, 1] - m[1, 2]) / s
        y = (m[0, 2] - m[2, 0]) / s
        z = (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        w = (m[2, 1] - m[1, 2]) / s
        x = 0.25 * s
        y = (m[0, 1] + m[1, 0]) / s
        z = (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        w = (m[0, 2] - m[2, 0]) / s
        x = (m[0, 1] + m[1, 0]) / s
        y = 0.25 * s
        z = (m[1, 2] + m[2, 1]) / s
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        w = (m[1, 0] - m[0, 1]) / s
        x = (m[0, 2] + m[2, 0]) / s
        y = (m[1, 2] + m[2, 1]) / s
        z = 0.25 * s
    q = np.array([x, y, z, w], dtype=np.float64)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def slerp_xyzw(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions ``(4,)`` (shortest arc)."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9999995:  # nearly identical: normalised lerp is exact to float precision
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(min(dot, 1.0))
    s = np.sin(theta)
    q = (np.sin((1.0 - alpha) * theta) / s) * q0 + (np.sin(alpha * theta) / s) * q1
    return q / np.linalg.norm(q)


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation and ``(3,)`` translation -> homogeneous ``(4, 4)`` float64."""
    t = np.eye(4, dtype=np.float64)
    t[:3, :3] = rotation
    t[:3, 3] = translation
    return t


def invert_transform(t: np.ndarray) -> np.ndarray:
    """Inverse of a rigid ``(4, 4)`` transform."""
    r = t[:3, :3]
    out = np.eye(4, dtype=np.float64)
    out[:3, :3] = r.T
    out[:3, 3] = -r.T @ t[:3, 3]
    return out


# --------------------------------------------------------------------------- buffer
@dataclass
class _Edge:
    static: bool
    stamps: list[int] = field(default_factory=list)
    translations: list[np.ndarray] = field(default_factory=list)
    quats: list[np.ndarray] = field(default_factory=list)

    def insert(self, stamp_ns: int, translation: np.ndarray, quat_xyzw: np.ndarray) -> None:
        if self.static:
            self.stamps, self.translations, self.quats = [stamp_ns], [translation], [quat_xyzw]
            return
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:  # same stamp: replace
            self.translations[i], self.quats[i] = translation, quat_xyzw
            return
        self.stamps.insert(i, stamp_ns)
        self.translations.insert(i, translation)
        self.quats.insert(i, quat_xyzw)

    def at(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray:
        if self.static:
            return make_transform(quat_xyzw_to_matrix(self.quats[0]), self.translations[0])
        stamps = self.stamps
        if stamp_ns < stamps[0] - tolerance_ns or stamp_ns > stamps[-1] + tolerance_ns:
            raise LookupError(
                f"stamp {stamp_ns} ns outside the buffered range [{stamps[0]}, {stamps[-1]}] ns"
            )
        if stamp_ns <= stamps[0]:
            i0 = i1 = 0
        elif stamp_ns >= stamps[-1]:
            i0 = i1 = len(stamps) - 1
        else:
            i1 = bisect.bisect_left(stamps, stamp_ns)
            i0 = i1 if stamps[i1] == stamp_ns else i1 - 1
        if i0 == i1:
            return make_transform(quat_xyzw_to_matrix(self.quats[i0]), self.translations[i0])
        alpha = (stamp_ns - stamps[i0]) / (stamps[i1] - stamps[i0])
        trans = (1.0 - alpha) * self.translations[i0] + alpha * self.translations[i1]
        quat = slerp_xyzw(self.quats[i0], self.quats[i1], alpha)
        return make_transform(quat_xyzw_to_matrix(quat), trans)


class TransformBuffer:
    """Tree of frames with static and time-stamped transforms; see the module docstring."""

    def __init__(self, tolerance_ns: int = 0) -> None:
        self.tolerance_ns = int(tolerance_ns)
        self._parent: dict[str, str] = {}
        self._edges: dict[str, _Edge] = {}

    def set_transform(
        self,
        parent: str,
        child: str,
        stamp_ns: int,
        translation: np.ndarray,
        quat_xyzw: np.ndarray,
        static: bool = False,
    ) -> None:
        """Record ``T_parent_child`` at ``stamp_ns`` (translation ``(3,)``, quaternion ``(4,)``)."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if parent == child:
            raise ValueError(f"transform from {parent!r} to itself")
        old = self._parent.get(child)
        if old is not None and old != parent:
            logger.warning("frame %r re-parented from %r to %r", child, old, parent)
            del self._edges[child]
        self._parent[child] = parent
        edge = self._edges.setdefault(child, _Edge(static=static))
        if edge.static != static:
            edge = self._edges[child] = _Edge(static=static)
        q = np.asarray(quat_xyzw, dtype=np.float64)
        edge.insert(int(stamp_ns), np.asarray(translation, dtype=np.float64), q / np.linalg.norm(q))

    def set_matrix(
        self, parent: str, child: str, stamp_ns: int, t: np.ndarray, static: bool = False
    ) -> None:
        """Record ``T_parent_child`` given as a homogeneous ``(4, 4)`` matrix."""
        t = np.asarray(t, dtype=np.float64)
        self.set_transform(parent, child, stamp_ns, t[:3, 3], matrix_to_quat_xyzw(t[:3, :3]), static)

    @property
    def frames(self) -> set[str]:
        return set(self._parent) | set(self._parent.values())

    def _chain_to_root(self, frame: str) -> list[str]:
        chain = [frame]
        while chain[-1] in self._parent:
            chain.append(self._parent[chain[-1]])
            if len(chain) > 1000:
                raise LookupError("cycle in the transform tree")
        return chain

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """``T_target_source`` ``(4, 4)`` float64 at ``stamp_ns``: maps source-frame points to target.

        Raises LookupError when the frames are not connected or a dynamic edge on the
        path cannot answer at that stamp.
        """
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        up_src = self._chain_to_root(source)
        up_tgt = self._chain_to_root(target)
        common = next((f for f in up_src if f in set(up_tgt)), None)
        if common is None:
            raise LookupError(f"frames {target!r} and {source!r} are not connected")
        # T_common_source = product of edges from common down to source
        t_common_source = np.eye(4)
        for f in up_src[: up_src.index(common)]:
            t_common_source = self._edges[f].at(stamp_ns, self.tolerance_ns) @ t_common_source
        t_common_target = np.eye(4)
        for f in up_tgt[: up_tgt.index(common)]:
            t_common_target = self._edges[f].at(stamp_ns, self.tolerance_ns) @ t_common_target
        return invert_transform(t_common_target) @ t_common_source
