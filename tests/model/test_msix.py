"""MSI-X: the control bits, the table and PBA registers, and their BIR checked at seize."""

from __future__ import annotations

from typing import Any

import pytest

from pciback.engine.chain import CAP_NEXT
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import MSI, MSIX
from pciback.sim import SimHost

from .builders import (
    ADDRESS,
    CAP_MSIX,
    CapView,
    ConfigBuilder,
    allow_interrupt_control,
    chain,
    endpoint,
)

CONTROL, TABLE, PBA = MSIX.CONTROL.offset, MSIX.TABLE.offset, MSIX.PBA.offset
ENABLE, MASK_ALL = MSIX.CONTROL.ENABLE.mask, MSIX.CONTROL.FUNCTION_MASK.mask


def msix_device(
    command: int = 0x0406,
    entries: int = 8,
    table: tuple[int, int] = (0, 0x2000),
    pba: tuple[int, int] = (0, 0x3000),
) -> CapView:
    b = endpoint(command=command)
    b.pm()
    pos = b.msix(entries=entries, table=table, pba=pba)
    space, dev = b.space()
    return space, dev, pos


def test_control_table_and_pba_read_as_the_device_has_them() -> None:
    space, _, pos = msix_device(entries=8, table=(0, 0x2000), pba=(0, 0x3000))
    assert space.read(pos + CONTROL, 2) == 7
    assert space.read(pos + TABLE, 4) == 0x2000
    assert space.read(pos + PBA, 4) == 0x3000
    assert (pos, CAP_MSIX) in chain(space)


def test_table_and_pba_are_read_once_at_seize() -> None:
    space, dev, pos = msix_device()
    dev.config[pos + TABLE] = 0x05  # a device changing its mind after validation
    assert space.read(pos + TABLE, 4) == 0x2000
    space.write(pos + TABLE, 4, 0xFFFFFFFF)
    space.write(pos + PBA, 4, 0xFFFFFFFF)
    assert dev.writes == []


@pytest.mark.parametrize("bit", [ENABLE, MASK_ALL])
def test_enable_and_mask_all_are_refused_without_interrupt_control(bit: int) -> None:
    space, dev, pos = msix_device()
    with pytest.raises(PciOpError) as info:
        space.write(pos + CONTROL, 2, dev.read(pos + CONTROL, 2) | bit)
    assert info.value.err is XenPciError.ACCESS_DENIED
    assert dev.writes == []


def test_table_size_and_reserved_bits_ignore_writes() -> None:
    space, dev, pos = msix_device()
    space.write(pos + CONTROL, 2, 0x3FFF & ~MASK_ALL)
    assert dev.writes == [] and space.read(pos + CONTROL, 2) == 7


def test_with_interrupt_control_enable_and_mask_all_reach_the_device() -> None:
    space, dev, pos = msix_device()
    allow_interrupt_control(space)
    space.write(pos + CONTROL, 2, ENABLE | MASK_ALL)
    assert dev.read(pos + CONTROL, 2) & (ENABLE | MASK_ALL) == ENABLE | MASK_ALL
    space.write(pos + CONTROL, 2, ENABLE)
    assert dev.read(pos + CONTROL, 2) & (ENABLE | MASK_ALL) == ENABLE


def test_with_interrupt_control_msix_is_refused_while_msi_is_on() -> None:
    b = endpoint(command=0x0406)
    msi = b.msi()
    pos = b.msix()
    space, dev = b.space()
    allow_interrupt_control(space)
    dev.enable_msi(1)
    with pytest.raises(PciOpError):
        space.write(pos + CONTROL, 2, ENABLE)
    assert not dev.read(pos + CONTROL, 2) & ENABLE
    assert dev.read(msi + MSI.CONTROL.offset, MSI.CONTROL.width) & MSI.CONTROL.ENABLE.mask
    space.write(pos + CONTROL, 2, MASK_ALL)  # masking is no second interrupt type
    assert dev.read(pos + CONTROL, 2) & MASK_ALL


def bad_layout(**kw: Any) -> ConfigBuilder:
    b = ConfigBuilder()
    b.bar(0, 0xFE000000, size=0x4000)
    b.bar(1, 0x0000E001, size=0x20)  # I/O
    b.bar(2, 0xF000000C, size=0x100000)  # 64-bit prefetchable, BAR3 its upper half
    b.pm()
    b.msix(**kw)
    return b


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"table": (5, 0x0)}, "BIR 5"),  # no BAR5
        ({"table": (1, 0x0)}, "BIR 1"),  # an I/O BAR
        ({"table": (3, 0x0)}, "BIR 3"),  # the upper half of a 64-bit BAR
        ({"table": (6, 0x0)}, "BIR 6"),  # reserved BIR
        ({"pba": (7, 0x0)}, "BIR 7"),
        ({"table": (0, 0x3FF8)}, "does not fit"),  # runs past the end of a 16 KiB BAR
        ({"entries": 2048, "table": (0, 0x0)}, "does not fit"),  # 32 KiB of table
        ({"pba": (0, 0x4000)}, "does not fit"),
    ],
)
def test_a_layout_outside_the_bars_hides_the_capability(kw: dict[str, Any], why: str) -> None:
    b = bad_layout(**kw)
    space, dev = b.space()
    assert [c for _, c in chain(space)] == [0x01]
    assert space.capability_offset(CAP_MSIX) is None
    assert any("MSI-X" in p and why in p for p in space.problems)
    pos = 0x48
    assert space.read(pos, 4) == 0 and space.read(pos + TABLE, 4) == 0
    space.write(pos + CONTROL, 2, ENABLE)
    assert dev.writes == []


def test_a_table_in_a_64_bit_bar_is_accepted() -> None:
    b = bad_layout(table=(2, 0x80000), pba=(2, 0x90000))
    space, _ = b.space()
    assert space.capability_offset(CAP_MSIX) == 0x48 and not space.problems


def test_the_op_cannot_enable_msix_on_a_hidden_layout() -> None:
    with SimHost() as host:
        b = bad_layout(table=(5, 0))
        host.add_device(ADDRESS, b.build(), bar_sizes=b.bar_sizes)
        guest = host.attach(1, [ADDRESS])
        with pytest.raises(PciOpError) as info:
            guest.enable_msix(ADDRESS, [0])
        assert info.value.err is XenPciError.OP_FAILED
        assert host.physical(ADDRESS).msix_entries is None
        pm = 0x40  # the builder's first capability
        assert guest.conf_read(ADDRESS, pm + CAP_NEXT, 1) == 0  # PM is now the last capability


def test_a_capability_running_into_extended_space_is_hidden() -> None:
    # MSI-X at 0xf8 would have its PBA register at 0x100, the first extended header.
    b = endpoint(size=4096)
    b.cfg[0x06] |= 0x10
    b.poke(0x34, 1, 0xF8)
    b.poke(0xF8, 4, (7 << 16) | CAP_MSIX)  # 8 entries
    b.poke(0xFC, 4, 0x2000)  # table in BAR0
    b.poke(0x100, 4, 0x3000)  # read as a PBA in BAR0: a plausible layout
    space, _ = b.space()
    assert space.capability_offset(CAP_MSIX) is None
    assert any("MSI-X" in p for p in space.problems)
