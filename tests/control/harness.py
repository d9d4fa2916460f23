"""A small simulated world for the control-plane tests: a store, a toolstack, a host bus of
fixture devices, the stub pool, ownership and the xenbus backends, with a recording data path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pciback.control.ownership import Ownership
from pciback.control.state import StateStore
from pciback.control.stub import StubPool
from pciback.generated.names import COMMON_HEADER, TYPE1
from pciback.sim.device import SimDevice
from pciback.sim.fixtures import fixture
from pciback.sim.hostbus import SimHostBus
from pciback.sim.toolstack import SimPcifront, SimToolstack
from pciback.sim.xenstore import SimXenStore
from pciback.xenbus.manager import XenbusBackends

NET = "0000:03:00.0"
BLK = "0000:03:00.1"  # a second function of the same physical slot
RNG = "0000:04:00.0"
BRIDGE = "0000:00:00.0"  # a host bridge: class bridge, header type 0
P2P = "0000:00:1c.0"  # a PCI-to-PCI bridge, header type 1 (`pci_bridge()`)

DEVICES = {
    NET: "virtio-net-1af4-1041.bin",
    BLK: "virtio-blk-1af4-1042.bin",
    RNG: "virtio-rng-1af4-1044.bin",
    BRIDGE: "intel-0d57-host-bridge.bin",
}


@dataclass
class RecordingDataPath:
    connected: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    devices: dict[tuple[int, int], dict[str, str]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    fail_connect: bool = False

    def connect(self, domid: int, devid: int, gnt_ref: int, evtchn: int) -> None:
        if self.fail_connect:
            raise OSError(f"cannot map grant {gnt_ref}")
        self.connected[(domid, devid)] = (gnt_ref, evtchn)
        self.log.append(f"connect {domid}")

    def set_devices(self, domid: int, devid: int, devices: dict[str, str]) -> None:
        self.devices[(domid, devid)] = dict(devices)

    def disconnect(self, domid: int, devid: int) -> None:
        self.connected.pop((domid, devid), None)
        self.log.append(f"disconnect {domid}")

    def suspend(self, domid: int, devid: int) -> None:
        self.connected.pop((domid, devid), None)
        self.log.append(f"suspend {domid}")


def make_devices() -> dict[str, SimDevice]:
    return {a: SimDevice(a, fixture(n)) for a, n in DEVICES.items()}


def pci_bridge(address: str = P2P, buses: tuple[int, int] = (5, 6)) -> SimDevice:
    """A PCI-to-PCI bridge (header type 1) forwarding to buses `buses` (secondary,
    subordinate)."""
    config = bytearray(256)
    ids, kind = COMMON_HEADER.VENDOR_ID.offset, COMMON_HEADER.CLASS_DEVICE
    buses_at = TYPE1.PRIMARY_BUS.offset
    config[ids : ids + 4] = (0x1C10_8086).to_bytes(4, "little")  # vendor and device
    config[kind.offset : kind.offset + kind.width] = (0x0604).to_bytes(2, "little")
    config[COMMON_HEADER.HEADER_TYPE.offset] = TYPE1.header_type
    config[buses_at : buses_at + 3] = bytes([0, *buses])  # primary, secondary, subordinate
    return SimDevice(address, bytes(config))


class World:
    def __init__(
        self,
        state_dir: Path | None = None,
        sim: dict[str, SimDevice] | None = None,
        store: SimXenStore | None = None,
        hide: str = f"({NET})({BLK})({RNG})({BRIDGE})",
    ) -> None:
        self.store = store or SimXenStore()
        self.toolstack = SimToolstack(self.store)
        self.sim = sim if sim is not None else make_devices()
        self.bus = SimHostBus(self.sim)
        self.state = StateStore(state_dir) if state_dir is not None else None
        self.ownership = Ownership(self.state)
        self.pool = StubPool(self.bus, self.ownership, self.state)
        self.pool.load()
        if hide:
            self.pool.hide(hide)
        self.datapath = RecordingDataPath()
        self.backends = XenbusBackends(
            self.store.connect(0), self.pool, self.datapath, default_mode="vpci"
        )
        self.fronts: dict[int, SimPcifront] = {}
        self.backends.start()

    def guest(
        self, domid: int, devices: list[str], mode: str = "vpci", publish: bool = True
    ) -> SimPcifront:
        front = self.fronts.get(domid) or SimPcifront(self.store, domid)
        self.fronts[domid] = front
        self.toolstack.create(domid, devices, mode)
        self.settle()
        if publish:
            front.publish()
            self.settle()
        return front

    def settle(self) -> None:
        """Let backends and frontends react until nothing moves (bounded)."""
        for _ in range(200):
            moved = self.backends.pump()
            moved += sum(f.step() for f in self.fronts.values())
            if not moved:
                return
        raise AssertionError("the handshake did not settle")

    def be(self, domid: int, name: str) -> str | None:
        return self.toolstack.xs.read(f"/local/domain/0/backend/pci/{domid}/0/{name}")

    def error(self, domid: int) -> str | None:
        return self.toolstack.xs.read(f"/local/domain/0/error/backend/pci/{domid}/0/error")
