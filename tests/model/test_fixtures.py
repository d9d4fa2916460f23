"""Every real dump of ../shared/fixtures through the policy: what a guest reads, and that a
guest writing all ones and all zeros everywhere changes only what the policy lets it change."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.errors import PciOpError
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

from .builders import ADDRESS, chain, ext_chain, fixture_files, guest_bytes

FIXTURES = fixture_files()
pytestmark = pytest.mark.skipif(not FIXTURES, reason="../shared/fixtures is absent")
IDS = [p.name for p in FIXTURES]

# Registers a guest can never change on the device (offsets of the type-0/1 header).
INVARIANT = [(0x00, 4), (0x08, 4), (0x0C, 1), (0x0D, 1), (0x0E, 1), (0x34, 1), (0x3C, 2)]


def physical_chain(dev: SimDevice) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    if not dev.read(0x06, 2) & 0x10:
        return out
    pos = dev.read(0x34, 1) & ~3
    while pos and len(out) < 48:
        out.append((pos, dev.read(pos, 1)))
        pos = dev.read(pos + 1, 1) & ~3
    return out


@pytest.mark.parametrize("path", FIXTURES, ids=IDS)
def test_the_guest_sees_the_device(path: Path) -> None:
    dev = SimDevice(ADDRESS, path)
    space = build_config_space(dev)
    assert not space.problems
    assert chain(space) == physical_chain(dev)
    seen = guest_bytes(space)
    assert seen[:0x10] == bytes(dev.config[:0x10])  # IDs, command, status, class
    assert seen[0x2C:0x30] == bytes(dev.config[0x2C:0x30])
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
    assert after[0x10:0x28] == before[0x10:0x28]  # BARs never moved
    assert after[0x30:0x34] == before[0x30:0x34]  # nor the ROM
    assert physical_chain(dev) == caps
    for off, ident in caps:
        if ident == 0x11:  # MSI-X enable and mask-all only through the op
            assert after[off + 3] & 0xC0 == before[off + 3] & 0xC0
    assert dev.read(0x04, 2) & 0x3 == before[0x04] & 0x3  # decode stays on for the host
    assert refused >= sum(1 for _, i in caps if i in (0x05, 0x11))
