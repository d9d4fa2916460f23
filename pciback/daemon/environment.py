"""What the daemon needs of the host it runs on, whichever it is: the simulated host
(pciback.sim.environment) or a real dom0 (pciback.xen.environment). The daemon reaches either
only through this, so running on one never imports the other."""

from __future__ import annotations

from typing import Protocol

from pciback.control.ownership import Ownership
from pciback.control.stub import StubPool
from pciback.daemon.datapath import SimDataPath
from pciback.ports.domain import DomainResources
from pciback.ports.hostbus import HostBus
from pciback.ports.hypervisor import HypervisorPort
from pciback.ports.uevents import UeventSource
from pciback.ports.xenstore import XenStore


class Environment(Protocol):
    # Read-only, so that each environment may hold its own kind of bus, hypervisor, ...
    @property
    def backend(self) -> str:
        """The configuration's `backend` this environment is: "sim" or "xen"."""
        ...

    @property
    def bus(self) -> HostBus: ...

    @property
    def hypervisor(self) -> HypervisorPort: ...

    @property
    def domains(self) -> DomainResources:
        """The toolstack role's domain control."""
        ...

    def make_datapath(self, pool: StubPool, ownership: Ownership) -> SimDataPath: ...

    def connect_store(self) -> XenStore: ...

    def open_uevents(self) -> UeventSource:
        """The kernel's uevents (OSError when they cannot be read)."""
        ...

    def release(self, client: XenStore) -> None:
        """The daemon stops: let go of what it opened (`client` is what connect_store gave)."""
        ...
