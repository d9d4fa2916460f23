"""A view's virtual state survives export and import (a daemon restart), and bad input is
refused or skipped, never applied to the wrong register."""

from __future__ import annotations

import json

import pytest

from pciback.engine.snapshot import SnapshotError, export_state, import_state
from pciback.generated.names import COMMON_HEADER, TYPE0
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice
from tests.engine.support import FIXTURES

NET = FIXTURES / "virtio-net-1af4-1041.bin"
pytestmark = pytest.mark.skipif(not NET.exists(), reason="no fixture")
COMMAND, LINE, BAR0, BAR1 = COMMON_HEADER.COMMAND, TYPE0.INTERRUPT_LINE, TYPE0.BAR0, TYPE0.BAR1
HEADER_END = TYPE0.MAX_LAT.offset + TYPE0.MAX_LAT.width  # the type-0 header, a dword at a time


def device() -> SimDevice:
    return SimDevice("0000:00:03.0", NET)


def test_guest_view_is_the_same_after_a_round_trip_through_json() -> None:
    dev = device()
    view = build_config_space(dev)
    view.write(LINE.offset, LINE.width, 0x0B)  # interrupt line: a shadow
    command = view.read(COMMAND.offset, COMMAND.width)
    view.write(COMMAND.offset, COMMAND.width, command | COMMAND.PARITY_RESPONSE.mask)  # a shadow
    view.write(BAR0.offset, BAR0.width, 0xFFFFFFFF)  # BAR0 sizing latch: hook state
    view.settings.permissive = True
    before = [view.read(off, 4) for off in range(0, HEADER_END, 4)]
    saved = json.loads(json.dumps(export_state(view)))
    fresh = build_config_space(dev)
    assert import_state(fresh, saved) == []
    assert [fresh.read(off, 4) for off in range(0, HEADER_END, 4)] == before
    assert fresh.permissive is True


def test_a_changed_layout_is_skipped_and_reported() -> None:
    view = build_config_space(device())
    saved = export_state(view)
    saved["registers"].append({"offset": LINE.offset, "name": "bar0", "shadow": 0xFF, "state": {}})
    saved["registers"].append({"offset": "x"})
    fresh = build_config_space(device())
    skipped = import_state(fresh, saved)
    assert len(skipped) == 2
    assert "layout changed" in skipped[0]
    assert fresh.read(LINE.offset, LINE.width) == view.read(LINE.offset, LINE.width)


def test_shadow_values_cannot_reach_bits_that_are_not_shadows() -> None:
    dev = device()
    view = build_config_space(dev)
    saved = export_state(view)
    command = next(r for r in saved["registers"] if r["name"] == "command")
    command["shadow"] = 0xFFFF  # bus master etc. are hardware bits: must not be forged
    fresh = build_config_space(dev)
    import_state(fresh, saved)
    bus_master = COMMAND.BUS_MASTER.mask
    assert (
        fresh.read(COMMAND.offset, COMMAND.width) & bus_master
        == dev.read(COMMAND.offset, COMMAND.width) & bus_master
    )


@pytest.mark.parametrize(
    "bad",
    [None, [], {"version": 2}, {"version": 1, "registers": {}}, {"version": 1, "registers": []}],
)
def test_malformed_state_is_refused(bad: object) -> None:
    with pytest.raises(SnapshotError):
        import_state(build_config_space(device()), bad)


def test_oversized_hook_state_is_skipped() -> None:
    view = build_config_space(device())
    saved = export_state(view)
    bar0 = {"offset": BAR0.offset, "name": "bar0", "shadow": 0, "state": {"sizing": True}}
    bar0["state"] = {f"k{i}": i for i in range(100)}
    saved["registers"].append(bar0)
    saved["registers"].append(
        {"offset": BAR1.offset, "name": "bar1", "shadow": 0, "state": {"sizing": "x" * 10_000}}
    )
    fresh = build_config_space(device())
    skipped = import_state(fresh, saved)
    assert len(skipped) == 2 and all("malformed hook state" in s for s in skipped)
    assert fresh.read(BAR0.offset, BAR0.width) == view.read(BAR0.offset, BAR0.width)
