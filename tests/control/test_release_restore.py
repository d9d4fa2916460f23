"""Release gives the next owner the device as it was seized: what a guest wrote past the header
(a PCIe control field, a permissive byte, a PM field) is put back from the saved config space,
with no one written into a write-1-to-clear bit, even when the device has no reset to undo it."""

from __future__ import annotations

import pytest

from pciback.generated.names import PCIE
from pciback.generated.names import PM as PM_NAMES
from pciback.sim import SimHost
from pciback.sim.fixtures import fixture

try:
    E1000E = fixture("qemu/e1000e-8086-10d3.bin")
except FileNotFoundError:
    pytest.skip("../shared/fixtures/qemu is absent", allow_module_level=True)

ADDR = "0000:01:00.0"
PM = 0xC8  # e1000e-8086-10d3.bin: PM at 0xc8, PCIe at 0xe0 (MANIFEST.md)
PMCSR = PM + PM_NAMES.PMCSR.offset
DEVCTL = 0xE0 + PCIE.DEVCTL.offset
MAX_READ_REQUEST = PCIE.DEVCTL.MAX_READ_REQUEST.mask
DATA_SELECT = PM_NAMES.PMCSR.DATA_SELECT.mask
PME_STATUS = PM_NAMES.PMCSR.PME_STATUS.mask
GAP = 0x40  # no capability holds it: a guest writes it only in permissive mode


def no_reset() -> None:
    raise OSError("no reset method")  # as QEMU's xHCI in the lab


def test_release_puts_back_what_a_guest_changed_past_the_header() -> None:
    with SimHost(permissive=True) as host:
        device = host.add_device(ADDR, E1000E)
        guest = host.attach(1, [ADDR])
        saved = host.daemon.pool.devices[ADDR].saved

        def at(offset: int, size: int) -> int:
            return int.from_bytes(saved[offset : offset + size], "little")

        device.reset = no_reset  # type: ignore[method-assign]
        guest.conf_write(ADDR, DEVCTL, 2, at(DEVCTL, 2) ^ MAX_READ_REQUEST)
        guest.conf_write(ADDR, PMCSR, 2, (at(PMCSR, 2) & ~DATA_SELECT) | (5 << 9))
        guest.conf_write(ADDR, GAP, 1, at(GAP, 1) ^ 0x5A)
        assert device.read(DEVCTL, 2) != at(DEVCTL, 2)  # the guest's writes reached it
        assert device.read(GAP, 1) != at(GAP, 1)
        device.config[PMCSR + 1] |= PME_STATUS >> 8  # the device signals a PME meanwhile
        written = len(device.history)

        host.destroy_guest(1)

        assert host.owner(ADDR) is None
        assert device.read(DEVCTL, 2) == at(DEVCTL, 2)
        assert device.read(GAP, 1) == at(GAP, 1)
        assert device.read(PMCSR, 2) & DATA_SELECT == at(PMCSR, 2) & DATA_SELECT
        restore = device.history[written:]
        assert (PMCSR, 2, device.read(PMCSR, 2) & ~PME_STATUS) in restore
        assert not [w for w in restore if w[0] == PMCSR and w[2] & PME_STATUS]


def test_a_guest_that_changed_nothing_costs_no_write_past_the_header() -> None:
    with SimHost(permissive=True) as host:
        device = host.add_device(ADDR, E1000E)
        host.attach(1, [ADDR])
        device.reset = no_reset  # type: ignore[method-assign]
        written = len(device.history)
        host.destroy_guest(1)
        assert [w for w in device.history[written:] if w[0] >= 0x40] == []
