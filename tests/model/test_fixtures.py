"""Every real dump of ../shared/fixtures through the policy: what a guest reads, and that a
guest writing all ones and all zeros everywhere changes only what the policy lets it change."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.engine.chain import CAP_NEXT, STD_TTL
from pciback.errors import PciOpError
from pciback.generated.names import COMMON_HEADER, MSI, MSIX, TYPE0
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

from .builders import ADDRESS, chain, ext_chain, fixture_files, guest_bytes

FIXTURES = fixture_files()
pytestmark = pytest.mark.skipif(not FIXTURES, reason="../shared/fixtures is absent")
IDS = [p.name for p in FIXTURES]

H = COMMON_HEADER
STATUS, COMMAND, POINTER = H.STATUS, H.COMMAND, TYPE0.CAPABILITIES_POINTER
# Registers a guest can never change on the device (the same in the type-0 and type-1 header).
INVARIANT = [
    (H.VENDOR_ID.offset, 4),  # and the device ID
    (H.REVISION_ID.offset, 4),  # and the class
    (H.CACHE_LINE_SIZE.offset, 1),
    (H.LATENCY_TIMER.offset, 1),
    (H.HEADER_TYPE.offset, 1),
    (POINTER.offset, 1),
    (TYPE0.INTERRUPT_LINE.offset, 2),  # and the pin
]
BARS = slice(TYPE0.BAR0.offset, TYPE0.CARDBUS_CIS.offset)
ROM = slice(TYPE0.ROM.offset, TYPE0.ROM.offset + TYPE0.ROM.width)


def physical_chain(dev: SimDevice) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    if not dev.read(STATUS.offset, STATUS.width) & STATUS.CAPABILITIES_LIST.mask:
        return out
    pos = dev.read(POINTER.offset, POINTER.width) & ~3
    while pos and len(out) < STD_TTL:
        out.append((pos, dev.read(pos, 1)))
        pos = dev.read(pos + CAP_NEXT, 1) & ~3
    return out


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_the_guest_sees_the_device(path: Path) -> None:
    dev = SimDevice(ADDRESS, path)
    space = build_config_space(dev)
    assert not space.problems
    assert chain(space) == physical_chain(dev)
    seen = guest_bytes(space)
    header = slice(H.VENDOR_ID.offset, TYPE0.BAR0.offset)  # IDs, command, status, class, ...
    subsystem = slice(TYPE0.SUBSYSTEM_VENDOR_ID.offset, TYPE0.ROM.offset)
    assert seen[header] == bytes(dev.config[header])
    assert seen[subsystem] == bytes(dev.config[subsystem])
    for off, ident in chain(space):
        assert space.read(off, 1) == ident
    assert dev.writes == []  # reading has no side effect


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_hiding_each_capability_of_the_device(path: Path) -> None:
    dev = SimDevice(ADDRESS, path)
    for ident in sorted({i for _, i in physical_chain(dev)}):
        space = build_config_space(dev, hide=[ident])
        assert chain(space) == [c for c in physical_chain(dev) if c[1] != ident]
        for off, _ in (c for c in physical_chain(dev) if c[1] == ident):
            assert space.read(off, 4) == 0
    if dev.config_size > 0x100:
        everything = [i for _, i in ext_chain(build_config_space(dev))]
        assert ext_chain(build_config_space(dev, hide_extended=everything)) == []


@pytest.mark.parametrize("permissive", [False, True])
@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_a_hostile_sweep_leaves_the_host_in_charge(path: Path, permissive: bool) -> None:
    dev = SimDevice(ADDRESS, path)
    space = build_config_space(dev, permissive=permissive)
    before = bytes(dev.config)
    caps = physical_chain(dev)
    refused = 0
    for value in (0xFFFFFFFF, 0):
        for off in range(0, space.size, 4):
            try:
                space.write(off, 4, value)
            except PciOpError:
                refused += 1
    after = bytes(dev.config)
    for off, size in INVARIANT:
        assert after[off : off + size] == before[off : off + size], hex(off)
    assert after[BARS] == before[BARS]  # BARs never moved
    assert after[ROM] == before[ROM]  # nor the ROM
    assert physical_chain(dev) == caps
    for off, ident in caps:
        if ident == MSIX.id:  # MSI-X enable and mask-all only through the op
            high = off + MSIX.CONTROL.offset + 1
            bits = (MSIX.CONTROL.ENABLE.mask | MSIX.CONTROL.FUNCTION_MASK.mask) >> 8
            assert after[high] & bits == before[high] & bits
    decode = COMMAND.IO_SPACE.mask | COMMAND.MEMORY_SPACE.mask
    # decode stays on for the host
    assert dev.read(COMMAND.offset, COMMAND.width) & decode == before[COMMAND.offset] & decode
    assert refused >= sum(1 for _, i in caps if i in (MSI.id, MSIX.id))
