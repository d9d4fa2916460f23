"""Everything that walks a device's capability lists walks them with the engine's bounded walk:
the simulated device's read-only links, the simulated guest's scan and the sysfs device's
capability lookup see the lists the engine sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.engine.chain import EXT_LINK, EXT_START, STD_LINK, walk
from pciback.generated.names import MSI, PM
from pciback.xen.sysfs import SysfsDevice

from .builders import endpoint


def test_the_sim_devices_read_only_links_are_the_walked_ones() -> None:
    b = endpoint(size=4096)
    b.pm()
    b.msi()
    b.pcie()
    b.aer()
    dev = b.sim()
    chains = walk(dev.read, dev.config_size)
    assert chains.standard and chains.extended and not chains.problems
    links = {c.offset + i for c in chains.standard for i in range(STD_LINK)}
    links |= {c.offset + i for c in chains.extended for i in range(EXT_LINK)}
    links |= set(range(EXT_START, EXT_START + EXT_LINK))  # the extended list's root
    for cap in (*chains.standard, *chains.extended):
        width = EXT_LINK if cap.extended else STD_LINK
        for at in range(cap.offset, cap.offset + width + 2):
            before = dev.read(at, 1)
            dev.write(at, 1, before ^ 0xFF)
            assert (dev.read(at, 1) == before) is (at in links), hex(at)


def test_a_looping_list_ends_the_sysfs_lookup(tmp_path: Path) -> None:
    b = endpoint()
    pm = b.pm()
    b.poke(pm + 1, 1, pm)  # PM's next pointer names PM again
    (tmp_path / "config").write_bytes(b.build())
    dev = SysfsDevice(tmp_path, "0000:03:00.0")
    try:
        assert dev.capability(PM.id) == pm
        with pytest.raises(ValueError):
            dev.capability(MSI.id)
    finally:
        dev.close()
