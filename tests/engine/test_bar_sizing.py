"""BAR sizing through the real type-0 policy, on the real fixtures (and fixtures with BARs
re-typed, since the dumps only hold 64-bit memory BARs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.policy import build_config_space
from pciback.sim.device import SimDevice
from tests.engine.support import FIXTURES

VIRTIO = sorted(FIXTURES.glob("virtio-*.bin"))
pytestmark = pytest.mark.skipif(not VIRTIO, reason="no fixtures in ../shared/fixtures")


def size_of(view_read: int, flags_mask: int) -> int:
    return (~(view_read & ~flags_mask) & 0xFFFFFFFF) + 1


def retyped(path: Path) -> SimDevice:
    """A fixture with an I/O BAR, a 32-bit prefetchable BAR and an expansion ROM added."""
    config = bytearray(path.read_bytes())
    config[0x18:0x1C] = (0x0000C001).to_bytes(4, "little")  # BAR2: I/O at 0xc000
    config[0x1C:0x20] = (0xFE000008).to_bytes(4, "little")  # BAR3: 32-bit prefetchable
    config[0x30:0x34] = (0xFEB00000).to_bytes(4, "little")  # ROM, disabled
    return SimDevice("0000:00:04.0", bytes(config), bar_sizes={2: 0x20, 3: 0x10000, 6: 0x40000})


@pytest.mark.parametrize("path", VIRTIO, ids=[p.stem for p in VIRTIO])
def test_64bit_bar_sizes_both_halves(path: Path) -> None:
    dev = SimDevice("0000:00:03.0", path)
    view = build_config_space(dev)
    lower, upper = view.read(0x10, 4), view.read(0x14, 4)
    view.write(0x10, 4, 0xFFFFFFFF)
    view.write(0x14, 4, 0xFFFFFFFF)
    size = dev.bars()[0].size
    assert view.read(0x10, 4) == (~(size - 1) & 0xFFFFFFF0) | (lower & 0xF)
    assert view.read(0x14, 4) == (~(size - 1) >> 32) & 0xFFFFFFFF
    assert lower & 0x6 == 0x4  # 64-bit memory type survives sizing
    # writing the original address back ends the sizing
    view.write(0x10, 4, lower)
    view.write(0x14, 4, upper)
    assert (view.read(0x10, 4), view.read(0x14, 4)) == (lower, upper)
    assert not [w for w in dev.writes if 0x10 <= w[0] < 0x28]  # the real BAR never written


def test_io_32bit_and_rom_bars() -> None:
    dev = retyped(VIRTIO[0])
    view = build_config_space(dev)
    for offset, value in ((0x18, 0xFFFFFFFF), (0x1C, 0xFFFFFFFF), (0x30, 0xFFFFF800)):
        view.write(offset, 4, value)
    assert view.read(0x18, 4) == 0xFFFFFFE1  # 32 bytes of I/O, I/O flag kept
    assert view.read(0x1C, 4) == 0xFFFF0008  # 64 KiB, prefetchable flag kept
    assert view.read(0x30, 4) == 0xFFFC0000  # 256 KiB ROM, enable bit not part of the answer
    assert size_of(view.read(0x18, 4), 0x3) == 0x20
    assert size_of(view.read(0x1C, 4), 0xF) == 0x10000
    assert size_of(view.read(0x30, 4), 0x7FF) == 0x40000
    assert dev.writes == []


def test_linux_rom_sizing_value_also_sizes() -> None:
    view = build_config_space(retyped(VIRTIO[0]))
    view.write(0x30, 4, 0xFFFFFFFE)  # ~PCI_ROM_ADDRESS_ENABLE, what Linux guests write
    assert view.read(0x30, 4) == 0xFFFC0000


def test_unimplemented_bar_sizes_to_zero() -> None:
    dev = SimDevice("0000:00:03.0", VIRTIO[0])
    view = build_config_space(dev)
    view.write(0x24, 4, 0xFFFFFFFF)
    assert view.read(0x24, 4) == 0
    host_bridge = FIXTURES / "intel-0d57-host-bridge.bin"
    if host_bridge.exists():
        bridge_view = build_config_space(SimDevice("0000:00:00.0", host_bridge))
        for offset in range(0x10, 0x28, 4):
            bridge_view.write(offset, 4, 0xFFFFFFFF)
            assert bridge_view.read(offset, 4) == 0


def test_guest_cannot_move_a_bar_but_may_restore_it() -> None:
    dev = SimDevice("0000:00:03.0", FIXTURES / "virtio-net-1af4-1041.bin", bar_sizes={0: 0x4000})
    view = build_config_space(dev)
    original = view.read(0x10, 4)
    view.write(0x10, 4, 0x80000004)  # an address of the guest's choosing
    assert view.read(0x10, 4) == original
    assert dev.writes == []
    dev.config[0x10:0x14] = (0xF0000004).to_bytes(4, "little")  # the BAR lost its value
    view.write(0x10, 4, original)
    assert dev.writes == [(0x10, 4, original)]
    assert dev.read(0x10, 4) == original


def test_sizing_with_byte_writes_is_not_sizing() -> None:
    dev = SimDevice("0000:00:03.0", VIRTIO[0])
    view = build_config_space(dev)
    original = view.read(0x10, 4)
    view.write(0x13, 1, 0xFF)  # only the top byte: the address bits are not all ones
    assert view.read(0x10, 4) == original


@pytest.mark.parametrize(
    ("offset", "value", "sizes"),
    [
        (0x10, 0xFFFFFFF0, True),  # 64-bit memory BAR, lower half: the flag bits do not matter
        (0x10, 0xFFFFFFE0, False),  # an address bit clear
        (0x14, 0xFFFFFFFE, False),  # upper half: every bit is an address bit
        (0x18, 0xFFFFFFFC, True),  # I/O: bits 31:2
        (0x18, 0xFFFFFFF8, False),
        (0x1C, 0xFFFFFFF0, True),  # 32-bit memory
        (0x30, 0xFFFFF800, True),  # ROM: bits 31:11, enable bit ignored
        (0x30, 0xFFFFF000, False),
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
