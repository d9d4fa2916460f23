"""The simulated host is the daemon's control plane, not a copy of it: what SimHost does shows
in the stub pool, the ownership registry and xenstore, and goes through the xenbus handshake."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pciback.control.state import StateStore
from pciback.generated.names import COMMON_HEADER
from pciback.ports.hostbus import STUB_DRIVER
from pciback.sim import PciOpError, SimHost, SimHostError, XenPciError
from pciback.xenbus.states import XenbusState as S
from tests.control.harness import pci_bridge

from .simconfig import FIXTURES, nic_config

VENDOR_ID = COMMON_HEADER.VENDOR_ID

NET = f"{FIXTURES}/virtio-net-1af4-1041.bin"
BLK = f"{FIXTURES}/virtio-blk-1af4-1042.bin"
A = "0000:03:00.0"
A1 = "0000:03:00.1"
B = "0000:07:02.0"
BRIDGE = "0000:00:00.0"
BE = "/local/domain/0/backend/pci"


def be(host: SimHost, domid: int, name: str) -> str | None:
    return host.toolstack.xs.read(f"{BE}/{domid}/0/{name}")


def test_a_second_guest_is_refused_by_the_ownership_registry(host: SimHost) -> None:
    host.add_device(A, NET)
    first = host.attach(1, [A])
    with pytest.raises(SimHostError) as info:
        host.attach(2, [A], mode="vpci")
    # The backend's claim was refused by the registry, and said so through xenstore.
    assert f"{A} is owned by domain 1; the claim by domain 2 is refused" in str(info.value)
    assert host.daemon.ownership.all() == {A: 1}
    # The refused guest left nothing behind; the first is untouched.
    assert host.toolstack.xs.list(f"{BE}/2") is None
    with pytest.raises(SimHostError):
        host.guest(2)
    assert first.conf_read(A, VENDOR_ID.offset, VENDOR_ID.width) == 0x1AF4
    assert host.attach(2, []).devices == []  # the domain id is free again


def test_a_hot_add_of_a_device_held_elsewhere_keeps_the_running_guest(host: SimHost) -> None:
    host.add_device(A, NET)
    host.add_device(B, NET)
    host.attach(1, [A])
    guest = host.attach(2, [B])
    with pytest.raises(SimHostError, match="assigned to domain 1"):
        host.attach(2, [A])
    assert be(host, 2, "state") == str(int(S.CONNECTED))
    assert guest.devices == [B] and guest.conf_read(B, VENDOR_ID.offset, VENDOR_ID.width) == 0x1AF4


def test_a_hot_add_refused_up_front_adds_none_of_the_devices(host: SimHost) -> None:
    for address in (A, A1, B):
        host.add_device(address, NET)
    host.attach(1, [A])
    guest = host.attach(2, [B])
    with pytest.raises(SimHostError, match="assigned to domain 1"):
        host.attach(2, [A1, A])
    assert guest.devices == [B] and host.owner(A1) is None


def test_a_reconfiguration_the_backend_refuses_closes_that_guest_only(host: SimHost) -> None:
    host.add_device(A, NET)
    host.add_device(B, NET)
    host.add_device(BRIDGE, bytes(pci_bridge(BRIDGE).config))  # a PCI-to-PCI bridge
    other = host.attach(1, [B], mode="vpci")
    host.attach(2, [A], mode="vpci")
    with pytest.raises(SimHostError, match=r"bridges cannot be exported.*its backend closed"):
        host.attach(2, [BRIDGE], mode="vpci")
    # As Linux: a failed reconfiguration is fatal for the backend device, so the toolstack
    # reaps the guest and every device it had goes back to the pool.
    with pytest.raises(SimHostError):
        host.guest(2)
    assert host.daemon.ownership.all() == {B: 1}
    assert other.conf_read("0000:00:00.0", VENDOR_ID.offset, VENDOR_ID.width) == 0x1AF4


def test_detach_is_a_hot_remove_that_releases_ownership(host: SimHost) -> None:
    host.add_device(A, NET)
    host.add_device(B, NET)
    guest = host.attach(1, [A, B])
    assert be(host, 1, "num_devs") == "2"
    host.detach(1, A)
    assert host.daemon.ownership.all() == {B: 1}
    assert host.daemon.ownership.owned_by(1) == [B]
    # The backend reconfigured and is Connected again; the toolstack dropped the nodes and
    # moved the device after it down one index, as libxl does.
    assert be(host, 1, "state") == str(int(S.CONNECTED))
    assert be(host, 1, "dev-0") == "0000:07:02.0" and be(host, 1, "dev-1") is None
    assert be(host, 1, "num_devs") == "1"
    assert guest.devices == [B]
    with pytest.raises(PciOpError) as info:
        guest.conf_read(A, VENDOR_ID.offset, VENDOR_ID.width)
    assert info.value.err == XenPciError.DEV_NOT_FOUND
    # Back in the pool, clean, for the next guest.
    assert A in host.daemon.pool.devices and host.env.bus.driver(A) == STUB_DRIVER
    assert host.attach(3, [A]).conf_read(A, VENDOR_ID.offset, VENDOR_ID.width) == 0x1AF4
    assert host.owner(A) == 3


def test_destroy_is_a_guest_shutdown_seen_by_the_backends(host: SimHost) -> None:
    host.add_device(A, NET)
    host.attach(1, [A])
    assert (1, 0) in host.daemon.backends.backends
    host.destroy_guest(1)
    assert (1, 0) not in host.daemon.backends.backends
    assert host.toolstack.xs.list(f"{BE}/1") is None
    assert host.daemon.ownership.all() == {}
    assert host.daemon.datapath.connection(1) is None


def test_hide_is_the_stub_pools_hide_list(host: SimHost) -> None:
    host.add_device(A, NET)
    host.add_device(A1, BLK)
    host.add_device(B, NET)
    assert host.hide("(03:00.*)") == [A, A1]
    pool = host.daemon.pool
    assert "0000:03:00.7" in pool.slots()  # the wildcard became slots, as new_slot would
    assert sorted(pool.devices) == [A, A1]
    assert host.env.bus.driver(A) == STUB_DRIVER and host.env.bus.driver(B) == "host"
    assert host.physical(A).resets == 1  # seized: reset and kept clean
    host.add_device("0000:03:00.3", NET)  # hotplugged under a slot: the pool takes it
    assert "0000:03:00.3" in pool.devices
    # A device nobody hid is made assignable on attach, as `xl pci-assignable-add` does.
    host.attach(1, [B])
    assert B in pool.devices and B in pool.slots()
    assert host.env.bus.history[-2:] == [("unbind", B, "host"), ("bind", B, STUB_DRIVER)]


def test_passthrough_guests_see_real_addresses_on_published_roots(host: SimHost) -> None:
    for address in (A, A1, B):
        host.add_device(address, NET)
    guest = host.attach(1, [B, A, A1], mode="passthrough")
    assert guest.devices == [A, A1, B]
    assert [be(host, 1, f"vdev-{i}") for i in range(3)] == [
        "0000:07:02.00",
        "0000:03:00.00",
        "0000:03:00.01",
    ]
    assert be(host, 1, "root_num") == "2"
    assert guest.domain.buses() == [(0, 7), (0, 3)]
    assert sorted(d.address for d in guest.enumerate()) == [A, A1, B]


def test_vpci_guests_see_virtual_slots_on_bus_zero(host: SimHost) -> None:
    for address in (A, A1, B):
        host.add_device(address, NET)
    guest = host.attach(1, [B, A1, A], mode="vpci")
    assert guest.devices == ["0000:00:00.0", "0000:00:01.0", "0000:00:01.1"]
    assert host.daemon.backends.backends[(1, 0)].topology.devices() == {
        "0000:00:00.0": B,
        "0000:00:01.0": A,
        "0000:00:01.1": A1,
    }
    assert be(host, 1, "root_num") == "1" and be(host, 1, "root-0") == "0000:00"
    assert [d.address for d in guest.enumerate()] == guest.devices
    with pytest.raises(SimHostError):
        guest.exported("0000:00:01.0")  # a guest address is not a physical one
    assert guest.exported(A).guest_address == "0000:00:01.0"


def test_permissive_host_is_the_pools_global_permissive() -> None:
    with SimHost(permissive=True) as h:
        h.add_device(A, nic_config())
        h.attach(1, [A])
        assert h.daemon.pool.policy(A)[0] is True
        assert h.daemon.pool.permissive() == []  # no device was singled out
    with SimHost() as h:
        h.add_device(A, nic_config())
        h.attach(1, [A])
        assert h.daemon.pool.policy(A)[0] is False


def test_a_state_dir_keeps_ownership_in_the_database(tmp_path: Path) -> None:
    with SimHost(state_dir=tmp_path) as h:
        h.add_device(A, NET)
        h.attach(1, [A])
        assert h.daemon.state.owners() == {A: 1}
    store = StateStore(tmp_path)
    try:
        assert store.owners() == {}  # the guest's shutdown released it
        assert store.slots() == [A]
    finally:
        store.close()


def test_destroy_stops_servicing_before_the_guests_channel_closes(
    host: SimHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.add_device(A, NET)
    guest = host.attach(1, [A])
    seen: list[list[str]] = []
    close = guest.channel.close

    def record_then_close() -> None:
        seen.append([t.name for t in threading.enumerate()])
        close()

    monkeypatch.setattr(guest.channel, "close", record_then_close)
    host.destroy_guest(1)
    assert len(seen) == 1 and "pciback-dom1" not in seen[0]


def test_a_guest_that_drops_its_channel_first_is_still_torn_down(
    host: SimHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    host.add_device(A, NET)
    guest = host.attach(1, [A])
    guest.enable_msix(A, 2)
    guest.channel.close()  # hostile or crashed: its end goes before the toolstack acts
    host.destroy_guest(1)
    assert died == []
    assert host.owner(A) is None and host.hypervisor.pirqs_of(1) == []
    assert not any(t.name == "pciback-dom1" for t in threading.enumerate())
