"""The node's memory policy (ros/memory.py): multi-megabyte buffers go back to the OS, the model's tensors stay
on the heap, and the garbage collector stops walking the start-up objects."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ilrm_ros.ros import memory
from ilrm_ros.ros.memory import MAX_MMAP_THRESHOLD, MIN_MMAP_THRESHOLD, fit_to_model, mmap_threshold_for

MiB = 1 << 20


@pytest.mark.parametrize("largest,expected", [
    (0, MIN_MMAP_THRESHOLD), (3 * MiB, 4 * MiB), (3 * MiB + 1, 5 * MiB), (6 * MiB, 7 * MiB), (12 * MiB, 13 * MiB),
    (100 * MiB, MAX_MMAP_THRESHOLD),
])
def test_the_threshold_clears_the_largest_tensor_by_a_mebibyte_within_4_and_32(largest, expected):
    assert mmap_threshold_for(largest) == expected


_PROBE = textwrap.dedent("""
    import resource, sys, torch
    from ilrm_ros.mapping.inference import camera_rig, warm_up_model
    from ilrm_ros.model.loading import random_model
    from ilrm_ros.ros.memory import mmap_threshold_for, pin_malloc_thresholds
    torch.set_num_threads(1)
    model = random_model("small", 0).eval()
    largest = warm_up_model(model, 8, 128, 128, torch.device("cpu"))
    images = torch.full((1, 8, 3, 128, 128), 0.5)
    c2w, K = camera_rig(8, 128, 128)
    def faults(threshold):
        assert pin_malloc_thresholds(threshold)
        counts = []
        with torch.inference_mode():
            for _ in range(3):
                model(images, c2w, K)                 # settle the heap at this threshold
            for _ in range(5):
                before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                model(images, c2w, K)
                counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return sorted(counts)[2]                      # the median forward
    print(largest, faults(MiB := 1 << 20), faults(mmap_threshold_for(largest)), file=sys.stdout)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and Linux page-fault counts")
def test_at_the_models_threshold_a_forward_stops_page_faulting():
    """At a 1 MiB threshold every big tensor of an 8 x 128^2 forward is a fresh mmap (~20,000 page faults per
    forward); at mmap_threshold_for(its largest tensor) they come from the heap (the median forward: none;
    now and then one forward meets a trimmed heap top and takes a few hundred)."""
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300, check=True)
    largest, faults_small, faults_pinned = (int(v) for v in out.stdout.split())
    assert largest == 8 * 256 * 768 * 4
    assert faults_small > 2000 and faults_pinned < 100


def test_a_process_that_never_pinned_its_thresholds_is_left_alone(monkeypatch):
    """A node made inside a test (no main()) must not change the test process's malloc settings."""
    monkeypatch.setattr(memory, "_pinned", False)
    calls = []
    monkeypatch.setattr(memory, "pin_malloc_thresholds", lambda t=MIN_MMAP_THRESHOLD: calls.append(t) or True)
    assert fit_to_model(6 * MiB) is None and calls == []
    monkeypatch.setattr(memory, "_pinned", True)
    assert fit_to_model(6 * MiB) == 7 * MiB and calls == [7 * MiB]


_FREEZE_PROBE = textwrap.dedent("""
    import gc
    import torch  # noqa: F401  (what the node holds from its start: tens of thousands of objects)
    from ilrm_ros.ros import memory
    print(memory.freeze_startup_objects(), gc.get_freeze_count())
    memory.pin_malloc_thresholds()
    tracked = len(gc.get_objects())
    print(tracked, memory.freeze_startup_objects(), len(gc.get_objects()))
""")


def test_start_up_objects_are_frozen_only_in_a_process_that_pinned_its_thresholds():
    """The node's main() (which pins) freezes what is alive after the warm-up, so the collector's full passes
    walk only later objects; a process that never pinned (a node made inside a test) is left alone."""
    out = subprocess.run([sys.executable, "-c", _FREEZE_PROBE], capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    assert out[:2] == ["None", "0"]
    tracked, frozen, left = (int(v) for v in out[2:])
    assert tracked > 10_000 and frozen > 0.9 * tracked and left < 0.05 * tracked
