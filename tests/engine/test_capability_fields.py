"""A table's length and conditions reading a field of another capability of the same function,
at seize; an array's instances laid out by them; what a device they cannot be computed for
gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.engine import ConfigSpace, Policy
from pciback.engine.registers import RegisterInstance
from pciback.engine.space import HostOwned
from pciback.policy import installed_hooks
from pciback.tables import (
    Access,
    Backing,
    Block,
    BlockKind,
    Field,
    FieldLookup,
    PolicyModule,
    Register,
)

from .support import MemoryDevice, compile_policy

POLICY = """
header type0 type 0 {
    register vendor_id @0x00 u16 { vendor [15:0] cached ro }
    register device_id @0x02 u16 { device [15:0] cached ro }
}
capability pcie id 0x10 length 0x0c + 8 * (caps.version >= 2) {
    register caps @0x02 u16 { version [3:0] cached ro  _ [15:4] hw ro }
    register devcap @0x04 u32 { x [31:0] hw ro }
    register devctl @0x08 u32 { x [31:0] hw ro }
    register linkcap @0x0c u32 if caps.version >= 2 {
        _ [3:0] hw ro
        max_width [9:4] cached ro
        _ [31:10] hw ro
    }
    register linkctl @0x10 u32 if caps.version >= 2 { x [31:0] hw ro }
}
capability bridge_pcie id 0x10 match class = 0x060400 / 0xffff00 length 4 {
    register caps @0x02 u16 { x [15:0] hw ro }
}
extended_capability sec id 0x19 length 0x0c + 2 * min(pcie.linkcap.max_width, 32) {
    register lc3 @0x04 u32 { x [31:0] hw ro }
    register les @0x08 u32 { x [31:0] hw ro }
    register lane[min(pcie.linkcap.max_width, 32)] @0x0c u16 { preset [15:0] hw ro }
}
"""
PCIE, SEC = 0x40, 0x100


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    return compile_policy(POLICY, tmp_path_factory.mktemp("policy"))


def device(width: int | None, *, version: int = 2, class_code: int = 0x020000) -> MemoryDevice:
    """A function with a Secondary PCIe capability and, unless `width` is None, a PCIe one of
    that maximum link width; every lane byte reads 0xA5."""
    dev = MemoryDevice(size=4096)
    dev.poke(0x00, 4, 0x12348086)
    dev.poke(0x08, 4, class_code << 8)
    if width is not None:
        dev.poke(0x06, 2, 0x10)
        dev.poke(0x34, 1, PCIE)
        dev.poke(PCIE, 2, 0x0010)
        dev.poke(PCIE + 2, 2, version)
        dev.poke(PCIE + 0x0C, 4, 0x00437000 | (width << 4) | 3)
    dev.poke(SEC, 4, 0x00010019)
    dev.config[SEC + 4 : SEC + 0x80] = b"\xa5" * 0x7C
    return dev


def lanes(view: ConfigSpace) -> list[str]:
    return [r.reg.name for r in view.registers if r.reg.name.startswith("lane")]


@pytest.mark.parametrize(
    ("width", "count"),
    [(1, 1), (4, 4), (12, 12), (16, 16), (32, 32), (33, 32), (63, 32), (0, 0)],
)
def test_the_lanes_follow_the_pcie_capabilitys_width(
    policy: Policy, width: int, count: int
) -> None:
    view = ConfigSpace(device(width), policy)
    assert lanes(view) == [f"lane{i}" for i in range(count)]
    for i in range(count):
        slot = view.slot_at(SEC + 0x0C + 2 * i)
        assert isinstance(slot, RegisterInstance) and slot.reg.name == f"lane{i}"
    assert not isinstance(view.slot_at(SEC + 0x0C + 2 * count), RegisterInstance)
    assert view.problems == []


@pytest.mark.parametrize(
    "dev",
    [device(None), device(8, version=1)],
    ids=["no PCIe capability", "PCIe capability without link registers"],
)
def test_a_field_the_function_lacks_reads_0(policy: Policy, dev: MemoryDevice) -> None:
    view = ConfigSpace(dev, policy)
    assert lanes(view) == []
    assert isinstance(view.slot_at(SEC + 0x08), RegisterInstance)  # the fixed part stands


def test_a_hidden_capability_is_still_read(policy: Policy) -> None:
    view = ConfigSpace(device(4), policy, hide=[0x10])
    assert view.capability_offset(0x10) is None
    assert lanes(view) == ["lane0", "lane1", "lane2", "lane3"]


def test_a_capability_a_variant_describes_reads_0(policy: Policy) -> None:
    # In a bridge, `bridge_pcie` describes the PCIe capability: `pcie`'s layout says nothing
    # about where its fields are there.
    view = ConfigSpace(device(4, class_code=0x060400), policy)
    assert lanes(view) == []


def test_the_other_capability_is_read_once_for_every_condition(policy: Policy) -> None:
    dev = device(32)
    seen: list[tuple[int, int]] = []
    read = dev.read

    def counting(offset: int, size: int) -> int:
        seen.append((offset, size))
        return read(offset, size)

    dev.read = counting  # type: ignore[method-assign]
    view = ConfigSpace(dev, policy)
    assert len(lanes(view)) == 32
    # the length, 32 conditions: one read of the link capabilities for all of them, and one
    # by the PCIe capability's own register instance
    assert seen.count((PCIE + 0x0C, 4)) == 2


def _module(*blocks: Block) -> PolicyModule:
    return PolicyModule("test.pci", "0" * 64, blocks)


def _word(name: str, offset: int, present: object = None) -> Register:
    return Register(
        name,
        offset,
        4,
        (Field("x", 0xFFFFFFFF, Backing.HW, Access.RO, "test.pci:1"),),
        "test.pci:1",
        present=present,  # type: ignore[arg-type]
    )


def test_a_length_that_divides_by_zero_leaves_the_capability_host_owned() -> None:
    # The compiler refuses such a table; one made otherwise is caught at seize.
    def length(f: FieldLookup) -> int:
        return 8 + 8 // f("count", "x")

    block = Block(
        BlockKind.EXTENDED_CAPABILITY,
        "broken",
        0x19,
        (_word("count", 0x04),),
        "test.pci:1",
        length=length,
    )
    dev = device(None)
    dev.poke(SEC + 4, 4, 0)
    view = ConfigSpace(
        dev, Policy.from_modules([_module(block)], installed_hooks()), permissive=True
    )
    assert view.problems[-1:] == [
        "test.pci:1: broken length: division by zero (0x104 = 0x0); its bytes are read-only"
    ]
    slot = view.slot_at(SEC + 4)
    assert isinstance(slot, HostOwned)
    view.write(SEC + 4, 4, 0xFFFFFFFF)
    assert dev.writes == []
    assert view.read(SEC + 8, 4) == 0xA5A5A5A5
    assert "could not be laid out" in view.warnings[0]


def test_tables_that_read_each_other_are_refused_at_seize_not_looped() -> None:
    # Two tables whose conditions read each other's fields (the compiler reports the cycle).
    a = Block(
        BlockKind.CAPABILITY,
        "a",
        0x10,
        (_word("r", 0x04, present=lambda f: f.of("b", "s", "x")),),
        "test.pci:1",
        length=8,
    )
    b = Block(
        BlockKind.EXTENDED_CAPABILITY,
        "b",
        0x19,
        (_word("s", 0x04, present=lambda f: f.of("a", "r", "x")),),
        "test.pci:2",
        length=8,
    )
    view = ConfigSpace(device(4), Policy.from_modules([_module(a, b)], installed_hooks()))
    assert any("is read while it is being read" in p for p in view.problems)


def test_a_policy_compiled_from_dsl_is_the_one_checked(tmp_path: Path) -> None:
    # A length over a field of another capability compiles to a lookup the engine answers.
    policy = compile_policy(POLICY, tmp_path, name="again")
    sec = policy.extended[0x19]
    assert callable(sec.length)
    assert sec.length_text == "(0xc + (2 * min(pcie.linkcap.max_width, 0x20)))"


REST = """
header type0 type 0 {
    register vendor_id @0x00 u16 { vendor [15:0] cached ro }
    register device_id @0x02 u16 { device [15:0] cached ro }
}
extended_capability tables id 0x0002 length 8 {
    register t @0x04 u32 { offset [7:0] cached ro  _ [31:8] hw rsvdp }
    rest ro if t.offset != 0 "the arbitration tables"
}
extended_capability next id 0x0003 length 8 {
    register w @0x04 u32 { x [31:0] hw rw "a guest's" }
}
"""


def rest_device(offset: int) -> MemoryDevice:
    """`tables` at 0x100 (its tables at `offset` 16-byte units in), `next` at 0x180."""
    dev = MemoryDevice(size=4096)
    dev.poke(0x00, 4, 0x12348086)
    dev.poke(0x100, 4, 0x18010002)
    dev.poke(0x104, 4, offset)
    dev.poke(0x180, 4, 0x00010003)
    dev.config[0x108:0x180] = b"\xa5" * 0x78
    dev.config[0x184:0x200] = b"\x5a" * 0x7C
    return dev


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
def test_a_capabilitys_rest_is_read_and_never_written_up_to_the_next(
    tmp_path: Path, permissive: bool
) -> None:
    policy = compile_policy(REST, tmp_path)
    dev = rest_device(offset=3)
    view = ConfigSpace(dev, policy, permissive=permissive)
    for at in (0x108, 0x130, 0x17C):
        slot = view.slot_at(at)
        assert isinstance(slot, HostOwned)
        assert "the rest of tables (the arbitration tables)" in slot.description
        assert view.read(at, 4) == 0xA5A5A5A5
        view.write(at, 4, 0)
    assert dev.writes == []
    assert "the rest of tables is the host's (the arbitration tables)" in view.warnings[0]
    view.write(0x184, 4, 0x12345678)  # the next capability's register is its own
    assert dev.writes == [(0x184, 4, 0x12345678)]
    assert not isinstance(view.slot_at(0x200), HostOwned)  # nor past the last capability's


def test_a_rest_only_where_its_condition_holds(tmp_path: Path) -> None:
    policy = compile_policy(REST, tmp_path)
    view = ConfigSpace(rest_device(offset=0), policy, permissive=True)
    assert not isinstance(view.slot_at(0x108), HostOwned)
    view.write(0x108, 4, 0)  # the engine default: permissive mode writes it
    assert view.device.writes == [(0x108, 4, 0)]  # type: ignore[attr-defined]
