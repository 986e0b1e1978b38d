"""A ROS-free transform buffer with tf2's semantics, and a retry queue for frames awaiting TF.

:class:`PoseBuffer` keeps, per child frame, its parent and a time-sorted history of
``T_parent_child`` samples (a tree, like tf2). ``lookup(target, source, t)`` returns
``T_target_source`` (4x4, maps points in ``source`` coordinates into ``target``): both
frames are walked up to their common ancestor, every link is evaluated at ``t``
(translation interpolated linearly, rotation by shortest-path slerp between the two
bracketing samples), static links are valid at all times, and ``t == 0`` means "the
latest time at which every dynamic link of the chain has data" (tf2's latest common
time). Nothing is extrapolated: times outside a link's history raise
:class:`ExtrapolationError` telling "past" or "future".

Deliberate differences from tf2, all at the edges: a leading ``/`` in frame ids is
stripped everywhere (tf2 rejects it in lookups); a child that switches parent or
switches between static and dynamic drops its previous history (tf2 keeps a per-sample
parent); a repeated stamp is ignored like tf2's TF_REPEATED_DATA.

All methods are thread-safe (one lock per buffer): /tf callbacks may insert while
another thread looks up.
"""
from __future__ import annotations

import bisect
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, TypeVar

import numpy as np

from ilrm_ros.mapping.frames import NS_PER_S, stamp_to_ns

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


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

    def __init__(
        self,
        message: str,
        direction: str,
        requested_ns: int,
        oldest_ns: int | None,
        newest_ns: int | None,
        frame: str,
    ) -> None:
        super().__init__(message)
        self.direction = direction
        self.requested_ns = requested_ns
        self.oldest_ns = oldest_ns
        self.newest_ns = newest_ns
        self.frame = frame


# --------------------------------------------------------------------------- math


def quat_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> (3, 3) rotation matrix."""
    x, y, z, w = (float(v) for v in q_xyzw)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> unit quaternion (x, y, z, w) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    trace = np.trace(R)
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], 0.0))
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    out = np.asarray(q, dtype=np.float64)
    out /= np.linalg.norm(out)
    return -out if out[3] < 0 else out


def slerp(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Shortest-path spherical interpolation of unit quaternions (x, y, z, w), alpha in [0, 1]."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is exact to ~1e-7 rad here
        q = q0 + alpha * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(min(dot, 1.0))
    sin_theta = math.sin(theta)
    q = (math.sin((1.0 - alpha) * theta) * q0 + math.sin(alpha * theta) * q1) / sin_theta
    return q / np.linalg.norm(q)


def make_transform(translation: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """Translation (3,) + quaternion (x, y, z, w) -> (4, 4) float64 rigid transform."""
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(q_xyzw)
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def rigid_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rotation (3, 3) + translation (3,) -> (4, 4) float64 rigid transform."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64)
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a (4, 4) rigid transform."""
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


# --------------------------------------------------------------------------- storage


@dataclass
class _Link:
    """History of one child frame relative to its parent.

    stamps: sorted sample times (ns); values: parallel (t (3,), q_xyzw (4,)) tuples.
    A static link holds exactly one sample and ignores time.
    """

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    values: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def _strip(frame_id: str) -> str:
    frame_id = str(frame_id).strip().lstrip("/")
    if not frame_id:
        raise ValueError("frame ids must not be empty")
    return frame_id


def _fmt_s(stamp_ns: int | None) -> str:
    return "none" if stamp_ns is None else f"{stamp_ns / NS_PER_S:.9f}"


class PoseBuffer:
    """Transform tree with time histories (see the module docstring).

    cache_time_s:          history kept per dynamic link, measured back from its newest
                           sample (tf2's cache_time); older samples are pruned and inserts
                           older than that window are rejected.
    max_samples_per_link:  hard bound per link on top of the time window (memory bound
                           even for very fast publishers).
    """

    def __init__(self, cache_time_s: float = 10.0, max_samples_per_link: int = 20_000) -> None:
        if not cache_time_s > 0:
            raise ValueError(f"cache_time_s must be > 0, got {cache_time_s}")
        if max_samples_per_link < 2:
            raise ValueError("max_samples_per_link must be >= 2 (interpolation needs two)")
        self.cache_ns = int(round(cache_time_s * NS_PER_S))
        self.max_samples_per_link = int(max_samples_per_link)
        self._links: dict[str, _Link] = {}
        self._lock = threading.RLock()
        self.rejected = 0  # samples refused (too old, repeated stamp)

    # ------------------------------------------------------------------ insertion

    def set_transform(
        self,
        parent: str,
        child: str,
        stamp_ns: int,
        translation: Iterable[float],
        quaternion_xyzw: Iterable[float],
        static: bool = False,
    ) -> bool:
        """Store ``T_parent_child`` at ``stamp_ns`` (ignored for static). Returns True if kept.

        Raises ValueError on empty/equal frame ids, non-finite values or a quaternion whose
        norm is off by more than 0.01 (tf2's "denormalized quaternion"); slightly
        un-normalised quaternions are normalised.
        """
        parent, child = _strip(parent), _strip(child)
        if parent == child:
            raise ValueError(f"a frame cannot be its own parent ({child!r})")
        t = np.asarray(list(translation), dtype=np.float64)
        q = np.asarray(list(quaternion_xyzw), dtype=np.float64)
        if t.shape != (3,) or q.shape != (4,):
            raise ValueError(f"translation must be (3,) and quaternion (4,), got {t.shape} {q.shape}")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
            raise ValueError(f"non-finite transform {parent!r} -> {child!r}")
        norm = float(np.linalg.norm(q))
        if abs(norm - 1.0) > 0.01:
            raise ValueError(f"quaternion {q.tolist()} for {child!r} is not unit (norm {norm:.4f})")
        q = q / norm
        stamp_ns = int(stamp_ns)
        with self._lock:
            link = self._links.get(child)
            if link is None or link.parent != parent or link.static != bool(static):
                if link is not None:
                    logger.warning(
                        "frame %r changes from %s parent %r to %s parent %r: history dropped",
                        child, "static" if link.static else "dynamic", link.parent,
                        "static" if static else "dynamic", parent,
                    )
                link = _Link(parent=parent, static=bool(static))
                self._links[child] = link
            if link.static:
                link.stamps, link.values = [stamp_ns], [(t, q)]
                return True
            return self._insert(link, child, stamp_ns, t, q)

    def _insert(self, link: _Link, child: str, stamp_ns: int, t: np.ndarray, q: np.ndarray) -> bool:
        if link.stamps and stamp_ns < link.stamps[-1] - self.cache_ns:
            self.rejected += 1
            logger.debug("ignoring %r sample at %s: older than the cache", child, _fmt_s(stamp_ns))
            return False
        i = bisect.bisect_left(link.stamps, stamp_ns)
        if i < len(link.stamps) and link.stamps[i] == stamp_ns:
            self.rejected += 1
            logger.debug("ignoring %r sample at %s: repeated stamp", child, _fmt_s(stamp_ns))
            return False
        link.stamps.insert(i, stamp_ns)
        link.values.insert(i, (t, q))
        horizon = link.stamps[-1] - self.cache_ns
        drop = bisect.bisect_left(link.stamps, horizon)
        drop = max(drop, len(link.stamps) - self.max_samples_per_link)
        if drop > 0:
            del link.stamps[:drop]
            del link.values[:drop]
        return True

    def set_transform_stamped(self, msg: Any, static: bool = False) -> bool:
        """Insert a ``geometry_msgs/TransformStamped``-like message (duck-typed)."""
        tr, rot = msg.transform.translation, msg.transform.rotation
        return self.set_transform(
            msg.header.frame_id,
            msg.child_frame_id,
            stamp_to_ns(msg.header.stamp),
            (tr.x, tr.y, tr.z),
            (rot.x, rot.y, rot.z, rot.w),
            static=static,
        )

    def set_tf_message(self, msg: Any, static: bool = False) -> int:
        """Insert every transform of a ``tf2_msgs/TFMessage``-like message.

        Bad transforms are logged and skipped; returns how many were stored.
        """
        stored = 0
        for ts in msg.transforms:
            try:
                stored += int(self.set_transform_stamped(ts, static=static))
            except ValueError as exc:
                logger.warning("skipping transform: %s", exc)
        return stored

    def clear(self) -> None:
        """Forget everything (e.g. when ROS time jumps backwards, as tf2 does)."""
        with self._lock:
            self._links.clear()

    # ------------------------------------------------------------------ inspection

    def frames(self) -> set[str]:
        """All known frame ids (children and parents)."""
        with self._lock:
            return set(self._links) | {link.parent for link in self._links.values()}

    def parent_of(self, frame: str) -> str | None:
        with self._lock:
            link = self._links.get(_strip(frame))
            return None if link is None else link.parent

    def num_samples(self, child: str) -> int:
        """Samples held for ``child``'s link (0 if unknown)."""
        with self._lock:
            link = self._links.get(_strip(child))
            return 0 if link is None else len(link.stamps)

    # ------------------------------------------------------------------ lookup

    def _chain(self, frame: str) -> list[str]:
        """[frame, parent, grandparent, …, root]."""
        chain = [frame]
        seen = {frame}
        while frame in self._links:
            frame = self._links[frame].parent
            if frame in seen:
                raise ConnectivityError(f"the transform tree has a loop through {frame!r}")
            seen.add(frame)
            chain.append(frame)
        return chain

    def _paths(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Children whose links lead from source/target up to their common ancestor."""
        known = self.frames()
        for name, frame in (("target", target), ("source", source)):
            if frame not in known:
                raise FrameNotFound(f"{name} frame {frame!r} does not exist")
        src_chain, tgt_chain = self._chain(source), self._chain(target)
        tgt_set = set(tgt_chain)
        ancestor = next((f for f in src_chain if f in tgt_set), None)
        if ancestor is None:
            raise ConnectivityError(
                f"{target!r} and {source!r} are not connected (roots {tgt_chain[-1]!r} "
                f"and {src_chain[-1]!r})"
            )
        return src_chain[: src_chain.index(ancestor)], tgt_chain[: tgt_chain.index(ancestor)]

    def _common_time(self, children: Iterable[str], target: str, source: str) -> int:
        latest: int | None = None
        for child in children:
            link = self._links[child]
            if link.static:
                continue
            if not link.stamps:
                raise ExtrapolationError(
                    f"no data for {child!r} (looking up {target!r} <- {source!r})",
                    "empty", 0, None, None, child,
                )
            newest = link.stamps[-1]
            latest = newest if latest is None else min(latest, newest)
        return 0 if latest is None else latest

    def _link_at(self, child: str, stamp_ns: int, target: str, source: str) -> np.ndarray:
        """T_parent_child at ``stamp_ns`` (4, 4)."""
        link = self._links[child]
        if link.static:
            t, q = link.values[0]
            return make_transform(t, q)
        stamps = link.stamps
        if not stamps:
            raise ExtrapolationError(
                f"no data for {child!r}", "empty", stamp_ns, None, None, child
            )
        oldest, newest = stamps[0], stamps[-1]
        if stamp_ns < oldest or stamp_ns > newest:
            direction = "past" if stamp_ns < oldest else "future"
            raise ExtrapolationError(
                f"lookup {target!r} <- {source!r} would require extrapolation into the "
                f"{direction}: requested {_fmt_s(stamp_ns)} but {child!r} -> "
                f"{link.parent!r} has data in [{_fmt_s(oldest)}, {_fmt_s(newest)}]",
                direction, stamp_ns, oldest, newest, child,
            )
        i = bisect.bisect_left(stamps, stamp_ns)
        if stamps[i] == stamp_ns:
            t, q = link.values[i]
            return make_transform(t, q)
        (t0, q0), (t1, q1) = link.values[i - 1], link.values[i]
        alpha = (stamp_ns - stamps[i - 1]) / (stamps[i] - stamps[i - 1])
        return make_transform(t0 + alpha * (t1 - t0), slerp(q0, q1, alpha))

    def _up(self, children: list[str], stamp_ns: int, target: str, source: str) -> np.ndarray:
        """T_ancestor_first for a path of children (first = the lowest frame)."""
        T = np.eye(4)
        for child in children:
            T = self._link_at(child, stamp_ns, target, source) @ T
        return T

    def lookup_stamped(self, target_frame: str, source_frame: str, stamp_ns: int = 0) -> tuple[np.ndarray, int]:
        """Like :meth:`lookup`, also returning the time actually used (resolves ``0``)."""
        target, source = _strip(target_frame), _strip(source_frame)
        stamp_ns = int(stamp_ns)
        with self._lock:
            src_path, tgt_path = self._paths(target, source)
            if stamp_ns == 0:
                stamp_ns = self._common_time(src_path + tgt_path, target, source)
            T_anc_src = self._up(src_path, stamp_ns, target, source)
            T_anc_tgt = self._up(tgt_path, stamp_ns, target, source)
        return invert_transform(T_anc_tgt) @ T_anc_src, stamp_ns

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int = 0) -> np.ndarray:
        """(4, 4) float64 ``T_target_source`` at ``stamp_ns`` (0: latest common time).

        Raises :class:`FrameNotFound`, :class:`ConnectivityError` or
        :class:`ExtrapolationError` (all :class:`TransformError`, a ``LookupError``).
        """
        return self.lookup_stamped(target_frame, source_frame, stamp_ns)[0]

    def latest_common_time(self, target_frame: str, source_frame: str) -> int:
        """Newest time (ns) at which every dynamic link between the frames has data (0: all static)."""
        target, source = _strip(target_frame), _strip(source_frame)
        with self._lock:
            src_path, tgt_path = self._paths(target, source)
            return self._common_time(src_path + tgt_path, target, source)

    def try_lookup(self, target_frame: str, source_frame: str, stamp_ns: int = 0) -> np.ndarray | None:
        """:meth:`lookup` returning None instead of raising a :class:`TransformError`."""
        try:
            return self.lookup(target_frame, source_frame, stamp_ns)
        except TransformError:
            return None

    def can_transform(self, target_frame: str, source_frame: str, stamp_ns: int = 0) -> bool:
        """True when :meth:`lookup` would succeed now."""
        return self.try_lookup(target_frame, source_frame, stamp_ns) is not None


# --------------------------------------------------------------------------- pending queue


@dataclass
class _Pending(Generic[T]):
    item: T
    stamp_ns: int
    pushed_ns: int


class PendingQueue(Generic[T]):
    """Bounded retry queue for items (frames) waiting until TF can place them.

    capacity:  most items held; pushing into a full queue drops the item with the oldest
               stamp (counted in ``dropped``).
    timeout_s: an item that has *waited* longer than this (``now_ns - pushed_ns``, both in
               the caller's clock: ROS or wall time, as long as it is the same one) is
               returned as expired.

    Typical use (every timer tick)::

        ready, expired = queue.pop_ready(lambda f, t: buffer.try_lookup("map", f.frame_id, t), now)
    """

    def __init__(self, capacity: int = 64, timeout_s: float = 1.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not timeout_s >= 0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        self.capacity = int(capacity)
        self.timeout_ns = int(round(timeout_s * NS_PER_S))
        self._items: list[_Pending[T]] = []  # sorted by stamp
        self._lock = threading.Lock()
        self.dropped = 0
        self.expired = 0
        self.resolved = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def push(self, item: T, stamp_ns: int, now_ns: int) -> T | None:
        """Queue ``item`` (data time ``stamp_ns``) at ``now_ns``; returns the item dropped, if any."""
        entry = _Pending(item, int(stamp_ns), int(now_ns))
        with self._lock:
            keys = [p.stamp_ns for p in self._items]
            self._items.insert(bisect.bisect_right(keys, entry.stamp_ns), entry)
            if len(self._items) > self.capacity:
                self.dropped += 1
                return self._items.pop(0).item
        return None

    def pop_ready(
        self, resolver: Callable[[T, int], R | None], now_ns: int
    ) -> tuple[list[tuple[T, R]], list[T]]:
        """Resolve what can be resolved, expire what waited too long.

        resolver(item, stamp_ns) returns a result (e.g. the pose) or None when not yet
        possible. Returns ``(ready, expired)``: ``ready`` lists ``(item, result)`` in stamp
        order, ``expired`` the items that are still unresolved after ``timeout_s``. An item
        resolvable in the same call in which it would expire counts as ready. The resolver is
        called without the queue's lock held.
        """
        with self._lock:
            entries = list(self._items)
        outcome: dict[int, tuple[bool, Any]] = {}  # id(entry) -> (resolved?, result)
        for entry in entries:
            result = resolver(entry.item, entry.stamp_ns)
            if result is not None:
                outcome[id(entry)] = (True, result)
            elif int(now_ns) - entry.pushed_ns > self.timeout_ns:
                outcome[id(entry)] = (False, None)
        ready: list[tuple[T, R]] = []
        expired: list[T] = []
        with self._lock:
            kept: list[_Pending[T]] = []
            for entry in self._items:  # entries dropped meanwhile by push() are not reported
                done = outcome.get(id(entry))
                if done is None:
                    kept.append(entry)
                elif done[0]:
                    ready.append((entry.item, done[1]))
                else:
                    expired.append(entry.item)
            self._items = kept
            self.resolved += len(ready)
            self.expired += len(expired)
        return ready, expired

    def clear(self) -> list[T]:
        """Remove and return every queued item."""
        with self._lock:
            items = [p.item for p in self._items]
            self._items.clear()
        return items
