"""Process memory settings of the node: glibc's malloc thresholds and Python's garbage collector."""
from __future__ import annotations

import gc

MIN_MMAP_THRESHOLD = 4 << 20
"""The node's mmap threshold unless its model needs more: multi-megabyte buffers go back to the OS."""
MAX_MMAP_THRESHOLD = 32 << 20
"""glibc's own ceiling for its dynamic threshold (64-bit): larger model tensors stay mmapped."""
TRIM_FACTOR = 8
"""The trim threshold over the mmap threshold (see :func:`pin_malloc_thresholds`)."""

_pinned = False


def mmap_threshold_for(largest_bytes: int) -> int:
    """The mmap threshold that keeps every tensor of the model's forward on the heap: its largest one
    (``mapping.inference.warm_up_model``) plus 1 MiB, in whole MiB, within [4 MiB, 32 MiB].

    With the 4 MiB floor alone, the 8 x 128^2 forward's 4-6 MiB tensors were fresh mmaps every time:
    ~7,700 page faults per forward, 103 against 92 ms on the 2-core VM."""
    need = ((int(largest_bytes) + (2 << 20) - 1) >> 20) << 20
    return min(MAX_MMAP_THRESHOLD, max(MIN_MMAP_THRESHOLD, need))


def pin_malloc_thresholds(mmap_threshold: int = MIN_MMAP_THRESHOLD) -> bool:
    """Keep glibc from growing the heap with big, short-lived buffers (maps, clouds).

    glibc raises its mmap threshold each time a large mmapped block is freed, after which
    multi-megabyte message buffers come from the heap and fragment it: the node's RSS then
    crept up with every ~/map publish even with a flat map. Pinning the threshold (which
    also disables the dynamic adjustment) makes those buffers go back to the OS when freed.

    The trim threshold is :data:`TRIM_FACTOR` times it: the heap keeps that much free memory at its
    top, so one window's forward reuses the memory of the last one's transient tensors instead of
    returning it and faulting it back in (at twice the mmap threshold, 3 processes in 5 took
    1,500-4,500 page faults every 4 or 8 x 128^2 forward, 2-6 ms; at eight times, a few hundred now
    and then). May be called again (the node raises the threshold to :func:`mmap_threshold_for` its
    model once that is loaded). Returns False where this is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold))) and \
            bool(libc.mallopt(m_trim_threshold, int(TRIM_FACTOR * mmap_threshold)))
    except (OSError, AttributeError):
        return False
    global _pinned
    _pinned = _pinned or ok
    return ok


def fit_to_model(largest_bytes: int) -> int | None:
    """Where this process pinned its thresholds (the node's ``main()``, the benchmarks), pin them again at
    :func:`mmap_threshold_for` the model's largest tensor; returns that threshold, or None when the
    process never pinned them (e.g. a node made inside a test) and nothing changed."""
    if not _pinned:
        return None
    threshold = mmap_threshold_for(largest_bytes)
    return threshold if pin_malloc_thresholds(threshold) else None


def freeze_startup_objects() -> int | None:
    """Where this process pinned its malloc thresholds (the node's ``main()``, the benchmarks): one full
    collection, then every object alive (torch, rclpy, the model: ~195k in ``bench node``, ~311k in the
    demo's node) moves to the collector's permanent generation (``gc.freeze``), so its later full
    collections walk only what came after. Unfrozen, each took 70-93 ms on the 2-core VM, holding the
    GIL (2 to 7 of them in a ``bench node --repeat 2`` run, 46 windows); frozen, 2-12 ms. Returns how
    many objects are frozen, or None (a node made inside another program, e.g. a test, leaves that
    program's collector alone)."""
    if not _pinned:
        return None
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
