"""Devices and a host for the toolstack role's tests."""

from __future__ import annotations

import struct
from pathlib import Path

from pciback.ports.xenstore import Permission
from pciback.sim import SimHost
from pciback.sim.device import SimDevice
from pciback.sim.fixtures import fixture
from tests.protocol.simconfig import nic_config

NIC = "0000:03:00.0"
NIC2 = "0000:03:00.1"
NET = "0000:04:00.0"
SPARE = "0000:05:00.0"
BE3 = "/local/domain/0/backend/pci/3/0"
FE3 = "/local/domain/3/device/pci/0"
DOM0_IRQ = 23  # what dom0 gave the pin; the firmware's line in the dump is 11


def nic_with_io(address: str = NIC, irq: int = DOM0_IRQ) -> SimDevice:
    """A NIC with a 128 KiB memory BAR, an I/O BAR, a ROM and INTx pin A."""
    cfg = bytearray(nic_config())
    struct.pack_into("<I", cfg, 0x10, 0xFEBC0000)
    struct.pack_into("<I", cfg, 0x18, 0x0000C001)  # BAR2: I/O at 0xc000
    struct.pack_into("<I", cfg, 0x30, 0xFEB80000)  # expansion ROM
    device = SimDevice(address, bytes(cfg), bar_sizes={0: 0x20000, 2: 0x20, 6: 0x40000})
    device.irq = irq
    return device


def make_host(state_dir: Path | None = None) -> SimHost:
    """Two NIC functions, a virtio-net and a spare device, all in the pool except the spare."""
    host = SimHost(op_timeout=5.0, state_dir=state_dir)
    for address in (NIC, NIC2):
        host.env.devices[address] = nic_with_io(address)
    host.env.devices[NET] = SimDevice(NET, fixture("virtio-net-1af4-1041.bin"))
    host.env.devices[SPARE] = SimDevice(SPARE, fixture("virtio-rng-1af4-1044.bin"))
    host.hide(f"({NIC})({NIC2})({NET})")
    host.daemon.toolstack.timeout = 2.0
    return host


def node_map(host: SimHost, root: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every node under `root` (relative name -> value, permissions as xenstore-ls -p)."""
    tree = host.env.store.tree
    return {
        path[len(root) + 1 :] or ".": (value, tuple(str(p) for p in tree.perms[path]))
        for path, value in tree.values.items()
        if path == root or path.startswith(root + "/")
    }


def perms(*words: str) -> tuple[Permission, ...]:
    return tuple(Permission.parse(w) for w in words)
