"""The simulated host as the design's test-facing contract describes it."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest

import pciback.errors
from pciback.generated.names import COMMON_HEADER, TYPE0
from pciback.protocol.abi import Flag
from pciback.sim import FrontendClosed, PciOpError, SimHost, SimHostError

from .simconfig import FIXTURES, nic_config

VENDOR_ID, HEADER_TYPE = COMMON_HEADER.VENDOR_ID, COMMON_HEADER.HEADER_TYPE
LINE = TYPE0.INTERRUPT_LINE.offset

NET = f"{FIXTURES}/virtio-net-1af4-1041.bin"
NET_TEXT = f"{FIXTURES}/virtio-net-1af4-1041.lspci.txt"
ADDR = "0000:03:00.0"


def test_the_exported_error_is_the_backends() -> None:
    assert PciOpError is pciback.errors.PciOpError


@pytest.mark.parametrize("source", ["bytes", "binary", "text"])
def test_devices_come_from_bytes_or_dumps(host: SimHost, source: str) -> None:
    sources: dict[str, bytes | str | Path] = {
        "bytes": Path(NET).read_bytes(),
        "binary": NET,
        "text": Path(NET_TEXT),
    }
    config = sources[source]
    host.add_device(ADDR, config)
    guest = host.attach(1, [ADDR])
    assert guest.conf_read(ADDR, VENDOR_ID.offset, 4) == 0x10411AF4  # and the device ID
    ids = slice(VENDOR_ID.offset, COMMON_HEADER.COMMAND.offset)
    assert host.physical(ADDR).config[ids] == bytes.fromhex("f41a4110")


def test_guest_traffic_crosses_the_page(host: SimHost) -> None:
    host.add_device(ADDR, NET)
    guest = host.attach(1, [ADDR])
    served = guest.backend.ops_served
    guest.conf_read(ADDR, HEADER_TYPE.offset, HEADER_TYPE.width)
    assert guest.backend.ops_served == served + 1
    op = guest.page.info.op
    assert int(op.offset) == HEADER_TYPE.offset and int(op.size) == HEADER_TYPE.width
    assert not guest.page.test_bit(Flag.PCIF_ACTIVE)


def test_ownership_follows_attach_detach_and_destroy(host: SimHost) -> None:
    host.add_device(ADDR, NET)
    host.add_device("0000:04:00.0", nic_config())
    assert host.owner(ADDR) is None
    guest = host.attach(1, [ADDR])
    assert host.owner(ADDR) == 1
    with pytest.raises(SimHostError):
        host.attach(2, [ADDR])
    assert host.attach(1, ["0000:04:00.0"]) is guest
    assert guest.devices == [ADDR, "0000:04:00.0"]
    host.detach(1, ADDR)
    assert host.owner(ADDR) is None and guest.devices == ["0000:04:00.0"]
    with pytest.raises(SimHostError):
        host.detach(1, ADDR)
    host.destroy_guest(1)
    assert host.owner("0000:04:00.0") is None
    assert host.attach(2, [ADDR]).devices == [ADDR]


def test_release_resets_the_device(host: SimHost) -> None:
    device = host.add_device(ADDR, NET)
    host.attach(1, [ADDR])
    resets = device.resets
    device.config[LINE] = 0x99  # state a guest left behind
    host.destroy_guest(1)
    assert device.resets == resets + 1 and device.config[LINE] == device.initial[LINE]


def test_unknown_devices_and_bad_addresses_are_host_errors(host: SimHost) -> None:
    with pytest.raises(SimHostError):
        host.attach(1, [ADDR])
    with pytest.raises(SimHostError):
        host.add_device("3:0.0", NET)
    with pytest.raises(SimHostError):
        host.physical("0000:09:00.0")
    host.add_device(ADDR, NET)
    with pytest.raises(SimHostError):
        host.add_device(ADDR, NET)
    with pytest.raises(SimHostError):
        host.attach(0, [ADDR])


def test_ops_for_devices_the_guest_lacks_are_dev_not_found(host: SimHost) -> None:
    host.add_device(ADDR, NET)
    host.add_device("0000:04:00.0", NET)
    guest = host.attach(1, [ADDR])
    with pytest.raises(PciOpError) as info:
        guest.conf_read("0000:04:00.0", VENDOR_ID.offset, 4)
    assert info.value.err == pciback.errors.XenPciError.DEV_NOT_FOUND


def test_bad_accesses_raise_the_xen_error(host: SimHost) -> None:
    host.add_device(ADDR, NET)
    guest = host.attach(1, [ADDR])
    for offset, size in [(1, 2), (0, 3), (0x100, 4)]:
        with pytest.raises(PciOpError) as info:
            guest.conf_read(ADDR, offset, size)
        assert info.value.err == pciback.errors.XenPciError.INVALID_OFFSET


def test_hide_seizes_present_and_future_devices(host: SimHost) -> None:
    host.add_device(ADDR, NET)
    host.add_device("0000:05:00.0", NET)
    assert host.hide("(0000:03:00.0)(04:00.*)") == [ADDR]
    assert host.is_seized(ADDR) and not host.is_seized("0000:05:00.0")
    host.add_device("0000:04:00.3", NET)
    assert host.is_seized("0000:04:00.3")


def test_vpci_mode_renumbers_onto_bus_zero(host: SimHost) -> None:
    host.add_device("0000:03:00.0", NET)
    host.add_device("0000:03:00.1", NET)
    host.add_device("0000:07:02.0", NET)
    guest = host.attach(4, ["0000:03:00.0", "0000:07:02.0", "0000:03:00.1"], mode="vpci")
    assert guest.devices == ["0000:00:00.0", "0000:00:00.1", "0000:00:01.0"]
    assert guest.conf_read("0000:00:01.0", VENDOR_ID.offset, VENDOR_ID.width) == 0x1AF4
    with pytest.raises(SimHostError):
        host.attach(4, [], mode="passthrough")


def test_closing_the_host_stops_every_thread() -> None:
    before = threading.active_count()
    h = SimHost()
    h.add_device(ADDR, NET)
    h.attach(1, [ADDR])
    with_aer = h.attach(2, [])
    # The daemon's kernel-uevent reader; a service thread per guest; an interrupt thread only
    # for a guest that takes AER requests (the others' ops wait on their event channel).
    assert threading.active_count() == before + 3
    with_aer.set_aer_handler(lambda request: None)
    assert threading.active_count() == before + 4
    h.close()
    assert threading.active_count() == before


def test_an_abandoned_host_still_stops_its_threads() -> None:
    before = threading.active_count()
    h = SimHost()
    h.attach(1, []).set_aer_handler(lambda request: None)
    assert threading.active_count() == before + 3  # uevents, its service and interrupt threads
    del h
    gc.collect()
    assert threading.active_count() == before


def test_a_destroyed_guests_frontend_finds_nothing(host: SimHost) -> None:
    host.add_device(ADDR, NET)
    guest = host.attach(1, [ADDR])
    host.destroy_guest(1)
    with pytest.raises(FrontendClosed) as info:
        guest.conf_read(ADDR, VENDOR_ID.offset, VENDOR_ID.width)
    assert info.value.err == pciback.errors.XenPciError.DEV_NOT_FOUND


def test_concurrent_guest_threads_each_get_their_own_answer(host: SimHost) -> None:
    host.add_device(ADDR, nic_config())
    guest = host.attach(1, [ADDR])
    expected = {off: guest.conf_read(ADDR, off, 4) for off in range(0, 0x40, 4)}
    wrong: list[int] = []

    def reader(offset: int) -> None:
        for _ in range(50):
            if guest.conf_read(ADDR, offset, 4) != expected[offset]:
                wrong.append(offset)

    threads = [threading.Thread(target=reader, args=(off,)) for off in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


@pytest.mark.parametrize("permissive", [False, True])
def test_the_host_permissive_flag_reaches_every_device(permissive: bool) -> None:
    with SimHost(permissive=permissive) as h:
        device = h.add_device(ADDR, nic_config())
        guest = h.attach(1, [ADDR])
        seized = len(device.writes)  # the stub pool's, before the guest came
        guest.conf_write(ADDR, 0xC0, 4, 0x12345678)  # no register is described there
        assert device.writes[seized:] == ([(0xC0, 4, 0x12345678)] if permissive else [])
