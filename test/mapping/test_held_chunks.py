"""Held refinement chunks (mapping/held_chunks.py): only each chunk's newest update goes out, at most every
period, and a replica that gets them after everything sent directly still equals the map."""
import numpy as np

from ilrm_ros.core.gaussians import Gaussians
from ilrm_ros.mapping.chunks import ChunkUpdate, MapReplica, MapUpdate, UpdateAction
from ilrm_ros.mapping.held_chunks import HeldChunks
from ilrm_ros.mapping.map_refine import MapRefiner
from _refine_scenes import a_map, cfg, keyframes, scene


def _delete(key, revision, map_id="m") -> ChunkUpdate:
    return ChunkUpdate(UpdateAction.DELETE, map_id, key, 1.0, revision)


def test_only_the_newest_update_of_each_chunk_is_released_in_key_order():
    held = HeldChunks(1.0)
    held.hold(MapUpdate("m", 3, [_delete((1, 0, 0), 3), _delete((0, 0, 0), 3)]))
    held.hold(MapUpdate("m", 5, [_delete((1, 0, 0), 5)]))
    held.hold(MapUpdate("m", 4, [_delete((1, 0, 0), 4)]))   # late and older: the newest stays
    out = held.release(10.0, "m")
    assert [(u.key, u.revision) for u in out.updates] == [((0, 0, 0), 3), ((1, 0, 0), 5)]
    assert out.revision == 5 and out.map_id == "m" and len(held) == 0
    assert held.release(11.0, "m") is None


def test_release_waits_for_the_period_after_the_last_one():
    held = HeldChunks(1.0)
    assert not held.due(0.0)                                 # nothing held
    held.hold(MapUpdate("m", 1, [_delete((0, 0, 0), 1)]))
    assert held.due(0.0)                                     # the first release is due at once
    held.release(0.0, "m")
    held.hold(MapUpdate("m", 2, [_delete((0, 0, 0), 2)]))
    assert not held.due(0.5) and held.due(1.0)


def test_a_direct_update_supersedes_its_chunks_and_a_clear_or_another_map_everything():
    held = HeldChunks(1.0)
    held.hold(MapUpdate("m", 3, [_delete((0, 0, 0), 3), _delete((1, 0, 0), 3)]))
    held.sent(MapUpdate("m", 4, [_delete((0, 0, 0), 4)]))
    assert [u.key for u in held.release(5.0, "m").updates] == [(1, 0, 0)]
    held.hold(MapUpdate("m", 6, [_delete((0, 0, 0), 6)]))
    held.sent(MapUpdate("n", 7, [ChunkUpdate(UpdateAction.CLEAR, "n", (0, 0, 0), 1.0, 7)]))
    assert len(held) == 0
    held.hold(MapUpdate("m", 8, [_delete((0, 0, 0), 8)]))    # a step of the old map, finished after the reset
    assert held.release(9.0, "n") is None


def test_a_replica_fed_direct_updates_and_released_ones_equals_the_map():
    gmap, kfs = a_map(), keyframes(scene(0))
    replica = MapReplica()
    replica.apply_all(gmap.snapshot().updates)
    held = HeldChunks(1.0)
    refiner = MapRefiner(cfg(lr_opacities=2.0))   # large opacity steps: some chunks lose rows
    steps = 0
    for i in range(6):
        update, _ = refiner.step(gmap, kfs)
        held.hold(update)
        steps += len(update.updates)
        if i == 2:   # a window arrives: its chunks go out at once
            g = scene(7, n=30)
            direct = gmap.add(Gaussians(means=g.means * 0.5, quats=g.quats, scales=g.scales,
                                        opacities=g.opacities, colors=g.colors), window_id=99)
            held.sent(direct)
            replica.apply_all(direct.updates)
    released = held.release(100.0, gmap.map_id)
    assert 0 < len(released.updates) < steps                 # chunks rewritten by several steps go out once
    replica.apply_all(released.updates)
    mine = {k: c.rows.numpy() for k, c in gmap.chunks.items()}
    theirs = replica.chunk_arrays()
    assert list(mine) == list(theirs)
    for key in mine:
        np.testing.assert_array_equal(mine[key], theirs[key])
