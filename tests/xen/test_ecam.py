"""Config reads through a function's ECAM page (pciback.xen.ecam), on a fake sysfs tree and a
file standing in for /dev/mem: the page must read what sysfs reads before it serves, and a
function whose page is missing, refused or wrong stays on sysfs, saying why."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from pciback.daemon.config import ConfigError, parse_config
from pciback.generated.names import COMMON_HEADER, ECAM, TYPE0
from pciback.ports.bus import config_access_fits
from pciback.sim.fixtures import fixture
from pciback.xen.ecam import EcamMap, EcamRegion, parse_iomem
from pciback.xen.sysfs import SysfsBus

DUMP = fixture("virtio-net-1af4-1041.bin").read_bytes()
FIRST, SECOND = "0000:03:00.0", "0000:03:01.0"
SPACE = len(DUMP)  # this function's: 256 bytes
FUNCTION_PAGE = 4096  # every function's page, whatever its space
# The specification's layout of an ECAM address, typed here apart from dsl/layout.pci.
BUS_SHIFT, DEVICE_SHIFT, FUNCTION_SHIFT = 20, 15, 12
REGION_START = 0x4000_0000  # a region for buses 02-03: bus 02's first page lies here
IOMEM = f"""\
00000000-00000fff : Reserved
  {REGION_START:08x}-{REGION_START + (2 << BUS_SHIFT) - 1:08x} : PCI MMCONFIG 0000 [bus 02-03]
    {REGION_START:08x}-{REGION_START + 0xFFF:08x} : Reserved
fe000000-fe03ffff : 0000:03:00.0
"""


def page(bus: int, device: int, function: int = 0) -> int:
    first_bus = 2
    return (
        REGION_START
        + ((bus - first_bus) << BUS_SHIFT)
        + (device << DEVICE_SHIFT)
        + (function << FUNCTION_SHIFT)
    )


def sibling(config: bytes) -> bytes:
    """The same function with its BAR0 elsewhere: the lab's two e1000e."""
    data = bytearray(config)
    at = TYPE0.BAR0.offset
    data[at : at + 4] = (int.from_bytes(data[at : at + 4], "little") ^ 0x0100_0000).to_bytes(
        4, "little"
    )
    return bytes(data)


def tree(root: Path, configs: dict[str, bytes]) -> None:
    for address, config in configs.items():
        directory = root / "devices" / address
        directory.mkdir(parents=True)
        (directory / "config").write_bytes(config)


def memory(path: Path, pages: dict[int, bytes]) -> Path:
    """A sparse file whose bytes at each physical address are a page's."""
    with open(path, "wb") as f:
        for at, data in pages.items():
            f.seek(at)
            f.write(data.ljust(FUNCTION_PAGE, b"\0"))
    return path


def bus_with(tmp_path: Path, pages: dict[int, bytes], iomem: str = IOMEM) -> SysfsBus:
    tree(tmp_path / "sys", {FIRST: DUMP, SECOND: sibling(DUMP)})
    mem = memory(tmp_path / "mem", pages)
    return SysfsBus(tmp_path / "sys", ecam=EcamMap(parse_iomem(iomem), mem))


def test_iomem_regions_with_their_addresses_only() -> None:
    text = (
        IOMEM
        + "  00000000-0fffffff : PCI MMCONFIG 0001 [bus 00-ff]\n"  # as a reader without the right
        + "  e0000000-e00fffff : PCI MMCONFIG 0002 [bus 00-01]\n"  # one bus's span for two
        + "  e0000000-e01fffff : PCI MMCONFIG 0003 [bus 00-01]\n"
    )
    assert parse_iomem(text) == (
        EcamRegion(0, 2, 3, REGION_START),
        EcamRegion(3, 0, 1, 0xE000_0000),
    )
    ecam = EcamMap(parse_iomem(text))
    assert ecam.page_of("0000:03:01.2") == page(3, 1, 2)
    assert ecam.page_of("0003:01:1f.7") == (
        0xE000_0000 + (1 << BUS_SHIFT) + (0x1F << DEVICE_SHIFT) + (7 << FUNCTION_SHIFT)
    )
    for outside in ("0000:04:00.0", "0000:01:00.0", "0001:00:00.0", "0002:00:00.0", "junk"):
        assert ecam.page_of(outside) is None


def test_the_layout_agrees_with_the_specification() -> None:
    address = ECAM.ADDRESS
    assert address.BUS.shift == BUS_SHIFT
    assert address.DEVICE.shift == DEVICE_SHIFT
    assert address.FUNCTION.shift == FUNCTION_SHIFT
    assert address.REGISTER_OFFSET.mask + 1 == FUNCTION_PAGE


def test_reads_come_from_the_page_once_it_reads_as_sysfs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = bus_with(tmp_path, {page(3, 0): DUMP, page(3, 1): sibling(DUMP)})
    with caplog.at_level(logging.INFO, logger="pciback.xen.sysfs"):
        first, second = bus.device(FIRST), bus.device(SECOND)
    assert (first.reads_by, second.reads_by) == ("ecam", "ecam")
    assert f"{FIRST}: config reads by its ECAM page" in caplog.text
    for size in (1, 2, 4):
        for offset in range(0, SPACE, size):
            expected = int.from_bytes(DUMP[offset : offset + size], "little")
            assert first.read(offset, size) == expected
    # The page, not sysfs, answers: a byte changed in the page alone is what is read.
    at = COMMON_HEADER.CACHE_LINE_SIZE.offset
    with open(tmp_path / "mem", "r+b") as f:
        f.seek(page(3, 0) + at)
        f.write(bytes([DUMP[at] ^ 0xFF]))
    assert first.read(at, 1) == DUMP[at] ^ 0xFF
    assert (tmp_path / "sys" / "devices" / FIRST / "config").read_bytes() == DUMP
    # Bounds stay the device's: an access past its space or unaligned is refused, not loaded.
    for offset, size in ((SPACE, 4), (SPACE - 2, 4), (1, 2), (-1, 1), (0, 3)):
        assert not config_access_fits(offset, size, SPACE)
        with pytest.raises(ValueError, match="bad config access"):
            first.read(offset, size)
    first.close()
    assert first.reads_by == "sysfs"
    assert first.read(at, 1) == DUMP[at]


@pytest.mark.parametrize(
    ("pages", "iomem", "why"),
    [
        pytest.param(
            {page(3, 0): sibling(DUMP), page(3, 1): DUMP},
            IOMEM,
            f"reads 0x[0-9a-f]{{8}} at {TYPE0.BAR0.offset:#04x} where sysfs reads",
            id="a-sibling's-page",
        ),
        pytest.param(
            {page(3, 1): sibling(DUMP)},
            IOMEM,
            f"reads 0x00000000 at {COMMON_HEADER.VENDOR_ID.offset:#04x} where sysfs reads",
            id="no-function-there",
        ),
        pytest.param(
            {page(3, 0): DUMP},
            IOMEM.replace("[bus 02-03]", "[bus 02-02]").replace(
                f"{REGION_START + (2 << BUS_SHIFT) - 1:08x}",
                f"{REGION_START + (1 << BUS_SHIFT) - 1:08x}",
            ),
            f"no MMCONFIG region covers {FIRST}",
            id="bus-outside-every-region",
        ),
        pytest.param({page(3, 0): DUMP}, "", "no MMCONFIG region listed", id="no-region"),
    ],
)
def test_a_page_that_does_not_read_as_sysfs_leaves_reads_on_sysfs(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    pages: dict[int, bytes],
    iomem: str,
    why: str,
) -> None:
    bus = bus_with(tmp_path, pages, iomem)
    with caplog.at_level(logging.INFO, logger="pciback.xen.sysfs"):
        device = bus.device(FIRST)
    assert device.reads_by == "sysfs"
    assert f"{FIRST}: config reads by sysfs:" in caplog.text
    assert re.search(why, caplog.text), caplog.text
    assert device.read(COMMON_HEADER.VENDOR_ID.offset, 4) == int.from_bytes(DUMP[:4], "little")


def test_a_function_nobody_answers_for_is_not_mapped(tmp_path: Path) -> None:
    """All ones in sysfs and in the page: equal, yet no function to serve."""
    nothing = b"\xff" * SPACE
    tree(tmp_path / "sys", {FIRST: nothing})
    mem = memory(tmp_path / "mem", {page(3, 0): nothing})
    device = SysfsBus(tmp_path / "sys", ecam=EcamMap(parse_iomem(IOMEM), mem)).device(FIRST)
    assert device.reads_by == "sysfs"


def test_a_memory_device_that_refuses_leaves_reads_on_sysfs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tree(tmp_path / "sys", {FIRST: DUMP})
    missing = tmp_path / "no-mem"
    bus = SysfsBus(tmp_path / "sys", ecam=EcamMap(parse_iomem(IOMEM), missing))
    with caplog.at_level(logging.INFO, logger="pciback.xen.sysfs"):
        device = bus.device(FIRST)
    assert device.reads_by == "sysfs"
    assert f"config reads by sysfs: {missing}: No such file or directory" in caplog.text
    assert device.read(COMMON_HEADER.VENDOR_ID.offset, 4) == int.from_bytes(DUMP[:4], "little")


def test_without_a_map_every_read_is_sysfs(tmp_path: Path) -> None:
    tree(tmp_path / "sys", {FIRST: DUMP})
    memory(tmp_path / "mem", {page(3, 0): DUMP})
    assert SysfsBus(tmp_path / "sys").device(FIRST).reads_by == "sysfs"


def test_the_configuration_chooses_the_way() -> None:
    assert parse_config({}).config_reads == "ecam"
    assert parse_config({"config_reads": "sysfs"}).config_reads == "sysfs"
    with pytest.raises(ConfigError, match="config_reads = 'sysf': expected one of ecam, sysfs"):
        parse_config({"config_reads": "sysf"})


def test_the_system_regions_come_from_iomem(tmp_path: Path) -> None:
    listed = tmp_path / "iomem"
    listed.write_text(IOMEM)
    assert EcamMap.from_system(listed, tmp_path / "mem").regions == (
        EcamRegion(0, 2, 3, REGION_START),
    )
    unreadable = EcamMap.from_system(tmp_path / "none", tmp_path / "mem")
    assert unreadable.regions == ()
    assert unreadable.describe() == "no MMCONFIG region listed with its address in /proc/iomem"
