"""Model tests run single-threaded: on a shared 2-core machine, torch's OpenMP threads
slow down many-fold when other processes hold the cores, and these tiny models gain
nothing from a second thread. Restored after each test."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
