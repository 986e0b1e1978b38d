"""The heap setting the model's CPU path asks for (core/heap.py): set once on glibc, a no-op elsewhere.

Its effect (fewer page faults per forward) depends on the order of earlier allocations, so it is
measured in ``bench model`` rather than pinned here; the fused forward's call is specified in
test/model/test_model_native.py.
"""
import platform

import pytest

from ilrm_ros.core import heap


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_the_thresholds_are_set_once_on_glibc(monkeypatch):
    monkeypatch.setattr(heap, "_done", None)
    assert heap.keep_freed_memory() is True
    monkeypatch.setattr(heap.ctypes, "CDLL", lambda *a, **kw: pytest.fail("set twice"))
    assert heap.keep_freed_memory() is True


def test_without_a_c_library_that_has_mallopt_it_does_nothing(monkeypatch):
    monkeypatch.setattr(heap, "_done", None)

    def no_libc(*args, **kwargs):
        raise OSError("no libc here")

    monkeypatch.setattr(heap.ctypes, "CDLL", no_libc)
    assert heap.keep_freed_memory() is False and heap.keep_freed_memory() is False
