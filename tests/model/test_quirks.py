"""Quirks: device-specific policy files matched by IDs, and fields an operator adds at run time
with the kernel's quirks syntax."""

from __future__ import annotations

import pytest

from pciback.control.hide import parse_quirk
from pciback.control.quirks import quirk_register
from pciback.engine import ConfigSpace
from pciback.engine.registers import RegisterInstance
from pciback.generated.names import BE2NET, PCIE, PM
from pciback.sim import SimHost
from pciback.sim.device import SimDevice

from .builders import ADDRESS, CAP_PCIE, CAP_PM, ConfigBuilder, endpoint

CTRL = BE2NET.MEMBAR_INT_CTRL
HOSTINTR = CTRL.HOST_INTR.mask


def be2net(device: int) -> ConfigBuilder:
    b = endpoint(vendor=0x19A2, device=device)
    b.pm()
    b.poke(CTRL.offset, CTRL.width, 0x1000_0005)
    return b


@pytest.mark.parametrize("device", [0x0211, 0x0221])
def test_be2net_host_interrupt_bit_reaches_the_device(device: int) -> None:
    space, dev = be2net(device).space()
    slot = space.slot_at(CTRL.offset)
    assert isinstance(slot, RegisterInstance) and slot.block.startswith("be2net")
    space.write(CTRL.offset, CTRL.width, 0xFFFF_FFFF)
    assert dev.read(CTRL.offset, CTRL.width) == 0x1000_0005 | HOSTINTR
    space.write(CTRL.offset, CTRL.width, 0)
    assert dev.read(CTRL.offset, CTRL.width) == 0x1000_0005
    assert space.warnings == []


def test_another_device_of_the_vendor_gets_no_quirk() -> None:
    space, dev = be2net(0x0700).space()
    space.write(CTRL.offset, CTRL.width, HOSTINTR)
    assert dev.writes == [] and space.warnings  # the default: dropped, with the hint


def test_the_quirk_holds_through_the_guest_protocol() -> None:
    b = be2net(0x0211)
    with SimHost() as host:
        host.add_device(ADDRESS, b.build(), bar_sizes=b.bar_sizes)
        guest = host.attach(1, [ADDRESS])
        # the driver's byte write of HOSTINTR, in the register's top byte
        guest.conf_write(ADDRESS, CTRL.offset + 3, 1, HOSTINTR >> 24)
        assert host.physical(ADDRESS).read(CTRL.offset, CTRL.width) & HOSTINTR


def runtime(text: str, hide: tuple[int, ...] = ()) -> tuple[ConfigSpace, SimDevice, int, int, int]:
    b = endpoint()
    pm = b.pm()
    pcie = b.pcie()
    vendor = b.vendor_cap(bytes(10))
    spec = parse_quirk(text.format(pm=pm, pcie=pcie, vendor=vendor))
    space, dev = b.space(extra_registers=[quirk_register(spec)], hide=hide)
    return space, dev, pm, pcie, vendor


def test_a_runtime_quirk_passes_its_mask_through() -> None:
    space, dev, *_, vendor = runtime(f"03:00.0-{0x48 + 0x3C + 4:x}:4:0000ffff")
    off = 0x48 + 0x3C + 4
    assert off == vendor + 4
    space.write(off, 4, 0xAABBCCDD)
    assert dev.read(off, 4) == 0x0000CCDD
    assert space.read(off, 4) == 0x0000CCDD


def test_a_runtime_quirk_replaces_a_described_register() -> None:
    pcie = 0x48  # where the builder places it, behind PM
    devctl = pcie + PCIE.DEVCTL.offset
    space, dev, *_ = runtime(f"0000:03:00.0-{devctl:x}:2:00e0")  # max payload size
    before = dev.read(devctl, PCIE.DEVCTL.width)
    space.write(devctl, PCIE.DEVCTL.width, before | 0x00A0)
    assert dev.read(devctl, PCIE.DEVCTL.width) == before | 0x00A0
    assert space.read(pcie, 1) == CAP_PCIE


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("03:00.0-40:2:ffff", "chain"),  # PM's ID and next pointer
        ("03:00.0-4:1:ff", "part of command"),  # half of the command register
    ],
)
def test_a_runtime_quirk_cannot_undo_the_chain_or_split_a_register(text: str, why: str) -> None:
    space, dev, pm, *_ = runtime(text)
    assert any(why in p for p in space.problems)
    offset = int(text.split("-")[1].split(":")[0], 16)
    slot = space.slot_at(offset)
    assert not (isinstance(slot, RegisterInstance) and slot.block == "runtime-quirk")
    space.write(offset, 1, 0xFF)
    assert dev.read(pm, 2) == 0x4801  # PM's ID and next pointer, untouched


def test_a_runtime_quirk_cannot_reach_into_a_hidden_capability() -> None:
    space, dev, pm, *_ = runtime("03:00.0-44:2:ffff", hide=(CAP_PM,))
    assert any("hidden" in p for p in space.problems)
    pmcsr = pm + PM.PMCSR.offset
    space.write(pmcsr, PM.PMCSR.width, 0xFFFF)
    assert dev.writes == [] and space.read(pmcsr, PM.PMCSR.width) == 0


def test_a_runtime_quirk_outside_the_device_is_ignored() -> None:
    space, *_ = runtime("03:00.0-ffc:4:ffffffff")  # a 256-byte function
    assert any("does not fit" in p for p in space.problems)


def test_a_runtime_quirk_never_echoes_the_write_one_to_clear_bits_it_replaces() -> None:
    # The operator lets the guest acknowledge "unsupported request detected" (device status
    # bit 3) only; the other error bits stay the host's, and a 1 read back from them must not
    # be written back and so clear them.
    pcie = 0x48  # where the builder places it, behind PM
    devsta = pcie + PCIE.DEVSTA.offset
    space, dev, *_ = runtime(f"0000:03:00.0-{devsta:x}:2:0008")
    dev.config[devsta] = 0x0F  # correctable, non-fatal, fatal, UR detected
    space.write(devsta, PCIE.DEVSTA.width, 0x0008)
    assert dev.writes == [(devsta, 1, 0x08)]  # the byte holding the bit, the 1 only
