"""Config reads through a function's ECAM page (pciback.xen.ecam), on a fake sysfs tree and a
file standing in for /dev/mem: the page must read what sysfs reads before it serves, each read
is one load of its width from a read-only mapping, and a function whose page is missing,
refused or wrong stays on sysfs, saying why."""

from __future__ import annotations

import errno
import logging
import mmap
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from pciback.daemon.config import ConfigError, parse_config
from pciback.generated.names import COMMON_HEADER, ECAM, TYPE0
from pciback.ports.bus import config_access_fits
from pciback.sim.fixtures import fixture
from pciback.xen import atomic
from pciback.xen._loader import XenUnavailable
from pciback.xen.ecam import CHECKED, EcamMap, EcamRegion, Listing, parse_iomem
from pciback.xen.sysfs import SysfsBus

try:
    atomic.library()
except XenUnavailable as exc:  # the loads are libatomic's
    pytest.skip(str(exc), allow_module_level=True)

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


def flipped(config: bytes, at: int, mask: int = 0x01) -> bytes:
    data = bytearray(config)
    data[at] ^= mask
    return bytes(data)


def sibling(config: bytes) -> bytes:
    """The same function with its BAR0 elsewhere: the lab's two e1000e."""
    return flipped(config, TYPE0.BAR0.offset + 3)


def tree(root: Path, configs: dict[str, bytes]) -> None:
    for address, config in configs.items():
        directory = root / "devices" / address
        directory.mkdir(parents=True)
        (directory / "config").write_bytes(config)
        (directory / "reset").write_text("")


def memory(path: Path, pages: dict[int, bytes]) -> Path:
    """A sparse file whose bytes at each physical address are a page's."""
    with open(path, "wb") as f:
        for at, data in pages.items():
            f.seek(at)
            f.write(data.ljust(FUNCTION_PAGE, b"\0"))
    return path


def bus_with(
    tmp_path: Path,
    pages: dict[int, bytes],
    iomem: str = IOMEM,
    configs: dict[str, bytes] | None = None,
    writable: bool = False,
) -> SysfsBus:
    tree(tmp_path / "sys", configs or {FIRST: DUMP, SECOND: sibling(DUMP)})
    mem = memory(tmp_path / "mem", pages)
    return SysfsBus(tmp_path / "sys", writable=writable, ecam=EcamMap(parse_iomem(iomem), mem))


def test_iomem_regions_with_their_addresses_only() -> None:
    text = (
        IOMEM
        + "  00000000-0fffffff : PCI MMCONFIG 0001 [bus 00-ff]\n"  # as a reader without the right
        + "  e0000000-e00fffff : PCI MMCONFIG 0002 [bus 00-01]\n"  # one bus's span for two
        + "  e0010000-e020ffff : PCI MMCONFIG 0004 [bus 00-01]\n"  # not on a bus's boundary
        + "  e0000000-e01fffff : PCI MMCONFIG 0003 [bus 00-01]\n"
    )
    listing = parse_iomem(text)
    assert listing == Listing(
        (EcamRegion(0, 2, 3, REGION_START), EcamRegion(3, 0, 1, 0xE000_0000)), hidden=1
    )
    ecam_map = EcamMap(listing)
    assert ecam_map.page_of("0000:03:01.2") == page(3, 1, 2)
    assert ecam_map.page_of("0003:01:1f.7") == (
        0xE000_0000 + (1 << BUS_SHIFT) + (0x1F << DEVICE_SHIFT) + (7 << FUNCTION_SHIFT)
    )
    for outside in ("0000:04:00.0", "0000:01:00.0", "0001:00:00.0", "0002:00:00.0", "junk"):
        assert ecam_map.page_of(outside) is None
    hidden = EcamMap(parse_iomem("  00000000-0fffffff : PCI MMCONFIG 0000 [bus 00-ff]\n"))
    assert hidden.describe() == "/proc/iomem lists 1 MMCONFIG region(s) at address 0 (not root?)"


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
    assert f"{FIRST}: config reads by its ECAM page ({page(3, 0):#x})" in caplog.text
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


def test_a_whole_extended_space_reads_from_the_page(tmp_path: Path) -> None:
    extended = DUMP + bytes((i * 7 + 3) & 0xFF for i in range(SPACE, FUNCTION_PAGE))
    bus = bus_with(tmp_path, {page(3, 0): extended}, configs={FIRST: extended})
    device = bus.device(FIRST)
    assert (device.reads_by, device.config_size) == ("ecam", FUNCTION_PAGE)
    for size in (1, 2, 4):
        for offset in range(SPACE, FUNCTION_PAGE, size):
            expected = int.from_bytes(extended[offset : offset + size], "little")
            assert device.read(offset, size) == expected, (offset, size)


def test_each_access_is_one_load_of_its_width(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through libatomic's __atomic_load_N, once per read, never a copy through a buffer."""
    bus = bus_with(tmp_path, {page(3, 0): DUMP})
    device = bus.device(FIRST)
    window = device._window
    assert window is not None
    calls: list[int] = []

    def counted(size: int, load: Any) -> Any:
        def counting(pointer: Any, model: int) -> int:
            calls.append(size)
            return int(load(pointer, model))

        return counting

    for size, load in list(window._loads.items()):
        monkeypatch.setitem(window._loads, size, counted(size, load))
    for size in (1, 2, 4):
        device.read(size * 4, size)
    assert calls == [1, 2, 4]


def test_the_page_is_mapped_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real_open, real_mmap = os.open, mmap.mmap

    def opened(path: Any, flags: int, *args: Any) -> int:
        seen["flags"] = flags
        return real_open(path, flags, *args)

    def mapped(fd: int, length: int, flags: int, prot: int, **kwargs: Any) -> mmap.mmap:
        seen["prot"], seen["shared"] = prot, flags
        return real_mmap(fd, length, flags, prot, **kwargs)

    monkeypatch.setattr("pciback.xen.ecam.os.open", opened)
    monkeypatch.setattr("pciback.xen.ecam.mmap.mmap", mapped)
    device = bus_with(tmp_path, {page(3, 0): DUMP}).device(FIRST)
    assert device.reads_by == "ecam"
    assert seen["flags"] & (os.O_WRONLY | os.O_RDWR) == 0
    assert seen["prot"] == mmap.PROT_READ
    window = device._window
    assert window is not None
    with pytest.raises(TypeError):
        window._mapping[0] = 0


@pytest.mark.parametrize(
    ("pages", "iomem", "why"),
    [
        pytest.param(
            {page(3, 0): sibling(DUMP), page(3, 1): DUMP},
            IOMEM,
            f"its ECAM page it reads 0x[0-9a-f]{{8}} at {TYPE0.BAR0.offset:#04x} where sysfs reads",
            id="a-sibling's-page",
        ),
        pytest.param(
            {page(3, 1): sibling(DUMP)},
            IOMEM,
            f"it reads 0x00000000 at {COMMON_HEADER.VENDOR_ID.offset:#04x} where sysfs reads",
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


# Named here, not taken from CHECKED: dropping one there must fail its case.
MUST_AGREE = (
    COMMON_HEADER.VENDOR_ID.offset,
    COMMON_HEADER.REVISION_ID.offset,
    TYPE0.BAR0.offset,
    TYPE0.BAR1.offset,
)


def test_the_checked_dwords_are_those_named() -> None:
    assert CHECKED == MUST_AGREE


@pytest.mark.parametrize("checked", MUST_AGREE, ids=lambda at: f"{at:#04x}")
def test_each_checked_dword_must_agree(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, checked: int
) -> None:
    """One byte off in any of the checked dwords keeps the function on sysfs, with a warning:
    a listed region that reads otherwise is the platform's mistake."""
    bus = bus_with(tmp_path, {page(3, 0): flipped(DUMP, checked + 1)})
    with caplog.at_level(logging.INFO, logger="pciback.xen.sysfs"):
        device = bus.device(FIRST)
    assert device.reads_by == "sysfs"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and f"at {checked:#04x} where sysfs reads" in warned[0].getMessage()


def test_a_function_nobody_answers_for_is_not_mapped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """All ones in sysfs and in the page: equal, yet no function to serve."""
    nothing = b"\xff" * SPACE
    with caplog.at_level(logging.INFO, logger="pciback.xen.sysfs"):
        device = bus_with(tmp_path, {page(3, 0): nothing}, configs={FIRST: nothing}).device(FIRST)
    assert device.reads_by == "sysfs"
    assert "no function answers (its identity reads 0xffffffff)" in caplog.text


def test_a_memory_device_that_refuses_leaves_reads_on_sysfs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree(tmp_path / "sys", {FIRST: DUMP, SECOND: DUMP})
    missing = tmp_path / "no-mem"
    bus = SysfsBus(tmp_path / "sys", ecam=EcamMap(parse_iomem(IOMEM), missing))
    with caplog.at_level(logging.INFO, logger="pciback.xen.sysfs"):
        device = bus.device(FIRST)
    assert device.reads_by == "sysfs"
    assert f"config reads by sysfs: {missing}: No such file or directory" in caplog.text
    assert device.read(COMMON_HEADER.VENDOR_ID.offset, 4) == int.from_bytes(DUMP[:4], "little")

    def refused(*args: Any, **kwargs: Any) -> mmap.mmap:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    memory(tmp_path / "mem", {page(3, 1): DUMP})
    bus.ecam = EcamMap(parse_iomem(IOMEM), tmp_path / "mem")
    monkeypatch.setattr("pciback.xen.ecam.mmap.mmap", refused)
    with caplog.at_level(logging.INFO, logger="pciback.xen.sysfs"):
        assert bus.device(SECOND).reads_by == "sysfs"
    assert f"refuses the page at {page(3, 1):#x}: Operation not permitted" in caplog.text
    assert "iomem=relaxed" in caplog.text


def test_a_big_endian_host_does_not_map(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "byteorder", "big")
    with caplog.at_level(logging.INFO, logger="pciback.xen.sysfs"):
        device = bus_with(tmp_path, {page(3, 0): DUMP}).device(FIRST)
    assert device.reads_by == "sysfs"
    assert "the host is not little-endian" in caplog.text


def test_a_reset_sends_reads_to_sysfs_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel holds sysfs reads while it resets; the page would not."""
    device = bus_with(tmp_path, {page(3, 0): DUMP}, writable=True).device(FIRST)
    during: list[str] = []
    real = device._write_file

    def write(name: str, data: bytes, offset: int | None = None) -> None:
        during.append(device.reads_by)
        real(name, data, offset)

    monkeypatch.setattr(device, "_write_file", write)
    device.reset()
    assert (during, device.reads_by) == (["sysfs"], "ecam")
    device.close()
    device.reset()
    assert device.reads_by == "sysfs"  # a closed device does not take its page back


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
