"""A ROS-free transform buffer with tf2's semantics, hardened against hostile input.

:class:`PoseBuffer` keeps, per child frame, an optional static transform and a
time-sorted history of dynamic samples, **each with its own parent** (as tf2 stores
them). ``lookup(target, source, t)`` returns ``T_target_source`` (4x4, maps points in
``source`` coordinates into ``target``): both frames are walked up to their common
ancestor, every link is evaluated at ``t`` (translation interpolated linearly, rotation
by shortest-path slerp between the two bracketing samples), static links are valid at all
times, and ``t == 0`` means "the latest time at which every dynamic link of the chain has
data" (tf2's latest common time). Nothing is extrapolated: times outside a link's history
raise :class:`ExtrapolationError` telling "past" or "future".

Semantics under hostile input (each rejection raises :class:`TransformRejected` with a
``reason``, so callers can count and name it; nothing already stored changes):

* ``invalid``: empty frame ids (also ``' '`` and ``'/'``), a frame as its own parent,
  NaN/inf, a quaternion off unit norm by more than 0.01 (tf2's rule);
* ``loop``: a transform that would close a cycle in the tree (``base_link -> map`` while
  ``map -> base_link`` is known) is refused at insertion;
* ``future``: a dynamic sample stamped more than ``max_future_s`` after the caller's
  ``now_ns`` (tf2 would accept it and then drop the whole history as "older than the
  cache", stalling the link for good).
* **re-parenting** is per sample, as in tf2: between two samples with different parents
  the earlier one holds (no interpolation), so a one-off re-parenting message affects
  only the time up to the next sample. A ``/tf`` sample for a frame that has a static
  transform governs only the time span its dynamic samples cover; outside it the static
  transform holds again (tf2 would let it overwrite the static transform until
  ``/tf_static`` is re-published).
* **recovery**: samples older than ``cache_time_s`` behind a link's newest are ignored
  (tf2's TF_OLD_DATA). When ``recover_after`` such samples arrive in a row, the newest
  samples are the outliers (e.g. one stamped far ahead when no clock was given): they
  are dropped with a warning and the stream continues.

Deliberate differences from tf2, all at the edges: a leading ``/`` in frame ids is
stripped everywhere; a repeated stamp is ignored like tf2's TF_REPEATED_DATA.
All methods are thread-safe (one lock per buffer). This module owns storage policy
(insertion, rejection, recovery); evaluating the stored tree at a time, and the lookup
errors (:class:`~ilrm_ros.io.pose_tree.TransformError` and its subclasses), are in
:mod:`ilrm_ros.io.pose_tree`.
"""
from __future__ import annotations

import bisect
import collections
import logging
import threading
from typing import Any, Iterable

import numpy as np

from ilrm_ros.io.frames import NS_PER_S, stamp_to_ns
from ilrm_ros.io.pose_tree import FrameHistory, FrameNotFound, Sample, TransformError, fmt_s, known_frames, lookup_in
from ilrm_ros.io.rigid import checked_pose

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- insertion errors


class TransformRejected(ValueError):
    """A transform refused at insertion; ``reason`` is ``invalid``, ``loop`` or ``future``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def clean_frame_id(frame_id: str) -> str:
    """A frame id without surrounding blanks and leading ``/``; ValueError if nothing is left."""
    cleaned = str(frame_id).strip().lstrip("/").strip()
    if not cleaned:
        raise ValueError(f"frame id {frame_id!r} is empty")
    return cleaned


class PoseBuffer:
    """Transform tree with time histories (see the module docstring).

    cache_time_s:          history kept per dynamic link, measured back from its newest
                           sample (tf2's cache_time).
    max_samples_per_link:  hard bound per link on top of the time window.
    max_future_s:          reject dynamic samples this far after ``now_ns`` (0: no check;
                           the check also needs a ``now_ns`` > 0 at insertion).
    recover_after:         consecutive too-old samples after which the newer history of a
                           link is taken for outliers and dropped.
    """

    def __init__(self, cache_time_s: float = 10.0, max_samples_per_link: int = 20_000,
                 max_future_s: float = 0.0, recover_after: int = 3) -> None:
        if not cache_time_s > 0:
            raise ValueError(f"cache_time_s must be > 0, got {cache_time_s}")
        if max_samples_per_link < 2:
            raise ValueError("max_samples_per_link must be >= 2 (interpolation needs two)")
        self.cache_ns = int(round(cache_time_s * NS_PER_S))
        self.max_samples_per_link = int(max_samples_per_link)
        self.max_future_ns = int(round(max(0.0, max_future_s) * NS_PER_S))
        self.recover_after = max(1, int(recover_after))
        self._frames: dict[str, FrameHistory] = {}
        self._lock = threading.RLock()
        self.rejected = 0  # samples ignored (too old, repeated stamp)
        self.rejections: collections.Counter[str] = collections.Counter()  # by reason, incl. raised ones

    # ------------------------------------------------------------------ insertion

    def set_transform(self, parent: str, child: str, stamp_ns: int, translation: Iterable[float],
                      quaternion_xyzw: Iterable[float], static: bool = False, now_ns: int = 0) -> bool:
        """Store ``T_parent_child`` at ``stamp_ns`` (ignored for static). Returns True if kept.

        Raises :class:`TransformRejected` (a ValueError) for invalid, looping or
        far-future transforms; returns False for samples ignored as too old or repeated.
        """
        try:
            parent, child = clean_frame_id(parent), clean_frame_id(child)
            if parent == child:
                raise ValueError(f"a frame cannot be its own parent ({child!r})")
            t, q = checked_pose(translation, quaternion_xyzw, f"transform {parent!r} -> {child!r}")
        except ValueError as exc:
            raise self._reject("invalid", str(exc)) from None
        stamp_ns = int(stamp_ns)
        with self._lock:
            if not static and now_ns > 0 and self.max_future_ns and stamp_ns > now_ns + self.max_future_ns:
                raise self._reject("future", f"transform {parent!r} -> {child!r} stamped {fmt_s(stamp_ns)} is "
                                             f"{(stamp_ns - now_ns) / NS_PER_S:.3g} s ahead of the clock "
                                             f"(limit {self.max_future_ns / NS_PER_S:g} s)")
            loop = self._path_up(parent, child)
            if loop is not None:
                raise self._reject("loop", f"transform {parent!r} -> {child!r} would close a loop: "
                                           f"{' -> '.join(reversed([child, *loop]))}")
            frame = self._frames.setdefault(child, FrameHistory())
            if static:
                frame.static = Sample(parent, t, q)
                return True
            return self._insert(frame, child, stamp_ns, Sample(parent, t, q))

    def _reject(self, reason: str, message: str) -> TransformRejected:
        self.rejections[reason] += 1
        return TransformRejected(reason, message)

    def _path_up(self, start: str, goal: str) -> list[str] | None:
        """Frames from ``start`` up to ``goal`` through any known parent, or None if unreachable."""
        stack, seen = [(start, [start])], {start}
        while stack:
            frame, path = stack.pop()
            if frame == goal:
                return path
            node = self._frames.get(frame)
            for parent in node.parents() if node else ():
                if parent not in seen:
                    seen.add(parent)
                    stack.append((parent, path + [parent]))
        return None

    def _insert(self, frame: FrameHistory, child: str, stamp_ns: int, sample: Sample) -> bool:
        stamps = frame.stamps
        if stamps and stamp_ns < stamps[-1] - self.cache_ns:
            frame.stale_run += 1
            if frame.stale_run < self.recover_after:
                self.rejected += 1
                self.rejections["old"] += 1
                logger.debug("ignoring %r sample at %s: older than the cache", child, fmt_s(stamp_ns))
                return False
            keep = bisect.bisect_right(stamps, stamp_ns + self.cache_ns)
            logger.warning("frame %r: %d sample(s) up to %s are far ahead of the stream, which continues at %s: "
                           "dropped them", child, len(stamps) - keep, fmt_s(stamps[-1]), fmt_s(stamp_ns))
            del stamps[keep:]
            del frame.samples[keep:]
        frame.stale_run = 0
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            self.rejected += 1
            self.rejections["repeated"] += 1
            logger.debug("ignoring %r sample at %s: repeated stamp", child, fmt_s(stamp_ns))
            return False
        stamps.insert(i, stamp_ns)
        frame.samples.insert(i, sample)
        drop = max(bisect.bisect_left(stamps, stamps[-1] - self.cache_ns), len(stamps) - self.max_samples_per_link)
        if drop > 0:
            del stamps[:drop]
            del frame.samples[:drop]
        return True

    def set_transform_stamped(self, msg: Any, static: bool = False, now_ns: int = 0) -> bool:
        """Insert a ``geometry_msgs/TransformStamped``-like message (duck-typed)."""
        tr, rot = msg.transform.translation, msg.transform.rotation
        return self.set_transform(msg.header.frame_id, msg.child_frame_id, stamp_to_ns(msg.header.stamp),
                                  (tr.x, tr.y, tr.z), (rot.x, rot.y, rot.z, rot.w), static=static, now_ns=now_ns)

    def set_tf_message(self, msg: Any, static: bool = False, now_ns: int = 0) -> int:
        """Insert every transform of a ``tf2_msgs/TFMessage``-like message.

        Bad transforms are logged and skipped; returns how many were stored.
        """
        stored = 0
        for ts in msg.transforms:
            try:
                stored += int(self.set_transform_stamped(ts, static=static, now_ns=now_ns))
            except ValueError as exc:
                logger.warning("skipping transform: %s", exc)
        return stored

    def clear(self) -> None:
        """Forget everything (e.g. when ROS time jumps backwards, as tf2 does)."""
        with self._lock:
            self._frames.clear()

    # ------------------------------------------------------------------ inspection

    def frames(self) -> set[str]:
        """All known frame ids (children and parents)."""
        with self._lock:
            return known_frames(self._frames)

    def parent_of(self, frame: str) -> str | None:
        """The parent of ``frame``'s newest sample (its static parent if it has no dynamic ones)."""
        with self._lock:
            node = self._frames.get(clean_frame_id(frame))
            return None if node is None else node.latest_parent()

    def num_samples(self, child: str) -> int:
        """Dynamic samples held for ``child`` (1 for a static-only frame, 0 if unknown)."""
        with self._lock:
            node = self._frames.get(clean_frame_id(child))
            if node is None:
                return 0
            return len(node.stamps) or int(node.static is not None)

    # ------------------------------------------------------------------ lookup

    def lookup_stamped(self, target_frame: str, source_frame: str, stamp_ns: int = 0) -> tuple[np.ndarray, int]:
        """Like :meth:`lookup`, also returning the time actually used (resolves ``0``)."""
        try:
            target, source = clean_frame_id(target_frame), clean_frame_id(source_frame)
        except ValueError as exc:
            raise FrameNotFound(str(exc)) from None
        with self._lock:
            return lookup_in(self._frames, target, source, int(stamp_ns))

    def lookup(self, target_frame: str, source_frame: str, stamp_ns: int = 0) -> np.ndarray:
        """(4, 4) float64 ``T_target_source`` at ``stamp_ns`` (0: latest common time).

        Raises :class:`FrameNotFound`, :class:`ConnectivityError` or
        :class:`ExtrapolationError` (all :class:`TransformError`, a ``LookupError``).
        """
        return self.lookup_stamped(target_frame, source_frame, stamp_ns)[0]

    def latest_common_time(self, target_frame: str, source_frame: str) -> int:
        """Newest time (ns) at which every dynamic link between the frames has data (0: all static)."""
        return self.lookup_stamped(target_frame, source_frame, 0)[1]

    def try_lookup(self, target_frame: str, source_frame: str, stamp_ns: int = 0) -> np.ndarray | None:
        """:meth:`lookup` returning None instead of raising a :class:`TransformError`."""
        try:
            return self.lookup(target_frame, source_frame, stamp_ns)
        except TransformError:
            return None

    def can_transform(self, target_frame: str, source_frame: str, stamp_ns: int = 0) -> bool:
        """True when :meth:`lookup` would succeed now."""
        return self.try_lookup(target_frame, source_frame, stamp_ns) is not None
