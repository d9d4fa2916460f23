"""The interrupt line a guest reads is dom0's IRQ for the function, as Linux's backend shows it:
a PV guest binds the GSI it reads there, so the firmware's byte in config space (which is what
the device holds) would leave the guest listening on the wrong line. Writes never land."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.generated.names import TYPE0
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

from .builders import ADDRESS, FIXTURES

DUMPS = sorted(FIXTURES.glob("*.bin")) + sorted((FIXTURES / "qemu").glob("*.bin"))
pytestmark = pytest.mark.skipif(not DUMPS, reason="../shared/fixtures is absent")
LINE = TYPE0.INTERRUPT_LINE.offset
DOM0_IRQ = 23  # what dom0 routed; QEMU's firmware writes 10 or 11 in the byte


@pytest.mark.parametrize("path", DUMPS, ids=[f"{p.parent.name}/{p.name}" for p in DUMPS])
def test_the_guest_reads_dom0s_irq_and_cannot_write_it(path: Path) -> None:
    dev = SimDevice(ADDRESS, path)
    firmware = dev.read(LINE, 1)
    dev.irq = DOM0_IRQ
    space = build_config_space(dev)
    assert space.read(LINE, 1) == DOM0_IRQ
    assert space.read(LINE, 2) & 0xFF == DOM0_IRQ  # and through a wider access
    assert (space.read(LINE, 4) >> 8) & 0xFF == dev.read(
        TYPE0.INTERRUPT_PIN.offset, 1
    )  # the pin: the device's
    before = len(dev.writes)
    space.write(LINE, 1, 0x05)
    assert space.read(LINE, 1) == DOM0_IRQ
    assert dev.writes[before:] == [] and dev.read(LINE, 1) == firmware
    permissive = build_config_space(dev, permissive=True)
    permissive.write(LINE, 1, 0x05)
    assert permissive.read(LINE, 1) == DOM0_IRQ and dev.read(LINE, 1) == firmware


def test_a_new_route_in_dom0_shows_at_the_next_read() -> None:
    dev = SimDevice(ADDRESS, FIXTURES / "qemu" / "e1000e-8086-10d3.bin")
    space = build_config_space(dev)
    assert space.read(LINE, 1) == dev.read(LINE, 1)  # unrouted: the firmware's choice
    dev.irq = DOM0_IRQ  # dom0 enabled the device: ACPI routed its pin to GSI 23
    assert space.read(LINE, 1) == DOM0_IRQ
