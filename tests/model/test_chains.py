"""Broken capability lists from a device: the walk ends, what was sane is kept, the problem is
reported, and the chain the guest walks through the view is finite and acyclic."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from pciback.engine import ConfigSpace
from pciback.engine.chain import CAP_NEXT
from pciback.errors import PciOpError
from pciback.generated.names import COMMON_HEADER, TYPE0

from .builders import (
    CAP_MSI,
    CAP_PCIE,
    CAP_PM,
    EXT_AER,
    EXT_DSN,
    ConfigBuilder,
    chain,
    endpoint,
    ext_chain,
    guest_bytes,
    view_of,
)

STATUS, POINTER = COMMON_HEADER.STATUS, TYPE0.CAPABILITIES_POINTER
CAPABILITIES_LIST = STATUS.CAPABILITIES_LIST.mask


def assert_sane(space: ConfigSpace) -> None:
    walked = chain(space)
    offsets = [o for o, _ in walked]
    assert len(offsets) == len(set(offsets)) <= 48
    assert space.read(offsets[-1] + CAP_NEXT, 1) == 0 if offsets else True
    ext = [o for o, _ in ext_chain(space)]
    assert len(ext) == len(set(ext))
    assert len(guest_bytes(space)) == space.size  # every offset answers


Patch = Callable[[bytearray, int, int, int], object]  # config, PM, MSI, vendor offsets


def std_three() -> tuple[ConfigBuilder, int, int, int]:
    b = endpoint()
    return b, b.pm(), b.msi(), b.cap(0x09, b"\x05\x00\x00")


@pytest.mark.parametrize(
    ("patch", "kept", "problem"),
    [
        (lambda c, a, b_, v: c.__setitem__(v + CAP_NEXT, a), 3, "loops back"),  # last -> first
        (lambda c, a, b_, v: c.__setitem__(b_ + CAP_NEXT, b_), 2, "loops back"),  # self loop
        (
            lambda c, a, b_, v: c.__setitem__(b_ + CAP_NEXT, a | 3),
            2,
            "loops back",
        ),  # low bits ignored
        (lambda c, a, b_, v: c.__setitem__(a + CAP_NEXT, 0x10), 1, "outside"),  # into the header
        (lambda c, a, b_, v: c.__setitem__(b_, 0xFF), 1, "all ones"),  # function gone
    ],
)
def test_broken_standard_lists(patch: Patch, kept: int, problem: str) -> None:
    b, pm, msi, vendor = std_three()
    cfg = bytearray(b.build())
    patch(cfg, pm, msi, vendor)
    space, dev = view_of(bytes(cfg), bar_sizes=b.bar_sizes)
    assert len(space.exposed) == kept
    assert any(problem in p for p in space.problems)
    assert_sane(space)
    assert space.read(POINTER.offset, POINTER.width) == pm
    assert dev.writes == []


def test_a_pointer_into_the_header_gives_no_capabilities() -> None:
    b, *_ = std_three()
    cfg = bytearray(b.build())
    cfg[POINTER.offset] = 0x20
    space, _ = view_of(bytes(cfg), bar_sizes=b.bar_sizes)
    assert space.exposed == () and chain(space) == []
    assert not space.read(STATUS.offset, STATUS.width) & CAPABILITIES_LIST


def test_the_longest_possible_list_is_walked_whole() -> None:
    b = endpoint()
    for _ in range(48):
        b.cap(0x0A, b"\x00\x00")  # a 4-byte capability in every dword of 0x40..0xff
    space, _ = b.space()
    assert len(space.exposed) == 48 and not space.problems
    assert_sane(space)
    assert len(chain(space)) == 48


def test_overlapping_capabilities_do_not_take_each_others_registers() -> None:
    b = endpoint()
    b.pcie()  # 0x40..0x7b
    pm = b.cap(CAP_PM, bytes(6), at=0x50)  # inside the PCIe capability
    space, dev = b.space()
    assert [i for _, i in chain(space)] == [CAP_PCIE, CAP_PM]
    assert any("overlaps" in p for p in space.problems)
    space.write(pm, 2, 0xFFFF)  # PM's ID and next: the chain is the backend's
    assert dev.writes == []
    assert_sane(space)


def ext_three() -> tuple[ConfigBuilder, int, int, int]:
    b = endpoint(size=4096)
    b.pcie()
    return b, b.aer(), b.ext_cap(EXT_DSN, bytes(8)), b.ext_cap(0x0018, bytes(4))


def set_next(cfg: bytearray, pos: int, nxt: int) -> None:
    header = int.from_bytes(cfg[pos : pos + 4], "little") & 0xFFFFF
    cfg[pos : pos + 4] = (header | nxt << 20).to_bytes(4, "little")


@pytest.mark.parametrize(
    ("target", "kept", "problem"),
    [("first", 3, "loops back"), ("self", 2, "loops back"), (0x40, 1, "outside")],
)
def test_broken_extended_lists(target: object, kept: int, problem: str) -> None:
    b, aer, dsn, ltr = ext_three()
    cfg = bytearray(b.build())
    if target == "first":
        set_next(cfg, ltr, aer)
    elif target == "self":
        set_next(cfg, dsn, dsn)
    else:
        assert isinstance(target, int)
        set_next(cfg, aer, target)
    space, dev = view_of(bytes(cfg), bar_sizes=b.bar_sizes)
    assert len(space.exposed_extended) == kept
    assert any(problem in p for p in space.problems)
    assert_sane(space)
    assert ext_chain(space)[0] == (aer, EXT_AER)
    assert dev.writes == []


def test_an_all_ones_extended_header_ends_the_list() -> None:
    b, _, dsn, _ = ext_three()
    cfg = bytearray(b.build())
    cfg[dsn : dsn + 4] = b"\xff\xff\xff\xff"
    space, _ = view_of(bytes(cfg), bar_sizes=b.bar_sizes)
    assert [i for _, i in ext_chain(space)] == [EXT_AER]
    assert_sane(space)


def test_hiding_inside_a_cycle_still_gives_a_finite_chain() -> None:
    b, pm, _, vendor = std_three()
    cfg = bytearray(b.build())
    cfg[vendor + 1] = pm
    space, _ = view_of(bytes(cfg), bar_sizes=b.bar_sizes, hide=[CAP_MSI])
    assert chain(space) == [(pm, CAP_PM), (vendor, 0x09)]
    assert_sane(space)


@pytest.mark.parametrize(
    ("ident", "body"),
    [
        (0x11, b"\x07\x00"),  # MSI-X: table and PBA registers would lie past 0xff
        (0x05, b"\x80\x01"),  # MSI, 64-bit with masking: 24 bytes from 0xfc
        (0x10, b"\x02\x00"),  # PCIe v2: 0x3c bytes
        (0x01, b"\x03\x00"),  # PM
    ],
)
def test_a_capability_at_the_very_end_of_config_space(ident: int, body: bytes) -> None:
    b = endpoint()
    b.pm()
    pos = b.cap(ident, body, at=0xFC)
    space, dev = b.space()
    assert pos in [o for o, _ in chain(space)] or any(str(hex(pos)) in p for p in space.problems)
    assert_sane(space)
    for off in range(0xF0, 0x100, 2):
        with contextlib.suppress(PciOpError):  # MSI's enable says no; nothing may crash
            space.write(off, 2, 0xFFFF)
    assert all(w[0] + w[1] <= 0x100 for w in dev.writes)
