"""The simulated host: devices built from config dumps, a simulated hypervisor and frontend.

`SimHost` sits on top of the daemon (pciback.daemon.core), which opens the simulated host
(pciback.sim.environment) when it runs on it; SimHost is therefore imported on first use, not
with the package, so that the simulated devices and ports load without the daemon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pciback.errors import PciOpError, XenPciError
from pciback.sim.device import SimDevice
from pciback.sim.frontend import FrontendClosed, GuestDevice, MultiMsiRefused, SimFrontend
from pciback.sim.hypervisor import SimHypervisor

if TYPE_CHECKING:
    from pciback.sim.host import SimGuest, SimHost, SimHostError

_LAZY = ("SimGuest", "SimHost", "SimHostError")

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from pciback.sim import host

        return getattr(host, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
