"""ilrm_ros: a ROS 2 mapping node that builds 3D Gaussian maps with iLRM.

The generated interface modules (``ilrm_ros.msg``, ``ilrm_ros.srv``) are installed by
rosidl into site-packages, possibly in a different directory from these sources
(pip route, editable installs, running from a checkout); extending ``__path__`` lets
both halves import as one package.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
