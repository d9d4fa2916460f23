"""The MSI/MSI-X control bits have one writer: a guest's config write that interrupt control
lets through is handed to the view's interrupt owner (InterruptControl), and reaches nothing
on a view that has none."""

from __future__ import annotations

import pytest

from pciback.errors import PciOpError
from pciback.generated.names import MSI, MSIX
from pciback.protocol.interrupts import InterruptControl
from pciback.sim.hypervisor import SimHypervisor

from .builders import endpoint

MSI_CONTROL, MSIX_CONTROL = MSI.CONTROL, MSIX.CONTROL


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, bool]] = []

    def write_control_bit(self, control: int, bit: int, on: bool) -> None:
        self.calls.append((control, bit, on))


def test_an_allowed_enable_write_goes_to_the_owner_not_to_the_device() -> None:
    b = endpoint(command=0x0406)
    pos = b.msi()
    space, dev = b.space()
    space.settings.interrupt_control = True
    owner = space.interrupts = Recorder()
    control = pos + MSI_CONTROL.offset
    space.write(control, 2, dev.read(control, 2) | MSI_CONTROL.ENABLE.mask)
    assert owner.calls == [(control, MSI_CONTROL.ENABLE.mask, True)]
    assert dev.writes == []


def test_without_an_owner_no_enable_write_reaches_the_device() -> None:
    b = endpoint(command=0x0406)
    pos = b.msix()
    space, dev = b.space()
    space.settings.interrupt_control = True
    with pytest.raises(PciOpError):
        space.write(pos + MSIX_CONTROL.offset, 2, MSIX_CONTROL.ENABLE.mask)
    assert dev.writes == []


def test_the_owner_writes_only_control_bits() -> None:
    b = endpoint(command=0x0406)
    pos = b.msi()
    space, dev = b.space()
    irq = InterruptControl(1, dev, SimHypervisor(), space)
    control = pos + MSI_CONTROL.offset
    with pytest.raises(ValueError):
        irq.write_control_bit(control, MSI_CONTROL.MULTIPLE_MESSAGE_ENABLE.mask, True)
    irq.write_control_bit(control, MSI_CONTROL.ENABLE.mask, True)
    assert dev.read(control, 2) & MSI_CONTROL.ENABLE.mask
    irq.write_control_bit(control, MSI_CONTROL.ENABLE.mask, False)
    assert not dev.read(control, 2) & MSI_CONTROL.ENABLE.mask
