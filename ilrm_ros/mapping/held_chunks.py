"""Background refinement's chunk updates, held back and sent together (ROS-free).

A map refinement step rewrites tens of chunks, and the next step, on a neighbouring keyframe,
rewrites many of the same ones again. A subscriber only needs each chunk's newest content:
:class:`HeldChunks` keeps, per chunk, the newest UPSERT or DELETE of the refinement steps since
the last send and hands them over at most every ``period_s`` (``refine.map_publish_period_s``).

Why a replica stays exact: an UPSERT carries the whole chunk, and a ``MapReplica`` ignores a
chunk revision older than the one it holds. Sending only the newest update per chunk, later,
therefore leaves a replica that also received everything sent directly (windows, reset, load)
equal to the map once the held updates are sent. An update sent directly supersedes what is
held for its chunks (a CLEAR: everything), and updates of a map id other than the current one
are never sent.
"""
from __future__ import annotations

import threading

from ilrm_ros.mapping.chunks import ChunkUpdate, MapUpdate

__all__ = ["HeldChunks"]


class HeldChunks:
    """The newest held update per chunk key, released at most every ``period_s`` seconds. Thread-safe."""

    def __init__(self, period_s: float) -> None:
        self.period_s = float(period_s)
        self._held: dict[tuple[int, int, int], ChunkUpdate] = {}
        self._last_release = float("-inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def hold(self, update: MapUpdate) -> None:
        """Keep the chunk updates of ``update`` (a refinement step's), replacing older ones of the same chunk."""
        with self._lock:
            for u in update.updates:
                old = self._held.get(u.key)
                if old is None or old.map_id != u.map_id or u.revision >= old.revision:
                    self._held[u.key] = u

    def sent(self, update: MapUpdate) -> None:
        """``update`` went out directly: forget what it supersedes (its chunks; everything after a CLEAR)."""
        with self._lock:
            if update.cleared:
                self._held.clear()
                return
            for u in update.updates:
                old = self._held.get(u.key)
                if old is not None and (old.map_id != u.map_id or old.revision <= u.revision):
                    del self._held[u.key]

    def due(self, now: float) -> bool:
        """Something is held and ``period_s`` has passed since the last release (``now``: monotonic seconds)."""
        with self._lock:
            return bool(self._held) and now - self._last_release >= self.period_s

    def release(self, now: float, map_id: str) -> MapUpdate | None:
        """The held updates of map ``map_id`` as one MapUpdate (chunk key order), forgetting all held;
        None when none is held for that map."""
        with self._lock:
            ups = [self._held[k] for k in sorted(self._held) if self._held[k].map_id == map_id]
            self._held.clear()
            self._last_release = now
        if not ups:
            return None
        return MapUpdate(map_id=map_id, revision=max(u.revision for u in ups), updates=ups)
