"""BAR sizing through the real type-0 policy, on the real fixtures (and fixtures with BARs
re-typed, since the dumps only hold 64-bit memory BARs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.generated.names import TYPE0
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice
from tests.engine.support import FIXTURES

VIRTIO = sorted(FIXTURES.glob("virtio-*.bin"))
pytestmark = pytest.mark.skipif(not VIRTIO, reason="no fixtures in ../shared/fixtures")
BAR0, BAR1, BAR2, BAR3 = TYPE0.BAR0.offset, TYPE0.BAR1.offset, TYPE0.BAR2.offset, TYPE0.BAR3.offset
BAR5, ROM = TYPE0.BAR5.offset, TYPE0.ROM.offset
BAR_END = TYPE0.CARDBUS_CIS.offset  # the six BARs end where the CardBus CIS pointer starts


def size_of(view_read: int, flags_mask: int) -> int:
    return (~(view_read & ~flags_mask) & 0xFFFFFFFF) + 1


def retyped(path: Path) -> SimDevice:
    """A fixture with an I/O BAR, a 32-bit prefetchable BAR and an expansion ROM added."""
    config = bytearray(path.read_bytes())
    config[BAR2 : BAR2 + 4] = (0x0000C001).to_bytes(4, "little")  # BAR2: I/O at 0xc000
    config[BAR3 : BAR3 + 4] = (0xFE000008).to_bytes(4, "little")  # BAR3: 32-bit prefetchable
    config[ROM : ROM + 4] = (0xFEB00000).to_bytes(4, "little")  # ROM, disabled
    return SimDevice("0000:00:04.0", bytes(config), bar_sizes={2: 0x20, 3: 0x10000, 6: 0x40000})


@pytest.mark.parametrize("path", VIRTIO, ids=[p.stem for p in VIRTIO])
def test_64bit_bar_sizes_both_halves(path: Path) -> None:
    dev = SimDevice("0000:00:03.0", path)
    view = build_config_space(dev)
    lower, upper = view.read(BAR0, 4), view.read(BAR1, 4)
    view.write(BAR0, 4, 0xFFFFFFFF)
    view.write(BAR1, 4, 0xFFFFFFFF)
    size = dev.bars()[0].size
    assert view.read(BAR0, 4) == (~(size - 1) & 0xFFFFFFF0) | (lower & 0xF)
    assert view.read(BAR1, 4) == (~(size - 1) >> 32) & 0xFFFFFFFF
    assert lower & 0x6 == 0x4  # 64-bit memory type survives sizing
    # writing the original address back ends the sizing
    view.write(BAR0, 4, lower)
    view.write(BAR1, 4, upper)
    assert (view.read(BAR0, 4), view.read(BAR1, 4)) == (lower, upper)
    assert not [w for w in dev.writes if BAR0 <= w[0] < BAR_END]  # the real BAR never written


def test_io_32bit_and_rom_bars() -> None:
    dev = retyped(VIRTIO[0])
    view = build_config_space(dev)
    for offset, value in ((BAR2, 0xFFFFFFFF), (BAR3, 0xFFFFFFFF), (ROM, 0xFFFFF800)):
        view.write(offset, 4, value)
    assert view.read(BAR2, 4) == 0xFFFFFFE1  # 32 bytes of I/O, I/O flag kept
    assert view.read(BAR3, 4) == 0xFFFF0008  # 64 KiB, prefetchable flag kept
    assert view.read(ROM, 4) == 0xFFFC0000  # 256 KiB ROM, enable bit not part of the answer
    assert size_of(view.read(BAR2, 4), 0x3) == 0x20
    assert size_of(view.read(BAR3, 4), 0xF) == 0x10000
    assert size_of(view.read(ROM, 4), 0x7FF) == 0x40000
    assert dev.writes == []


def test_linux_rom_sizing_value_also_sizes() -> None:
    view = build_config_space(retyped(VIRTIO[0]))
    view.write(ROM, 4, 0xFFFFFFFE)  # ~PCI_ROM_ADDRESS_ENABLE, what Linux guests write
    assert view.read(ROM, 4) == 0xFFFC0000


def test_unimplemented_bar_sizes_to_zero() -> None:
    dev = SimDevice("0000:00:03.0", VIRTIO[0])
    view = build_config_space(dev)
    view.write(BAR5, 4, 0xFFFFFFFF)
    assert view.read(BAR5, 4) == 0
    host_bridge = FIXTURES / "intel-0d57-host-bridge.bin"
    if host_bridge.exists():
        bridge_view = build_config_space(SimDevice("0000:00:00.0", host_bridge))
        for offset in range(BAR0, BAR_END, 4):
            bridge_view.write(offset, 4, 0xFFFFFFFF)
            assert bridge_view.read(offset, 4) == 0


def test_guest_cannot_move_a_bar_but_may_restore_it() -> None:
    dev = SimDevice("0000:00:03.0", FIXTURES / "virtio-net-1af4-1041.bin", bar_sizes={0: 0x4000})
    view = build_config_space(dev)
    original = view.read(BAR0, 4)
    view.write(BAR0, 4, 0x80000004)  # an address of the guest's choosing
    assert view.read(BAR0, 4) == original
    assert dev.writes == []
    dev.config[BAR0 : BAR0 + 4] = (0xF0000004).to_bytes(4, "little")  # the BAR lost its value
    view.write(BAR0, 4, original)
    assert dev.writes == [(BAR0, 4, original)]
    assert dev.read(BAR0, 4) == original


def test_sizing_with_byte_writes_is_not_sizing() -> None:
    dev = SimDevice("0000:00:03.0", VIRTIO[0])
    view = build_config_space(dev)
    original = view.read(BAR0, 4)
    view.write(
        TYPE0.BAR0.offset + 3, 1, 0xFF
    )  # only the top byte: the address bits are not all ones
    assert view.read(BAR0, 4) == original


@pytest.mark.parametrize(
    ("offset", "value", "sizes"),
    [
        (BAR0, 0xFFFFFFF0, True),  # 64-bit memory BAR, lower half: the flag bits do not matter
        (BAR0, 0xFFFFFFE0, False),  # an address bit clear
        (BAR1, 0xFFFFFFFE, False),  # upper half: every bit is an address bit
        (BAR2, 0xFFFFFFFC, True),  # I/O: bits 31:2
        (BAR2, 0xFFFFFFF8, False),
        (BAR3, 0xFFFFFFF0, True),  # 32-bit memory
        (ROM, 0xFFFFF800, True),  # ROM: bits 31:11, enable bit ignored
        (ROM, 0xFFFFF000, False),
    ],
)
def test_sizing_takes_any_value_with_every_address_bit_set(
    offset: int, value: int, sizes: bool
) -> None:
    # Current Linux's rule (bar_write / rom_write): the value with the BAR's flag bits forced
    # to 1 must be all ones.
    dev = retyped(VIRTIO[0])
    view = build_config_space(dev)
    original = view.read(offset, 4)
    view.write(offset, 4, value)
    assert (view.read(offset, 4) != original) is sizes
    assert dev.writes == []
