"""The per-bit merge of backing and guest access, one access class at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.engine import ConfigSpace, Policy
from pciback.generated.names import COMMON_HEADER, TYPE0
from tests.engine.support import MemoryDevice, compile_policy

# One 16-bit register per behaviour under test, at offsets 0x10 upwards.
POLICY = """
header h type 0 {
    register ids @0x00 u16 { id [15:0] cached ro }
    register hw_rw @0x10 u16 { v [15:0] hw rw }
    register hw_ro @0x12 u16 { v [15:0] hw ro }
    register shadow_rw @0x14 u16 { v [15:0] shadow(hw) rw }
    register shadow_init @0x16 u16 { v [15:0] shadow(0x1234) rw }
    register constant @0x18 u16 { v [15:0] const(0xbeef) ro }
    register reserved @0x1a u16 {
        keep [7:0] hw rsvdp
        zero [15:8] hw rsvdz
    }
    register status @0x1c u16 {
        ctl   [7:0]  hw rw
        errs  [15:8] hw rw1c
    }
    register mixed @0x20 u32 {
        cached_part [7:0]   cached ro
        shadow_part [15:8]  shadow(0) rw
        hw_part     [23:16] hw rw
        ro_part     [31:24] hw ro  permissive rw
    }
}
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    return compile_policy(POLICY, tmp_path_factory.mktemp("merge"))


def space(policy: Policy, dev: MemoryDevice, permissive: bool = False) -> ConfigSpace:
    return ConfigSpace(dev, policy, permissive=permissive)


def test_hw_rw_reads_and_writes_the_device(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x10, 2, 0xAAAA)
    view = space(policy, dev)
    assert view.read(0x10, 2) == 0xAAAA
    view.write(0x10, 2, 0x1357)
    assert dev.writes == [(0x10, 2, 0x1357)]
    dev.poke(0x10, 2, 0x2468)  # the device changes by itself: hw is read every time
    assert view.read(0x10, 2) == 0x2468


def test_hw_ro_ignores_guest_writes(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x12, 2, 0x5555)
    view = space(policy, dev)
    view.write(0x12, 2, 0xFFFF)
    assert dev.writes == []
    assert view.read(0x12, 2) == 0x5555


def test_cached_is_read_once_at_seize(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x00, 2, 0x8086)
    view = space(policy, dev)
    dev.poke(0x00, 2, 0xDEAD)
    assert view.read(0x00, 2) == 0x8086


def test_shadow_takes_guest_writes_without_touching_the_device(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x14, 2, 0x0F0F)
    dev.poke(0x16, 2, 0xFFFF)
    view = space(policy, dev)
    assert view.read(0x14, 2) == 0x0F0F  # shadow(hw): starts from the device
    assert view.read(0x16, 2) == 0x1234  # shadow(value): starts from the policy
    view.write(0x14, 2, 0x7777)
    view.write(0x16, 1, 0x99)  # a byte write merges into the shadow
    assert view.read(0x14, 2) == 0x7777
    assert view.read(0x16, 2) == 0x1299
    assert dev.writes == []
    assert dev.read(0x14, 2) == 0x0F0F


def test_const_reads_its_value(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x18, 2, 0x1111)
    view = space(policy, dev)
    view.write(0x18, 2, 0)
    assert view.read(0x18, 2) == 0xBEEF
    assert dev.writes == []


def test_reserved_bits_read_zero_and_rsvdz_writes_zero(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x1A, 2, 0xFFFF)
    view = space(policy, dev)
    assert view.read(0x1A, 2) == 0
    view.write(0x1A, 2, 0xFFFF)
    # rsvdp keeps the device's low byte; rsvdz writes 0 to the high byte, only that byte.
    assert dev.writes == [(0x1B, 1, 0x00)]
    assert dev.read(0x1A, 2) == 0x00FF


def test_rw1c_is_never_echoed_by_a_read_modify_write(policy: Policy) -> None:
    dev = MemoryDevice(rw1c={0x1D: 0xFF})
    dev.poke(0x1C, 2, 0xA500)  # error bits set
    view = space(policy, dev)
    assert view.read(0x1C, 2) == 0xA500
    view.write(0x1C, 1, 0x3C)  # a byte write to the control half only
    assert dev.writes == [(0x1C, 1, 0x3C)]
    assert dev.read(0x1C, 2) == 0xA53C  # errors still there
    view.write(0x1C, 2, 0x0000 | 0x3C)  # a word write with zeros in the error half
    assert dev.read(0x1C, 2) == 0xA53C
    view.write(0x1C, 2, 0x2000 | 0x3C)  # writing 1 clears that one bit
    assert dev.read(0x1C, 2) == 0x853C


def test_rw1c_in_a_shadow_clears_on_one(tmp_path: Path) -> None:
    policy = compile_policy(
        "header h type 0 {\n    register s @0x10 u8 { events [7:0] shadow(0xf0) rw1c }\n}\n",
        tmp_path,
    )
    view = space(policy, MemoryDevice())
    view.write(0x10, 1, 0x30)
    assert view.read(0x10, 1) == 0xC0


def test_mixed_register_merges_every_backing(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x20, 4, 0x44332211)
    view = space(policy, dev)
    assert view.read(0x20, 4) == 0x44330011  # cached 0x11, shadow 0, hw 0x33, ro hw 0x44
    view.write(0x20, 4, 0xEEDDCCBB)
    # only the hw rw byte reaches the device; cached and ro bytes are not written
    assert dev.writes == [(0x22, 1, 0xDD)]
    assert view.read(0x20, 4) == 0x44DDCC11


def test_permissive_grants_the_permissive_access(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x20, 4, 0x44332211)
    strict = space(policy, dev)
    strict.write(0x23, 1, 0x99)
    assert dev.writes == []
    assert len(strict.warnings) == 1
    strict.write(0x23, 1, 0x98)
    assert len(strict.warnings) == 1  # warned once per device
    loose = space(policy, dev, permissive=True)
    loose.write(0x23, 1, 0x99)
    assert dev.writes == [(0x23, 1, 0x99)]
    assert loose.warnings == []


def test_gaps_read_the_device_and_drop_writes_unless_permissive(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x30, 4, 0xCAFEF00D)
    strict = space(policy, dev)
    assert strict.read(0x30, 4) == 0xCAFEF00D
    strict.write(0x30, 4, 0)
    assert dev.writes == []
    assert strict.warnings and "0x30" in strict.warnings[0]
    space(policy, dev, permissive=True).write(0x30, 4, 0x12345678)
    assert dev.writes == [(0x30, 4, 0x12345678)]


@pytest.mark.parametrize(
    ("offset", "size"), [(0x11, 2), (0x13, 4), (0x01, 2), (0x100, 4), (-4, 4), (0x10, 3), (0x10, 8)]
)
def test_bad_offsets_and_sizes_are_refused(policy: Policy, offset: int, size: int) -> None:
    from pciback.errors import PciOpError, XenPciError

    view = space(policy, MemoryDevice())
    with pytest.raises(PciOpError) as info:
        view.read(offset, size)
    assert info.value.err is XenPciError.INVALID_OFFSET
    with pytest.raises(PciOpError):
        view.write(offset, size, 0)


def test_a_refused_access_never_finds_a_kept_plan(policy: Policy) -> None:
    """Plans are kept under one int per access (offset << 3 | size): once every access of the
    header has its plan, each size that could share a key with one is still refused."""
    from pciback.errors import PciOpError

    view = space(policy, MemoryDevice())
    header = range(0, 0x40)
    for offset in header:
        for size in (1, 2, 4):
            if not offset % size:
                view.write(offset, size, view.read(offset, size))
    for offset in range(-8, 0x40):
        for size in (-4, -1, 0, 3, 5, 6, 7, 8, 9, 10, 12, 16, 17, 33):
            with pytest.raises(PciOpError):
                view.read(offset, size)
            with pytest.raises(PciOpError):
                view.write(offset, size, 0)


def test_no_permissive_warning_for_a_field_its_hook_acts_on(tmp_path: Path) -> None:
    from pciback.sim.device import SimDevice
    from tests.engine.support import FIXTURES

    fixture = FIXTURES / "virtio-net-1af4-1041.bin"
    if not fixture.exists():
        pytest.skip("no fixture")
    from pciback.policy import build_config_space

    view = build_config_space(SimDevice("0000:00:03.0", fixture))
    command = COMMON_HEADER.COMMAND
    at, width = command.offset, command.width
    view.write(at, width, view.read(at, width) & ~command.BUS_MASTER.mask)  # the hook clears it
    assert view.warnings == []
    view.write(at, width, view.read(at, width) | command.SPECIAL_CYCLES.mask)  # dropped, warned
    assert len(view.warnings) == 1


def test_a_header_type_without_policy_is_never_written(policy: Policy) -> None:
    from pciback.policy import default_policy

    dev = MemoryDevice()
    ids = COMMON_HEADER.VENDOR_ID.offset
    dev.poke(ids, 4, 0x12345678)
    dev.poke(COMMON_HEADER.HEADER_TYPE.offset, 1, 0x02)  # CardBus: no table describes it
    view = ConfigSpace(dev, default_policy(), permissive=True)
    assert view.read(ids, 4) == 0x12345678
    view.write(TYPE0.BAR2.offset, TYPE0.BAR2.width, 0xFFFFFFFF)
    view.write(COMMON_HEADER.COMMAND.offset, COMMON_HEADER.COMMAND.width, 0)
    assert dev.writes == []
    assert any("header type 2" in p for p in view.problems)
    # already permissive: the warning does not suggest permissive mode
    assert len(view.warnings) == 1 and "enable permissive" not in view.warnings[0]
