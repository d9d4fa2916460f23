"""The simulated host: devices built from config dumps, a simulated hypervisor and frontend."""

from pciback.errors import PciOpError, XenPciError
from pciback.sim.device import SimDevice
from pciback.sim.frontend import FrontendClosed, GuestDevice, MultiMsiRefused, SimFrontend
from pciback.sim.host import SimGuest, SimHost, SimHostError
from pciback.sim.hypervisor import SimHypervisor

__all__ = [
    "FrontendClosed",
    "GuestDevice",
    "MultiMsiRefused",
    "PciOpError",
    "SimDevice",
    "SimFrontend",
    "SimGuest",
    "SimHost",
    "SimHostError",
    "SimHypervisor",
    "XenPciError",
]
