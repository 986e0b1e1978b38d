"""ilrm_ros: a ROS 2 mapping node that builds 3D Gaussian maps with iLRM.

The generated interface modules (``ilrm_ros.msg``, ``ilrm_ros.srv``) are installed by
rosidl into site-packages, possibly in a different directory from these sources
(pip route, editable installs, running from a checkout); extending ``__path__`` lets
both halves import as one package.
"""
import os
from pkgutil import extend_path

# Idle OpenMP threads spin only briefly, then sleep (set before torch loads its OpenMP runtime).
# Spinning without limit (libgomp's default when nothing is set) made the rasterizer's own
# threads several times slower on a loaded 2-core machine (100k Gaussians at 256x256: 2.0-6.8 s
# against 0.8-1.0 s); sleeping at once (OMP_WAIT_POLICY=PASSIVE) made every parallel region of the
# model wake its workers, 12-15 % of a 4 x 128^2 forward. A short spin keeps the workers awake
# between the model's back-to-back operators and lets them sleep during anything longer.
# OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment win.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
