"""ilrm_ros: a ROS 2 mapping node that builds 3D Gaussian maps with iLRM.

The generated interface modules (``ilrm_ros.msg``, ``ilrm_ros.srv``) are installed by
rosidl into site-packages, possibly in a different directory from these sources
(pip route, editable installs, running from a checkout); extending ``__path__`` lets
both halves import as one package.
"""
import os
from pkgutil import extend_path

# Idle OpenMP threads sleep instead of spinning (set before torch loads its OpenMP runtime).
# On a robot's CPU shared with other nodes -- and on 2-core machines -- spinning workers made
# the model and the rasterizer several times slower (measured: 100k Gaussians at 256x256
# took 2.0-6.8 s with spinning threads vs 0.8-1.0 s passive on a loaded 2-core machine).
# An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# numpy's OpenBLAS on one thread: the node's numpy products are small (a window's Gaussians times a 3x3
# or 4x4 matrix), and after each one OpenBLAS's own worker threads spin for a while on the cores the
# model and the rasterizer need (measured: the renders after an 8-view window took 32-36 ms instead of
# 22 ms). An explicit OPENBLAS_NUM_THREADS in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
