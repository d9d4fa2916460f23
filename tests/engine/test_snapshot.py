"""A view's virtual state survives export and import (a daemon restart), and bad input is
refused or skipped, never applied to the wrong register."""

from __future__ import annotations

import json

import pytest

from pciback.engine.snapshot import SnapshotError, export_state, import_state
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice
from tests.engine.support import FIXTURES

NET = FIXTURES / "virtio-net-1af4-1041.bin"
pytestmark = pytest.mark.skipif(not NET.exists(), reason="no fixture")


def device() -> SimDevice:
    return SimDevice("0000:00:03.0", NET)


def test_guest_view_is_the_same_after_a_round_trip_through_json() -> None:
    dev = device()
    view = build_config_space(dev)
    view.write(0x3C, 1, 0x0B)  # interrupt line: a shadow
    view.write(0x04, 2, view.read(0x04, 2) | 0x0040)  # parity response: a shadow bit
    view.write(0x10, 4, 0xFFFFFFFF)  # BAR0 sizing latch: hook state
    view.settings.permissive = True
    before = [view.read(off, 4) for off in range(0, 0x40, 4)]
    saved = json.loads(json.dumps(export_state(view)))
    fresh = build_config_space(dev)
    assert import_state(fresh, saved) == []
    assert [fresh.read(off, 4) for off in range(0, 0x40, 4)] == before
    assert fresh.permissive is True


def test_a_changed_layout_is_skipped_and_reported() -> None:
    view = build_config_space(device())
    saved = export_state(view)
    saved["registers"].append({"offset": 0x3C, "name": "bar0", "shadow": 0xFF, "state": {}})
    saved["registers"].append({"offset": "x"})
    fresh = build_config_space(device())
    skipped = import_state(fresh, saved)
    assert len(skipped) == 2
    assert "layout changed" in skipped[0]
    assert fresh.read(0x3C, 1) == view.read(0x3C, 1)


def test_shadow_values_cannot_reach_bits_that_are_not_shadows() -> None:
    dev = device()
    view = build_config_space(dev)
    saved = export_state(view)
    command = next(r for r in saved["registers"] if r["name"] == "command")
    command["shadow"] = 0xFFFF  # bus master etc. are hardware bits: must not be forged
    fresh = build_config_space(dev)
    import_state(fresh, saved)
    assert fresh.read(0x04, 2) & 0x0004 == dev.read(0x04, 2) & 0x0004


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
    bar0 = {"offset": 0x10, "name": "bar0", "shadow": 0, "state": {"sizing": True}}
    bar0["state"] = {f"k{i}": i for i in range(100)}
    saved["registers"].append(bar0)
    saved["registers"].append(
        {"offset": 0x14, "name": "bar1", "shadow": 0, "state": {"sizing": "x" * 10_000}}
    )
    fresh = build_config_space(device())
    skipped = import_state(fresh, saved)
    assert len(skipped) == 2 and all("malformed hook state" in s for s in skipped)
    assert fresh.read(0x10, 4) == view.read(0x10, 4)
