"""Hot add and hot remove, over and over, on one guest: the simulated toolstack compacts the
backend's device list as libxl does on each removal (the devices after the removed one move
down one index, num_devs one less), and the backend follows the renumbering, so the guest keeps
its backend and its other device is served throughout. Without the compaction the 257th hot
add overflows the list (256 entries at most) and the backend closes."""

from __future__ import annotations

import pytest

from pciback.generated.names import COMMON_HEADER
from pciback.sim import PciOpError, SimHost, XenPciError
from pciback.sim.host import SimGuest
from pciback.xenbus.parse import MAX_DEVS
from pciback.xenbus.states import XenbusState as S

from .simconfig import FIXTURES

VENDOR_ID = COMMON_HEADER.VENDOR_ID


A = "0000:03:00.0"
B = "0000:04:00.0"
DUMPS = {A: f"{FIXTURES}/virtio-net-1af4-1041.bin", B: f"{FIXTURES}/virtio-rng-1af4-1044.bin"}
IDS = {A: 0x10411AF4, B: 0x10441AF4}  # vendor and device IDs of the two dumps
CYCLES = 300
BE = "/local/domain/0/backend/pci/1/0"


def seen(guest: SimGuest) -> dict[int, str]:
    """What the guest is given: each device's vendor and device IDs, read over the shared
    page, to its guest-visible address."""
    return {guest.conf_read(g, VENDOR_ID.offset, 4): g for g in guest.devices}


@pytest.mark.parametrize("mode", ["vpci", "passthrough"])
def test_hot_plug_cycles_keep_the_backend_and_the_other_device_served(mode: str) -> None:
    assert CYCLES > MAX_DEVS  # enough hot adds to overflow a list that is never compacted
    host = SimHost()
    try:
        for address, dump in DUMPS.items():
            host.add_device(address, dump)
        guest = host.attach(1, [A, B], mode=mode)
        xs = host.toolstack.xs
        for cycle in range(CYCLES):
            # The device at index 0 goes: the other one moves down to index 0 under the guest.
            first = xs.read(f"{BE}/dev-0")
            assert first in (A, B)
            other = B if first == A else A
            before = seen(guest)
            host.detach(1, first)
            assert xs.read(f"{BE}/num_devs") == "1", cycle
            assert xs.read(f"{BE}/dev-0") == other and xs.read(f"{BE}/dev-1") is None
            # The device that stayed is served at the guest address it had.
            assert seen(guest) == {IDS[other]: before[IDS[other]]}, cycle
            with pytest.raises(PciOpError) as info:
                guest.conf_read(before[IDS[first]], VENDOR_ID.offset, 4)
            assert info.value.err == XenPciError.DEV_NOT_FOUND
            assert host.owner(first) is None
            # It comes back at index 1, after the device that stayed.
            host.attach(1, [first], mode=mode)
            assert xs.read(f"{BE}/num_devs") == "2", cycle
            assert xs.read(f"{BE}/dev-1") == first
            after = seen(guest)
            assert set(after) == {IDS[A], IDS[B]}, cycle
            assert after[IDS[other]] == before[IDS[other]]
            assert host.backend_state(1) == S.CONNECTED
        assert host.owner(A) == host.owner(B) == 1
        backend = host.daemon.backends.backends[(1, 0)]
        assert backend.error is None and sorted(backend.exported.values()) == [A, B]
        assert sorted(backend.exported) == [0, 1]  # keyed by the indices listed now
    finally:
        host.close()
