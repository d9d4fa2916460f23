"""The daemon on the backend its configuration names: the simulated host (`backend = "sim"`)
or this dom0's Xen ports (`backend = "xen"`).

The daemon's core (pciback.daemon) runs on whatever environment it is given and imports
neither; this room, above the core, the simulation and the Xen adapters, is where the
configuration chooses. Each backend is imported only when chosen: a daemon on Xen loads no
simulator, one on the simulation no Xen library.
"""

from pciback.backend.daemon import Daemon, open_environment, open_sim, open_xen

__all__ = ["Daemon", "open_environment", "open_sim", "open_xen"]
