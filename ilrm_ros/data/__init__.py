"""Posed-image data: procedural scenes rendered by an exact ray caster (synth.py, rooms.py,
scene.py, raycast.py, trajectories.py), their files (sequence_io.py; CLI: ilrm-ros data synth)
and the training-window samplers (view_sampling.py). Formats shared with the node (rosbag2,
transforms.json, PLY) live in :mod:`ilrm_ros.io`."""
