"""Synthetic devices and a pass-through config view for the protocol tests.

The fixtures under ../shared are virtio functions with MSI-X only; these add a function with
both MSI (multi-message capable) and MSI-X, built byte by byte so each test knows its layout.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import COMMON_HEADER, MSI, MSIX, PM, TYPE0
from pciback.protocol.dispatch import ExportedDevice
from pciback.protocol.interrupts import InterruptControl
from pciback.protocol.transport import SharedPage
from pciback.sim.device import SimDevice
from pciback.sim.fixtures import fixture_dir
from pciback.sim.hypervisor import SimHypervisor

PM_CAP = 0x40
MSI_CAP = 0x50
MSIX_CAP = 0x70
MSIX_TABLE_SIZE = 8
MSI_CAPABLE_VECTORS = 8
INTERRUPT_LINE = 11
# ../shared/fixtures beside the repository, or the copies shipped with the package.
FIXTURES = str(fixture_dir())


def nic_config(*, msi: bool = True, msix: bool = True, command: int = 0x0006) -> bytes:
    """A type-0 network function: BAR0 32-bit memory, PM -> MSI (64-bit, 8 vectors) -> MSI-X
    (8 entries in BAR0), INTx pin A on line 11."""
    cfg = bytearray(256)
    status = COMMON_HEADER.STATUS.CAPABILITIES_LIST.mask
    # vendor, device, command and status
    struct.pack_into("<HHHH", cfg, COMMON_HEADER.VENDOR_ID.offset, 0x8086, 0x10D3, command, status)
    revision = COMMON_HEADER.REVISION_ID.offset
    struct.pack_into("<I", cfg, revision, 0x02000001)  # class 02:00:00, revision 1
    struct.pack_into("<I", cfg, TYPE0.BAR0.offset, 0xFE000000)
    struct.pack_into("<HH", cfg, TYPE0.SUBSYSTEM_VENDOR_ID.offset, 0x8086, 0xA01F)
    cfg[TYPE0.CAPABILITIES_POINTER.offset] = PM_CAP
    cfg[TYPE0.INTERRUPT_LINE.offset], cfg[TYPE0.INTERRUPT_PIN.offset] = INTERRUPT_LINE, 1
    chain = [PM_CAP] + ([MSI_CAP] if msi else []) + ([MSIX_CAP] if msix else [])
    for pos, nxt in zip(chain, [*chain[1:], 0], strict=True):
        cfg[pos + 1] = nxt
    cfg[PM_CAP] = PM.id
    struct.pack_into("<HH", cfg, PM_CAP + PM.PMC.offset, 0x0003, 0x0008)  # PMC, PMCSR
    if msi:
        cfg[MSI_CAP] = MSI.id
        mmc = MSI_CAPABLE_VECTORS.bit_length() - 1
        control = MSI.CONTROL.ADDR64.mask | mmc << MSI.CONTROL.MULTIPLE_MESSAGE_CAPABLE.shift
        struct.pack_into("<H", cfg, MSI_CAP + MSI.CONTROL.offset, control)
    if msix:
        cfg[MSIX_CAP] = MSIX.id
        control_table_pba = (MSIX_TABLE_SIZE - 1, 0x2000, 0x3000)
        struct.pack_into("<HII", cfg, MSIX_CAP + MSIX.CONTROL.offset, *control_table_pba)
    return bytes(cfg)


def nic(address: str = "0000:03:00.0", **kwargs: bool | int) -> SimDevice:
    msi = bool(kwargs.get("msi", True))
    msix = bool(kwargs.get("msix", True))
    command = int(kwargs.get("command", 0x0006))
    config = nic_config(msi=msi, msix=msix, command=command)
    return SimDevice(address, config, bar_sizes={0: 0x4000})


class PassView:
    """A config view that forwards to the device, standing in for the engine in unit tests."""

    def __init__(self, device: SimDevice) -> None:
        self.device = device
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, size: int) -> int:
        self.reads.append((offset, size))
        return self.device.read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.device.write(offset, size, value)

    def capability_offset(self, cap_id: int) -> int | None:
        return self.device.find_capability(cap_id)


class OneDevice:
    """A DeviceLookup holding a single device at a fixed guest address."""

    def __init__(self, exported: ExportedDevice, domain: int, bus: int, devfn: int) -> None:
        self.exported = exported
        self.key = (domain, bus, devfn)

    def lookup(self, domain: int, bus: int, devfn: int) -> ExportedDevice | None:
        return self.exported if (domain, bus, devfn) == self.key else None


def export(
    device: SimDevice, hypervisor: SimHypervisor, domid: int = 1
) -> tuple[OneDevice, PassView]:
    view = PassView(device)
    irq = InterruptControl(domid, device, hypervisor, view)
    exported = ExportedDevice(device.address, device, view, irq)
    return OneDevice(exported, 0, 3, 0), view


def post_op(page: SharedPage, **fields: int) -> None:
    """Write an op on the page as a frontend would (unset fields are 0) and raise the flag."""
    op = page.info.op
    for name in ("cmd", "err", "domain", "bus", "devfn", "offset", "size", "value", "info"):
        setattr(op, name, fields.get(name, 0))
    page.info.flags = int(page.info.flags) | 1


def refused(call: Callable[[], object]) -> XenPciError:
    """The error an op refused with (it must raise PciOpError)."""
    with pytest.raises(PciOpError) as info:
        call()
    return info.value.err
