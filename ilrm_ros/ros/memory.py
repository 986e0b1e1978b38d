"""Process memory settings of the node."""
from __future__ import annotations


def pin_malloc_thresholds(mmap_threshold: int = 4 << 20) -> bool:
    """Keep glibc from growing the heap with big, short-lived buffers (maps, clouds).

    glibc raises its mmap threshold each time a large mmapped block is freed, after which
    multi-megabyte message buffers come from the heap and fragment it: the node's RSS then
    crept up with every ~/map publish even with a flat map. Pinning the threshold (which
    also disables the dynamic adjustment) makes those buffers go back to the OS when freed.
    Returns False where this is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, int(mmap_threshold))) and \
            bool(libc.mallopt(m_trim_threshold, int(2 * mmap_threshold)))
    except (OSError, AttributeError):
        return False
