"""BIST (0x0F) on a real dump, with the bits where the PCI specification and Linux's pci_regs.h
put them: 0x80 BIST-capable (read-only), 0x40 start BIST, 3:0 the completion code. No dump of
../shared/fixtures has a BIST-capable function, so the capable bit is patched in."""

from __future__ import annotations

import pytest

from pciback.generated.names import COMMON_HEADER
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

from .builders import ADDRESS, FIXTURES

DUMP = FIXTURES / "qemu" / "e1000e-8086-10d3.bin"
pytestmark = pytest.mark.skipif(not DUMP.is_file(), reason=f"{DUMP} is absent")
BIST = COMMON_HEADER.BIST.offset
CAPABLE = COMMON_HEADER.BIST.CAPABLE.mask
START = COMMON_HEADER.BIST.START.mask


def device(bist: int) -> SimDevice:
    config = bytearray(DUMP.read_bytes())
    assert config[BIST] == 0  # QEMU's e1000e has no BIST: the byte is this test's to set
    config[BIST] = bist
    return SimDevice(ADDRESS, bytes(config))


@pytest.mark.parametrize("value", [START, START | CAPABLE, 0xFF])
def test_a_start_reaches_a_bist_capable_function(value: int) -> None:
    dev = device(CAPABLE)
    space = build_config_space(dev)
    assert space.read(BIST, 1) == CAPABLE
    space.write(BIST, 1, value)
    assert dev.writes == [(BIST, 1, CAPABLE | START)]  # start set, capable kept, rest 0
    assert dev.read(BIST, 1) & START


def test_a_start_in_a_dword_write_reaches_the_device_alone() -> None:
    dev = device(CAPABLE)
    space = build_config_space(dev)
    dword = COMMON_HEADER.CACHE_LINE_SIZE.offset  # to BIST, its top byte
    before = space.read(dword, 4)
    space.write(dword, 4, (before & 0x00FFFFFF) | START << 24)
    assert (BIST, 1, CAPABLE | START) in dev.writes
    header_type = COMMON_HEADER.HEADER_TYPE.offset
    assert dev.read(header_type, 1) == dev.initial[header_type]  # the header type is untouched


@pytest.mark.parametrize("value", [START, START | CAPABLE, CAPABLE, 0xFF])
def test_nothing_reaches_a_function_without_bist(value: int) -> None:
    dev = device(0x00)
    space = build_config_space(dev)
    space.write(BIST, 1, value)
    assert dev.writes == [] and dev.read(BIST, 1) == 0
    assert space.read(BIST, 1) == 0


@pytest.mark.parametrize("permissive", [False, True])
def test_the_capable_bit_is_never_writable(permissive: bool) -> None:
    dev = device(CAPABLE)
    space = build_config_space(dev, permissive=permissive)
    space.write(BIST, 1, 0x00)  # nothing started: dropped, as Linux drops it
    assert dev.read(BIST, 1) == CAPABLE and dev.writes == []
    bare = device(0x00)
    build_config_space(bare, permissive=permissive).write(BIST, 1, CAPABLE)
    assert bare.read(BIST, 1) == 0


def test_the_completion_code_reads_from_the_device() -> None:
    dev = device(CAPABLE | 0x05)  # a finished test that failed with code 5
    space = build_config_space(dev)
    assert space.read(BIST, 1) == CAPABLE | 0x05
    space.write(BIST, 1, 0x0F)
    assert dev.read(BIST, 1) & 0x0F == 0x05  # not writable
