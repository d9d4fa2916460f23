"""Permissive mode, global (the host's flag) and per device (the view's), with one warning per
device the first time a write is dropped for lack of it."""

from __future__ import annotations

import logging

import pytest

from pciback.generated.names import COMMON_HEADER, TYPE0, TYPE1
from pciback.policy import build_config_space
from pciback.sim import SimHost
from pciback.sim.device import SimDevice
from pciback.sim.fixtures import fixture

from .builders import ADDRESS, ConfigBuilder, endpoint

COMMAND = COMMON_HEADER.COMMAND
POINTER = TYPE0.CAPABILITIES_POINTER


def device_with_vendor_cap() -> tuple[ConfigBuilder, int]:
    b = endpoint()
    b.pm()
    vendor = b.vendor_cap(bytes(10))
    return b, vendor


def test_undescribed_bytes_are_dropped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    b, vendor = device_with_vendor_cap()
    space, dev = b.space()
    with caplog.at_level(logging.WARNING, logger="pciback.engine"):
        space.write(vendor + 4, 4, 0x11223344)
        space.write(vendor + 8, 4, 0x55667788)
        space.write(0x48 + 0x40, 4, 0x1)  # a gap past the last capability
    assert dev.writes == []
    assert len(space.warnings) == 1 and "permissive" in space.warnings[0]
    assert ADDRESS in space.warnings[0]
    assert len([r for r in caplog.records if "permissive" in r.getMessage()]) == 1


def test_a_permissive_device_takes_undescribed_writes() -> None:
    b, vendor = device_with_vendor_cap()
    space, dev = b.space(permissive=True)
    space.write(vendor + 4, 4, 0x11223344)
    space.write(vendor + 9, 1, 0x5A)
    assert dev.writes == [(vendor + 4, 4, 0x11223344), (vendor + 9, 1, 0x5A)]
    assert space.warnings == []


def test_permissive_is_per_device() -> None:
    b, vendor = device_with_vendor_cap()
    strict_dev, loose_dev = b.sim("0000:03:00.0"), b.sim("0000:03:00.1")
    strict = build_config_space(strict_dev)
    loose = build_config_space(loose_dev, permissive=True)
    for space in (strict, loose):
        space.write(vendor + 4, 4, 0xCAFE)
        space.write(  # special cycles: a permissive-only command bit
            COMMAND.offset,
            COMMAND.width,
            COMMAND.MEMORY_SPACE.mask | COMMAND.BUS_MASTER.mask | COMMAND.SPECIAL_CYCLES.mask,
        )
    assert strict_dev.writes == []
    assert (vendor + 4, 4, 0xCAFE) in loose_dev.writes
    assert loose_dev.read(COMMAND.offset, COMMAND.width) & COMMAND.SPECIAL_CYCLES.mask
    assert len(strict.warnings) == 1 and loose.warnings == []


def test_permissive_never_opens_what_the_policy_keeps() -> None:
    b = endpoint()
    pm = b.pm()
    space, dev = b.space(permissive=True)
    space.write(COMMON_HEADER.VENDOR_ID.offset, 4, 0)  # IDs
    space.write(POINTER.offset, POINTER.width, 0x80)  # the capability pointer
    space.write(pm, 2, 0)  # a chain link
    space.write(COMMON_HEADER.REVISION_ID.offset, 4, 0)  # class and revision
    assert dev.writes == []


def test_the_global_flag_reaches_every_guest_view() -> None:
    b, vendor = device_with_vendor_cap()
    for permissive, expected in ((False, 0), (True, 0x1234)):
        with SimHost(permissive=permissive) as host:
            host.add_device(ADDRESS, b.build(), bar_sizes=b.bar_sizes)
            guest = host.attach(1, [ADDRESS])
            guest.conf_write(ADDRESS, vendor + 4, 2, 0x1234)
            assert host.physical(ADDRESS).read(vendor + 4, 2) == expected


@pytest.mark.parametrize("bridge", [False, True])
def test_the_reserved_header_bytes_stay_closed_in_permissive_mode(bridge: bool) -> None:
    # 0x35-0x3B (0x35-0x37 on a bridge, whose ROM sits at 0x38): reserved by the
    # specification; Linux leaves them undescribed, so its permissive mode writes them. They
    # read 0, as every reserved field here (rsvdp), whatever the device holds.
    b = ConfigBuilder(header_type=1) if bridge else endpoint()
    start = TYPE0.RESERVED_35.offset
    stop = TYPE1.ROM.offset if bridge else TYPE0.INTERRUPT_LINE.offset
    b.cfg[start:stop] = bytes(range(1, stop - start + 1))
    space, dev = b.space(permissive=True)
    for offset in range(start, stop):
        space.write(offset, 1, 0xA5)
    assert dev.writes == []
    assert [space.read(offset, 1) for offset in range(start, stop)] == [0] * (stop - start)


def test_the_reserved_header_bytes_of_a_real_dump_stay_closed() -> None:
    try:
        dump = fixture("qemu/e1000e-8086-10d3.bin")
    except FileNotFoundError:
        pytest.skip("../shared/fixtures/qemu is absent")
    device = SimDevice(ADDRESS, dump)
    space = build_config_space(device, permissive=True)
    device.writes.clear()  # building the view may turn PME off: not the guest's
    # the pointer and the reserved bytes after it, then the last reserved dword
    pointer, reserved = POINTER.offset, TYPE0.RESERVED_38.offset
    before = device.read(pointer, 4), device.read(reserved, 4)
    pointer_now = space.read(pointer, POINTER.width)  # the pointer is read-only anyway
    space.write(pointer, 4, 0xFFFFFF00 | pointer_now)
    space.write(reserved, 4, 0xFFFFFFFF)
    assert (device.read(pointer, 4), device.read(reserved, 4)) == before
    assert device.writes == []
