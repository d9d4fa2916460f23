"""VPD: reads pass through, a write that would start a VPD write is refused."""

from __future__ import annotations

import pytest

from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import VPD

from .builders import CapView, endpoint

ADDR, DATA = VPD.ADDRESS.offset, VPD.DATA.offset
FLAG = VPD.ADDRESS.FLAG.mask


def vpd_device(permissive: bool = False) -> CapView:
    b = endpoint()
    b.pm()
    pos = b.vpd()
    space, dev = b.space(permissive=permissive)
    return space, dev, pos


def test_starting_a_vpd_read_reaches_the_device() -> None:
    space, dev, pos = vpd_device()
    space.write(pos + ADDR, 2, 0x0040)
    assert dev.writes == [(pos + ADDR, 2, 0x0040)]


def test_a_completed_read_shows_the_flag_and_the_data() -> None:
    space, dev, pos = vpd_device()
    dev.config[pos + ADDR : pos + 8] = bytes([0x40, 0x80, 0x82, 0x10, 0x00, 0x41])
    assert space.read(pos + ADDR, 2) == 0x8040
    assert space.read(pos + DATA, 4) == 0x41001082


@pytest.mark.parametrize("permissive", [False, True])
def test_setting_the_flag_is_refused_and_writes_nothing(permissive: bool) -> None:
    space, dev, pos = vpd_device(permissive)
    with pytest.raises(PciOpError) as info:
        space.write(pos + ADDR, 2, FLAG | 0x0040)
    assert info.value.err is XenPciError.ACCESS_DENIED
    with pytest.raises(PciOpError):
        space.write(pos + (VPD.ADDRESS.offset + 1), 1, 0x80)  # the flag's byte alone
    assert dev.writes == []


def test_a_low_byte_write_does_not_trip_over_a_flag_left_set() -> None:
    space, dev, pos = vpd_device()
    dev.config[pos + (VPD.ADDRESS.offset + 1)] = 0x80  # the device finished a read
    space.write(pos + ADDR, 1, 0x10)
    assert dev.writes == [(pos + ADDR, 1, 0x10)]


@pytest.mark.parametrize("permissive", [False, True])
def test_data_writes_never_reach_the_device(permissive: bool) -> None:
    space, dev, pos = vpd_device(permissive)
    space.write(pos + DATA, 4, 0xDEADBEEF)
    assert dev.writes == []
