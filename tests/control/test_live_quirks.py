"""A quirk field added while a guest holds the device reaches the guest's view at once, as a
field written to Linux's quirks attribute does, between two of the guest's ops."""

from __future__ import annotations

from pciback.daemon.changes import describe
from pciback.sim import SimHost
from pciback.sim.fixtures import fixture

from .harness import DEVICES, NET

BODY = 0x44  # inside the dump's first vendor-specific capability: undescribed, so live
SPEC = f"{NET}-{BODY:x}:2:ff"


def test_a_quirk_reaches_the_view_of_the_guest_that_holds_the_device() -> None:
    with SimHost() as host:
        device = host.add_device(NET, fixture(DEVICES[NET]))
        guest = host.attach(4, [NET])
        before = device.read(BODY, 2)
        guest.conf_write(NET, BODY, 2, before ^ 0x0101)
        assert device.read(BODY, 2) == before  # undescribed: dropped outside permissive mode

        result = host.daemon.handle({"op": "quirk_add", "arg": SPEC})
        assert result == {"quirk": SPEC, "live": [4]}
        assert describe({"op": "quirk_add", "arg": SPEC}, result) == (
            f"quirk {SPEC} added; in the view of domain 4 now"
        )
        guest.conf_write(NET, BODY, 2, before ^ 0x0101)
        assert device.read(BODY, 2) == before ^ 0x0001  # the mask's byte only
        assert guest.conf_read(NET, BODY, 2) == before ^ 0x0001


def test_a_quirk_on_a_device_nobody_holds_is_for_the_next_guest() -> None:
    with SimHost() as host:
        device = host.add_device(NET, fixture(DEVICES[NET]))
        host.hide(f"({NET})")
        result = host.daemon.handle({"op": "quirk_add", "arg": SPEC})
        assert result == {"quirk": SPEC, "live": []}
        assert describe({"op": "quirk_add", "arg": SPEC}, result) == f"quirk {SPEC} added"
        guest = host.attach(5, [NET])
        before = device.read(BODY, 2)
        guest.conf_write(NET, BODY, 2, before ^ 0x0101)
        assert device.read(BODY, 2) == before ^ 0x0001
