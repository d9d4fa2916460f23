"""The bridge header: routing registers the host's, BARs and ROM mediated, the common registers
as on an endpoint."""

from __future__ import annotations

import pytest

from pciback.generated.names import COMMON_HEADER, TYPE1

from .builders import ConfigBuilder, View

BRIDGE_CONTROL = TYPE1.BRIDGE_CONTROL.offset
SECONDARY_BUS_RESET = TYPE1.BRIDGE_CONTROL.SECONDARY_BUS_RESET.mask
STATUS, SECONDARY_STATUS = COMMON_HEADER.STATUS, TYPE1.SECONDARY_STATUS
BAR0, ROM = TYPE1.BAR0, TYPE1.ROM


def bridge(permissive: bool = False) -> View:
    b = ConfigBuilder(header_type=1, class_code=0x060400, command=0x0007)
    b.bar(0, 0xFE100000, size=0x1000)
    b.poke(TYPE1.PRIMARY_BUS.offset, 4, 0x00050403)  # primary 3, secondary 4, subordinate 5
    b.poke(TYPE1.IO_BASE.offset, 2, 0xE0D0)  # I/O window
    b.poke(TYPE1.MEMORY_BASE.offset, 4, 0xFE20FE10)  # memory window
    b.poke(ROM.offset, ROM.width, 0xFE300000)  # the bridge's ROM lives at 0x38
    b.pm()
    space, dev = b.space(permissive=permissive)
    return space, dev


def test_the_bridge_header_has_its_own_table() -> None:
    space, _ = bridge()
    assert not space.problems
    assert {i.block for i in space.registers if i.offset < 0x40} == {"type1"}


@pytest.mark.parametrize("permissive", [False, True])
@pytest.mark.parametrize(
    ("offset", "size"),
    [(0x18, 4), (0x1C, 2), (0x20, 4), (0x24, 4), (0x28, 4), (0x2C, 4), (0x30, 4)],
)
def test_bus_numbers_and_windows_never_take_a_guest_write(
    offset: int, size: int, permissive: bool
) -> None:
    space, dev = bridge(permissive)
    before = dev.read(offset, size)
    space.write(offset, size, 0)
    space.write(offset, size, (1 << 8 * size) - 1)
    assert dev.writes == [] and space.read(offset, size) == before


@pytest.mark.parametrize("permissive", [False, True])
def test_secondary_bus_reset_is_never_forwarded(permissive: bool) -> None:
    space, dev = bridge(permissive)
    space.write(BRIDGE_CONTROL, 2, SECONDARY_BUS_RESET | 0x0003)
    assert dev.writes == []


def test_bar0_sizes_and_never_moves() -> None:
    space, dev = bridge()
    at, width = BAR0.offset, BAR0.width
    space.write(at, width, 0xFFFFFFFF)
    assert space.read(at, width) == 0xFFFFF000
    space.write(at, width, 0x12345000)
    assert space.read(at, width) == 0xFE100000
    assert dev.read(at, width) == 0xFE100000 and dev.writes == []


def test_the_rom_at_0x38_is_mediated() -> None:
    space, dev = bridge()
    assert space.read(ROM.offset, ROM.width) == 0xFE300000
    space.write(ROM.offset, ROM.width, 0xABCDE001)
    assert dev.read(ROM.offset, ROM.width) == 0xFE300000 and dev.writes == []


def test_secondary_status_is_read_only_and_primary_status_rw1c() -> None:
    space, dev = bridge()
    secondary_high, primary_high = SECONDARY_STATUS.offset + 1, STATUS.offset + 1
    dev.config[secondary_high] = 0xF8  # errors on the secondary side
    dev.config[primary_high] = 0x01  # master data parity error on the primary side
    space.write(SECONDARY_STATUS.offset, SECONDARY_STATUS.width, 0xFFFF)
    assert all(off not in (SECONDARY_STATUS.offset, secondary_high) for off, _, _ in dev.writes)
    space.write(STATUS.offset, STATUS.width, STATUS.MASTER_DATA_PARITY_ERROR.mask)
    assert dev.config[primary_high] == 0x00  # acknowledged on the device
    assert dev.config[secondary_high] == 0xF8


def test_capability_list_on_a_bridge_goes_through_the_view() -> None:
    space, _ = bridge()
    pointer = TYPE1.CAPABILITIES_POINTER
    assert space.read(pointer.offset, pointer.width) == 0x40  # the builder's first capability
    assert space.read(STATUS.offset, STATUS.width) & STATUS.CAPABILITIES_LIST.mask
