"""A hostile guest writing all ones, then all zeros, at every offset and width of a device with
every described capability: afterwards every host-owned register of the device is as it was."""

from __future__ import annotations

import pytest

from pciback.engine import ConfigSpace
from pciback.errors import PciOpError
from pciback.sim.device import SimDevice

from .builders import EXT_DSN, ConfigBuilder, chain, endpoint, ext_chain


def sweep(space: ConfigSpace) -> int:
    refused = 0
    for value in (0xFFFFFFFF, 0):
        for size in (4, 2, 1):
            for off in range(0, space.size, size):
                try:
                    space.write(off, size, value & ((1 << 8 * size) - 1))
                except PciOpError:
                    refused += 1
    return refused


def rich() -> tuple[ConfigSpace, SimDevice, dict[str, int]]:
    b = endpoint(size=4096, command=0x0406)
    at = {
        "pm": b.pm(),
        "msi": b.msi(addr64=True, masking=True),
        "msix": b.msix(),
        "pcie": b.pcie(),
        "vpd": b.vpd(),
        "aer": b.aer(),
        "dsn": b.ext_cap(EXT_DSN, bytes(range(8))),
    }
    b.poke(at["msi"] + 4, 4, 0xFEE00000)
    b.poke(at["msi"] + 0x0C, 2, 0x4041)
    b.poke(at["msi"] + 0x10, 4, 0x1)
    b.poke(at["aer"] + 4, 4, 0x00100000)  # an unsupported request the host has yet to handle
    space, dev = b.space()
    return space, dev, at


@pytest.mark.parametrize("permissive", [False, True])
def test_the_host_keeps_what_is_the_hosts(permissive: bool) -> None:
    space, dev, at = rich()
    space.settings.permissive = permissive
    before = bytes(dev.config)
    std, ext = chain(space), ext_chain(space)
    refused = sweep(space)
    after = bytes(dev.config)

    def same(offset: int, size: int, mask: int = -1) -> bool:
        old = int.from_bytes(before[offset : offset + size], "little")
        new = int.from_bytes(after[offset : offset + size], "little")
        return old & mask == new & mask

    assert same(0x00, 4) and same(0x08, 4) and same(0x2C, 4)  # identity
    assert same(0x10, 0x18) and same(0x30, 4)  # BARs and ROM never moved
    assert same(0x04, 2, 0x0003)  # decode stays on for the host
    assert same(0x34, 1) and chain(space) == std and ext_chain(space) == ext
    pm, msi, msix, pcie, aer = at["pm"], at["msi"], at["msix"], at["pcie"], at["aer"]
    assert same(pm + 2, 2) and same(pm + 4, 2, 0x0100)  # PMC, PME enable
    assert dev.power_state in (0, 1, 2, 3)
    assert same(msi + 2, 2) and same(msi + 4, 0x14)  # MSI control and the whole message
    assert same(msix + 2, 10)  # MSI-X control, table and PBA
    assert same(pcie + 2, 6)  # capabilities and device capabilities
    # device control: max read request is the guest's; relaxed ordering, extended tag, aux
    # power and no snoop too in permissive mode; MPS, error enables, phantom, FLR never
    assert same(pcie + 8, 2, 0x82EF if permissive else 0x8FEF)
    assert same(pcie + 0x0C, 0x18)  # link, slot and root registers
    assert same(pcie + 0x24, 4) and same(pcie + 0x28, 2, 0xECA0 if permissive else 0xFFFF)
    assert same(pcie + 0x2C, 0x10)  # link 2, slot 2
    assert same(at["vpd"] + 4, 4)  # VPD data
    assert same(aer, 0x2C)  # AER, its unhandled error included
    assert same(at["dsn"], 4)  # extended header
    assert refused > 0  # MSI, MSI-X and VPD said no, and the op said why


@pytest.mark.parametrize("permissive", [False, True])
def test_a_bridge_keeps_its_routing(permissive: bool) -> None:
    b = ConfigBuilder(header_type=1, class_code=0x060400, command=0x0407)
    b.bar(0, 0xFE100000, size=0x1000)
    b.poke(0x18, 4, 0x00050403)
    b.poke(0x1C, 4, 0xF800E0D0)  # I/O window; secondary status with errors latched
    b.poke(0x20, 0x10, 0x0000_0000_FFF0_0001_FE20_FE10)
    b.poke(0x3E, 2, 0x0003)
    b.pm()
    b.pcie(port_type=4)
    space, dev = b.space(permissive=permissive)
    before = bytes(dev.config)
    sweep(space)
    after = bytes(dev.config)
    assert after[0x18:0x34] == before[0x18:0x34]  # buses, windows, secondary status
    assert after[0x10:0x18] == before[0x10:0x18] and after[0x38:0x3C] == before[0x38:0x3C]
    assert after[0x3E:0x40] == before[0x3E:0x40]  # bridge control: no secondary bus reset
