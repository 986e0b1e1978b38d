"""The node's idle work (ros/outputs.MapOutputs.refine_idle): background map refinement steps whose chunks go
out on ~/chunks (each chunk's newest content at most every ``refine.map_publish_period_s``, all of it when the
rounds end), at most ``refine.map_rounds`` rounds over the stored keyframes per window, each step told to yield
when a window waits, nothing when off."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("rclpy")

from ilrm_ros.core.gaussians import Gaussians  # noqa: E402
from ilrm_ros.mapping.chunks import MapReplica  # noqa: E402
from ilrm_ros.mapping.gaussian_map import GaussianMap  # noqa: E402
from ilrm_ros.mapping.map_refine import MapRefineStats  # noqa: E402
from ilrm_ros.ros.conversions import msg_to_update  # noqa: E402
from ilrm_ros.ros.outputs import MapOutputs  # noqa: E402


class Pub:
    def __init__(self) -> None:
        self.sent = []

    def publish(self, msg) -> None:
        """What a subscriber gets: a message, also when serialized bytes were published (~/chunks)."""
        if isinstance(msg, bytes):
            from rclpy.serialization import deserialize_message

            from ilrm_ros.msg import GaussianChunk

            msg = deserialize_message(msg, GaussianChunk)
        self.sent.append(msg)


class FakeMapper:
    """Two keyframes; each step rewrites the map's chunks (a new revision) unless off."""

    def __init__(self, enabled: bool) -> None:
        self.keyframes = [0, 1]
        self.map = GaussianMap()
        gen = torch.Generator().manual_seed(0)
        self.map.add(Gaussians(means=torch.rand(20, 3, generator=gen) * 5, quats=torch.tensor([[1.0, 0, 0, 0]] * 20),
                               scales=torch.full((20, 3), 0.05), opacities=torch.full((20,), 0.9),
                               colors=torch.rand(20, 3, generator=gen)))
        self.enabled, self.steps = enabled, 0

    def refine_map_step(self, preempt=None):
        self.steps += 1
        self.preempt = preempt
        if not self.enabled:
            return SimpleNamespace(updates=[]), MapRefineStats()
        edits = {k: (np.arange(len(c)), c.rows.numpy() * 0.99) for k, c in self.map.chunks.items()}
        return self.map.replace_rows(edits), MapRefineStats(stopped_by="iters")

    def all_rows(self):
        return np.zeros((0, 14), np.float32)


def outputs_for(mapper, rounds: int = 1, period: float = 0.0):
    from builtin_interfaces.msg import Time

    grid_asks = []   # the occupancy outputs are asked to republish (throttled there) after each changing step
    node = SimpleNamespace(mapper=mapper, map_frame="map",
                           occupancy_out=SimpleNamespace(publish=lambda: grid_asks.append(mapper.map.revision)),
                           cfg=SimpleNamespace(map=SimpleNamespace(publish_period_s=0.0),
                                               refine=SimpleNamespace(map_rounds=rounds,
                                                                      map_publish_period_s=period)),
                           worker=SimpleNamespace(window_waiting=lambda: "a window waits"),
                           create_publisher=lambda *a, **k: Pub(),
                           get_clock=lambda: SimpleNamespace(now=lambda: SimpleNamespace(to_msg=Time)))
    out = MapOutputs(node)
    out.infos = []  # ~/map_info is built from the whole node; here: the revision each one would carry
    out.publish_info = lambda: out.infos.append(mapper.map.revision)
    out.grid_asks = grid_asks
    return out


def test_idle_steps_publish_their_chunks_and_stop_after_one_round():
    mapper = FakeMapper(enabled=True)
    out = outputs_for(mapper)
    replica = MapReplica()
    replica.apply_all(mapper.map.snapshot().updates)
    assert out.refine_idle() and out.refine_idle()
    assert not out.refine_idle()          # one round over the 2 keyframes, then sleep until the next window
    assert mapper.steps == 2
    assert out.infos == [2, 3]            # ~/map_info after each step that changed the map (the add was 1)
    assert out.grid_asks == [2, 3]        # and the occupancy grid, which integrated the refined depth
    for msg in out.pub_chunks.sent:
        assert replica.apply(msg_to_update(msg))
    mine = {k: c.rows.numpy() for k, c in mapper.map.chunks.items()}
    assert list(replica.chunk_arrays()) == list(mine)
    assert all(np.array_equal(replica.chunk_arrays()[k], v) for k, v in mine.items())
    out.refine_steps_since_window = 0      # what on_window does
    assert out.refine_idle()
    assert mapper.preempt() == "a window waits"  # each step can ask the worker whether to yield


def test_held_chunks_go_out_once_each_when_the_rounds_end():
    mapper = FakeMapper(enabled=True)
    out = outputs_for(mapper, rounds=2, period=3600.0)
    replica = MapReplica()
    replica.apply_all(mapper.map.snapshot().updates)
    chunks = len(mapper.map.chunks)
    assert out.refine_idle()
    assert len(out.pub_chunks.sent) == chunks     # the first release is due at once
    while out.refine_idle():
        assert len(out.pub_chunks.sent) == chunks  # the next steps are held (period not over)
    assert mapper.steps == 4 and len(out.pub_chunks.sent) == 2 * chunks   # the rounds ended: each chunk once more
    for msg in out.pub_chunks.sent:
        replica.apply(msg_to_update(msg))
    mine = {k: c.rows.numpy() for k, c in mapper.map.chunks.items()}
    assert list(replica.chunk_arrays()) == list(mine)
    assert all(np.array_equal(replica.chunk_arrays()[k], v) for k, v in mine.items())
    assert out.infos == [2, 3, 4, 5]              # ~/map_info still follows every step


@pytest.mark.parametrize("rounds", [1, 3])
def test_idle_steps_stop_after_map_rounds_rounds(rounds):
    mapper = FakeMapper(enabled=True)
    out = outputs_for(mapper, rounds)
    while out.refine_idle():
        pass
    assert mapper.steps == rounds * len(mapper.keyframes)


def test_idle_work_stops_at_once_when_refinement_is_off():
    mapper = FakeMapper(enabled=False)
    out = outputs_for(mapper)
    assert not out.refine_idle() and out.pub_chunks.sent == [] and out.grid_asks == []
