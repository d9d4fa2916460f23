"""Accesses that straddle registers and gaps, the per-byte write-back mask, hooks and edges."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.engine import ConfigSpace, Policy
from pciback.engine.hookapi import HookContext, write_hook
from pciback.policy import installed_hooks
from pciback.tables import Edge
from tests.engine.support import MemoryDevice, compile_policy

CALLS: list[tuple[str, int, int]] = []


@write_hook("test_straddle_record")
def _record(ctx: HookContext, old: int, new: int) -> bool:
    CALLS.append(("record", old, new))
    return True


@write_hook("test_straddle_refuse")
def _refuse(ctx: HookContext, old: int, new: int) -> bool:
    CALLS.append(("refuse", old, new))
    return False


POLICY = """
hook on_write test_straddle_record(old, new)
hook on_write test_straddle_refuse(old, new)
header h type 0 {
    register a @0x10 u8  { v [7:0] hw rw }
    register b @0x11 u8  { v [7:0] hw ro "the XSA-128 victim: a neighbour it must not be written" }
    register c @0x12 u16 { v [15:0] hw rw }
    register guarded @0x18 u16 {
        enable [0]     hw rw  on_rising test_straddle_record
        locked [1]     hw rw  on_write test_straddle_refuse
        _      [15:2]  hw ro
    }
    register fall @0x1a u8 { off [0] shadow(1) rw on_falling test_straddle_record
                             _ [7:1] hw ro }
    register level @0x1c u8 { mode [2:0] shadow(2) rw on_change test_straddle_record
                              _ [7:3] shadow(0) rw }
}
capability moving id 0x05 length 0x0c + 4*ctrl.wide {
    register ctrl @0x02 u16 {
        wide [7]    hw ro
        _    [15:8] hw ro
        low  [6:0]  hw ro
    }
    register gap @0x04 u32 { _ [31:0] hw rsvdp "unused, and declared so" }
    register upper @0x08 u32 if ctrl.wide { v [31:0] shadow(0) rw }
    register data @(0x08 + 4*ctrl.wide) u16 { v [15:0] shadow(0x5a5a) rw }
    register tail @(0x0a + 4*ctrl.wide) u16 { _ [15:0] hw rsvdp "up to the length" }
}
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    hooks = installed_hooks().including(_record, _refuse)
    return compile_policy(POLICY, tmp_path_factory.mktemp("straddle"), implementations=hooks)


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


def test_dword_read_over_three_registers(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x10, 4, 0x44332211)
    assert ConfigSpace(dev, policy).read(0x10, 4) == 0x44332211


def test_dword_write_writes_back_only_writable_bytes(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x10, 4, 0x44332211)
    ConfigSpace(dev, policy).write(0x10, 4, 0xDDCCBBAA)
    # byte 0x11 is read-only: never written, not even with its own value
    assert dev.writes == [(0x10, 1, 0xAA), (0x12, 2, 0xDDCC)]
    assert dev.read(0x10, 4) == 0xDDCC22AA


def test_word_write_across_a_register_boundary(policy: Policy) -> None:
    dev = MemoryDevice()
    view = ConfigSpace(dev, policy)
    view.write(0x12, 2, 0xBEEF)
    view.write(0x10, 2, 0x7F01)
    assert dev.read(0x10, 4) == 0xBEEF0001


def test_access_straddling_a_register_and_a_gap(policy: Policy) -> None:
    dev = MemoryDevice()
    dev.poke(0x14, 4, 0x12345678)  # gap: no table describes 0x14..0x17
    dev.poke(0x18, 2, 0x0000)
    view = ConfigSpace(dev, policy)
    assert view.read(0x14, 4) == 0x12345678
    view.write(0x14, 4, 0)
    assert dev.writes == []


def test_rising_edge_hook_runs_only_on_the_edge(policy: Policy) -> None:
    dev = MemoryDevice()
    view = ConfigSpace(dev, policy)
    view.write(0x18, 2, 0x0001)
    view.write(0x18, 2, 0x0001)  # already set: no edge
    view.write(0x18, 2, 0x0000)
    assert [c for c in CALLS if c[0] == "record"] == [("record", 0, 1)]


def test_falling_edge_hook(policy: Policy) -> None:
    view = ConfigSpace(MemoryDevice(), policy)
    view.write(0x1A, 1, 0x01)
    view.write(0x1A, 1, 0x00)
    assert CALLS == [("record", 1, 0)]


def test_change_hook_runs_only_when_its_field_changes(policy: Policy) -> None:
    view = ConfigSpace(MemoryDevice(), policy)
    view.write(0x1C, 1, 0x02)  # the field's current value: nothing to say
    view.write(0x1C, 1, 0xFA)  # only the other bits of the byte change
    view.write(0x1C, 1, 0xFB)
    view.write(0x1C, 1, 0x00)
    assert CALLS == [("record", 2, 3), ("record", 3, 0)]
    assert view.read(0x1C, 1) == 0x00


def test_a_vetoed_field_is_not_written_but_the_rest_lands(policy: Policy) -> None:
    dev = MemoryDevice()
    view = ConfigSpace(dev, policy)
    view.write(0x18, 2, 0x0003)
    assert ("refuse", 0, 1) in CALLS
    assert dev.read(0x18, 2) == 0x0001


def _cap_device(wide: bool) -> MemoryDevice:
    dev = MemoryDevice()
    dev.poke(0x06, 2, 0x0010)  # status: capability list
    dev.poke(0x34, 1, 0x40)
    dev.poke(0x40, 2, 0x0005)  # ID 5, last in the list
    dev.poke(0x42, 2, 0x0080 if wide else 0)
    return dev


@pytest.mark.parametrize("wide", [False, True])
def test_conditional_registers_move_with_device_fields(policy: Policy, wide: bool) -> None:
    view = ConfigSpace(_cap_device(wide), policy)
    data = 0x4C if wide else 0x48
    assert view.read(data, 2) == 0x5A5A
    view.write(data, 2, 0x1234)
    assert view.read(data, 2) == 0x1234
    if wide:
        view.write(0x48, 4, 0xFFFFFFFF)
        assert view.read(0x48, 4) == 0xFFFFFFFF
    assert view.device.writes == []  # type: ignore[attr-defined]


def test_runtime_never_needs_the_compiler(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import pciback.engine, pciback.generated, pciback.hooks\n"
        "from pciback.policy import default_policy\n"
        "default_policy()\n"
        "bad = [m for m in ('lark', 'jinja2') if m in sys.modules]\n"
        "sys.exit(1 if bad else 0)\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_on_change_compiles_to_its_edge(policy: Policy) -> None:
    block = next(iter(policy.headers.values()))
    level = next(r for r in block.registers if r.name == "level")
    mode = next(f for f in level.fields if f.name == "mode")
    assert (mode.on_write, mode.edge) == ("test_straddle_record", Edge.CHANGE)
