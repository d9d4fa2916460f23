"""The simulated host as the daemon runs on it: devices built from config dumps, an in-memory
xenstore, grant table, hypervisor and domain control. It outlives a daemon, so that a daemon can
be stopped, killed and started again on the same host (pciback.sim.host)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pciback.control.ownership import Ownership
from pciback.control.stub import StubPool
from pciback.daemon.datapath import SimDataPath
from pciback.ports.uevents import QueuedUevents
from pciback.ports.xenstore import XenStore
from pciback.sim.device import SimDevice
from pciback.sim.domctl import SimDomctl
from pciback.sim.fixtures import fixture
from pciback.sim.grants import SimGrantTable
from pciback.sim.hostbus import SimHostBus
from pciback.sim.hypervisor import SimHypervisor
from pciback.sim.xenstore import SimXenStore, SimXenStoreClient

DEFAULT_SIM_DEVICES = {
    "0000:00:00.0": "intel-0d57-host-bridge.bin",
    "0000:03:00.0": "virtio-net-1af4-1041.bin",
    "0000:03:00.1": "virtio-blk-1af4-1042.bin",
    "0000:04:00.0": "virtio-rng-1af4-1044.bin",
    "0000:05:00.0": "virtio-balloon-1af4-1045.bin",
    "0000:06:00.0": "virtio-vsock-1af4-1053.bin",
}
DEFAULT_SIM_HIDE = "(0000:03:00.*)(04:00.0)(05:00.0)(06:00.0)"


@dataclass
class SimEnvironment:
    """Everything outside the daemon in the simulation; it outlives a daemon restart."""

    backend: ClassVar[str] = "sim"
    devices: dict[str, SimDevice]
    store: SimXenStore = field(default_factory=SimXenStore)
    hypervisor: SimHypervisor = field(default_factory=SimHypervisor)
    grants: SimGrantTable = field(default_factory=SimGrantTable)
    domains: SimDomctl = field(default_factory=SimDomctl)  # the toolstack role's Xen
    bus: SimHostBus = field(init=False)
    uevents: QueuedUevents | None = field(default=None, init=False)  # the running daemon's

    def __post_init__(self) -> None:
        self.bus = SimHostBus(self.devices)

    @classmethod
    def from_dumps(cls, dumps: Mapping[str, str], base: Path | None = None) -> SimEnvironment:
        devices = {}
        for address, name in dumps.items():
            path = Path(name)
            if not path.is_absolute() and base is not None and (base / path).is_file():
                path = base / path
            devices[address] = SimDevice(address, path if path.is_file() else fixture(name))
        return cls(devices)

    def make_datapath(self, pool: StubPool, ownership: Ownership) -> SimDataPath:
        return SimDataPath(self.grants, self.bus, self.hypervisor, pool, ownership)

    def connect_store(self) -> SimXenStoreClient:
        return self.store.connect(0)

    def open_uevents(self) -> QueuedUevents:
        """The simulated kernel's uevents for this daemon: `uevents.emit` plays the kernel."""
        self.uevents = QueuedUevents()
        return self.uevents

    def release(self, client: XenStore) -> None:
        """The daemon stops; the simulated host goes on for the next one."""
        if isinstance(client, SimXenStoreClient):
            self.store.disconnect(client)
