"""MSI, multi-MSI and MSI-X through the page: the XSA-157 state checks, the bounds, the guest's
view afterwards, and nothing left behind when the guest goes."""

from __future__ import annotations

import logging
import threading

import pytest

from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import COMMON_HEADER, MSI, MSIX
from pciback.ports.hypervisor import IrqKind
from pciback.protocol.abi import Cmd
from pciback.sim import MultiMsiRefused, SimGuest, SimHost
from pciback.sim.device import SimDevice
from pciback.sim.hypervisor import SimHypervisor

from .simconfig import INTERRUPT_LINE, MSI_CAP, MSIX_CAP, MSIX_TABLE_SIZE, nic_config, refused

ADDR = "0000:03:00.0"
MSI_CONTROL, MSI_ADDRESS = MSI_CAP + MSI.CONTROL.offset, MSI_CAP + MSI.ADDRESS.offset
MSIX_CONTROL = MSIX_CAP + MSIX.CONTROL.offset
MSI_ENABLE, MSIX_ENABLE = MSI.CONTROL.ENABLE.mask, MSIX.CONTROL.ENABLE.mask


def attach(
    host: SimHost, *, msi: bool = True, msix: bool = True, command: int = 0x6
) -> tuple[SimGuest, SimDevice]:
    config = nic_config(msi=msi, msix=msix, command=command)
    device = host.add_device(ADDR, config, bar_sizes={0: 0x4000})
    guest = host.attach(1, [ADDR])
    host.hypervisor.calls.clear()  # from here on: what the guest causes
    return guest, device


def test_enable_msi_maps_a_pirq_and_programs_the_device(host: SimHost) -> None:
    guest, device = attach(host)
    pirq = guest.enable_msi(ADDR)
    assert host.hypervisor.calls == [("map_pirq", 1, ADDR, "msi", 0, 1)]
    assert host.hypervisor.pirqs_of(1) == [pirq]
    assert device.msi_vectors == 1
    control = guest.conf_read(ADDR, MSI_CONTROL, 2)
    assert control & MSI_ENABLE and control == device.read(MSI_CONTROL, 2)
    assert guest.conf_read(ADDR, MSI_ADDRESS, 4) == device.read(MSI_ADDRESS, 4) != 0


def test_disable_msi_unmaps_and_answers_the_intx_line(host: SimHost) -> None:
    guest, device = attach(host)
    pirq = guest.enable_msi(ADDR)
    reply = guest.frontend.do_op(Cmd.DISABLE_MSI, ADDR)
    assert (reply.err, reply.value) == (XenPciError.SUCCESS, INTERRUPT_LINE)
    assert host.hypervisor.calls[-1] == ("unmap_pirq", 1, pirq)
    assert host.hypervisor.pirqs_of(1) == []
    assert not guest.conf_read(ADDR, MSI_CONTROL, 2) & MSI_ENABLE
    guest.disable_msi(ADDR)  # disabling what is off is harmless, as in Linux
    assert device.msi_vectors == 0


def test_disable_msi_after_msix_tears_msix_down_as_a_linux_6_1_guest_asks(
    host: SimHost,
) -> None:
    """A Linux 6.1 guest unloading a driver that used MSI-X sends XEN_PCI_OP_disable_msi (its
    PCI core clears msix_enabled before asking the frontend): the vectors go all the same, so
    the next driver can enable MSI or MSI-X again."""
    guest, device = attach(host)
    pirqs = guest.enable_msix(ADDR, [0, 1])
    reply = guest.frontend.do_op(Cmd.DISABLE_MSI, ADDR)
    assert (reply.err, reply.value) == (XenPciError.SUCCESS, INTERRUPT_LINE)
    assert host.hypervisor.pirqs_of(1) == [] and device.msix_entries is None
    assert {("unmap_pirq", 1, p) for p in pirqs} <= set(host.hypervisor.calls)
    assert guest.enable_msi(ADDR)  # what the next driver load asks
    guest.disable_msi(ADDR)
    assert len(guest.enable_msix(ADDR, [2])) == 1


def test_msi_twice_is_refused_without_a_second_mapping(host: SimHost) -> None:
    guest, _ = attach(host)
    guest.enable_msi(ADDR)
    assert refused(lambda: guest.enable_msi(ADDR)) == XenPciError.OP_FAILED
    assert len(host.hypervisor.pirqs_of(1)) == 1


def test_msi_and_msix_exclude_each_other(host: SimHost) -> None:
    guest, _ = attach(host)
    guest.enable_msi(ADDR)
    assert refused(lambda: guest.enable_msix(ADDR, [0])) == XenPciError.OP_FAILED
    guest.disable_msi(ADDR)
    guest.enable_msix(ADDR, [0])
    assert refused(lambda: guest.enable_msi(ADDR)) == XenPciError.OP_FAILED
    assert refused(lambda: guest.enable_multi_msi(ADDR, 2)) == XenPciError.OP_FAILED
    assert refused(lambda: guest.enable_msix(ADDR, [1])) == XenPciError.OP_FAILED
    assert len(host.hypervisor.pirqs_of(1)) == 1


def test_a_device_without_the_capability_refuses(host: SimHost) -> None:
    guest, _ = attach(host, msi=False, msix=False)
    assert refused(lambda: guest.enable_msi(ADDR)) == XenPciError.OP_FAILED
    assert refused(lambda: guest.enable_msix(ADDR, [0])) == XenPciError.OP_FAILED
    assert host.hypervisor.calls == []


def test_multi_msi_maps_an_aligned_block_and_sets_the_enabled_count(host: SimHost) -> None:
    guest, device = attach(host)
    base = guest.enable_multi_msi(ADDR, 4)
    assert base % 4 == 0
    assert host.hypervisor.pirqs_of(1) == [base, base + 1, base + 2, base + 3]
    enabled = MSI.CONTROL.MULTIPLE_MESSAGE_ENABLE.get(guest.conf_read(ADDR, MSI_CONTROL, 2))
    assert enabled == 2  # 2**2 messages enabled
    assert device.msi_vectors == 4
    guest.disable_msi(ADDR)
    assert host.hypervisor.pirqs_of(1) == []


@pytest.mark.parametrize(("count", "hint"), [(16, 8), (3, 2), (0, 1), (1 << 31, 8)])
def test_multi_msi_beyond_the_device_says_what_it_would_take(
    host: SimHost, count: int, hint: int
) -> None:
    guest, _ = attach(host)
    with pytest.raises(MultiMsiRefused) as info:
        guest.enable_multi_msi(ADDR, count)
    assert info.value.err == XenPciError.OP_FAILED
    assert info.value.info == hint
    assert host.hypervisor.calls == []
    assert guest.enable_multi_msi(ADDR, hint) > 0


def test_enable_msix_gives_one_vector_per_entry(host: SimHost) -> None:
    guest, device = attach(host)
    vectors = guest.enable_msix(ADDR, [0, 3, 7])
    assert len(set(vectors)) == 3
    assert [c[4] for c in host.hypervisor.calls] == [0, 3, 7]
    assert device.msix_entries == (0, 3, 7)
    assert guest.conf_read(ADDR, MSIX_CONTROL, 2) & MSIX_ENABLE
    guest.disable_msix(ADDR)
    assert host.hypervisor.pirqs_of(1) == []
    assert not guest.conf_read(ADDR, MSIX_CONTROL, 2) & MSIX_ENABLE


def test_enable_msix_accepts_a_count(host: SimHost) -> None:
    guest, device = attach(host)
    assert len(guest.enable_msix(ADDR, 2)) == 2
    assert device.msix_entries == (0, 1)


@pytest.mark.parametrize(
    "entries",
    [
        [],
        list(range(MSIX_TABLE_SIZE + 1)),
        [MSIX_TABLE_SIZE],
        [0xFFFF],
        [2, 2],
    ],
)
def test_msix_entries_are_bounded_by_the_table(host: SimHost, entries: list[int]) -> None:
    guest, device = attach(host)
    assert refused(lambda: guest.enable_msix(ADDR, entries)) == XenPciError.OP_FAILED
    assert host.hypervisor.pirqs_of(1) == [] and device.msix_entries is None


@pytest.mark.parametrize("count", [129, 0xFFFFFFFF])
def test_msix_counts_beyond_the_page_are_refused(host: SimHost, count: int) -> None:
    guest, _ = attach(host)
    reply = guest.frontend.do_op(Cmd.ENABLE_MSIX, ADDR, value=count)
    assert reply.err == XenPciError.OP_FAILED
    assert host.hypervisor.calls == []


def test_msix_needs_memory_decoding(host: SimHost) -> None:
    guest, device = attach(host)
    command = COMMON_HEADER.COMMAND
    device.write(command.offset, command.width, 0)  # decoding off on the host (the pool: on)
    assert refused(lambda: guest.enable_msix(ADDR, [0])) == XenPciError.OP_FAILED
    device.write(command.offset, command.width, command.MEMORY_SPACE.mask)  # the host turns it on
    assert len(guest.enable_msix(ADDR, [0])) == 1


def test_a_failed_mapping_leaves_nothing_mapped(host: SimHost) -> None:
    tight = SimHost(hypervisor=SimHypervisor(nr_pirqs=2))
    try:
        guest, device = attach(tight)
        assert refused(lambda: guest.enable_msix(ADDR, [0, 1, 2])) == XenPciError.OP_FAILED
        assert tight.hypervisor.mapped == {}
        assert device.msix_entries is None
        tight.hypervisor.fail_next_map = True
        assert refused(lambda: guest.enable_msi(ADDR)) == XenPciError.OP_FAILED
        assert len(guest.enable_msix(ADDR, [0, 1])) == 2  # the state was not poisoned
    finally:
        tight.close()


def test_the_guest_going_tears_everything_down(host: SimHost) -> None:
    guest, device = attach(host)
    guest.enable_msix(ADDR, [0, 1, 2])
    resets = device.resets
    host.destroy_guest(1)
    assert host.hypervisor.pirqs_of(1) == []
    assert device.msix_entries is None and device.resets == resets + 1
    assert host.owner(ADDR) is None
    again = host.attach(2, [ADDR])
    assert len(again.enable_msix(ADDR, [0])) == 1


def test_detach_tears_down_that_device_only(host: SimHost) -> None:
    guest, device = attach(host)
    other = host.add_device("0000:04:00.0", nic_config(), bar_sizes={0: 0x4000})
    host.attach(1, ["0000:04:00.0"])
    guest.enable_msi(ADDR)
    kept = guest.enable_msi("0000:04:00.0")
    host.detach(1, ADDR)
    assert host.hypervisor.pirqs_of(1) == [kept]
    assert device.msi_vectors == 0 and other.msi_vectors == 1
    with pytest.raises(PciOpError) as info:
        guest.conf_read(ADDR, COMMON_HEADER.VENDOR_ID.offset, COMMON_HEADER.VENDOR_ID.width)
    assert info.value.err == XenPciError.DEV_NOT_FOUND


def test_a_hot_remove_waits_for_the_op_in_flight_on_the_device(host: SimHost) -> None:
    """An op already looked up when the device is hot-removed must not finish on a device
    given back to the pool: an MSI-X enable completing after the teardown would leave the
    guest a mapped PIRQ, and the device MSI-X, for a device it no longer owns."""
    guest, device = attach(host)
    host.add_device("0000:04:00.0", nic_config())
    host.attach(1, ["0000:04:00.0"])
    mapping, go = threading.Event(), threading.Event()
    real_map = host.hypervisor.map_pirq

    def slow_map(domid: int, address: str, kind: IrqKind, index: int, count: int) -> int:
        mapping.set()
        go.wait(5)
        return real_map(domid, address, kind, index, count)

    host.hypervisor.map_pirq = slow_map  # type: ignore[method-assign]
    enabling = threading.Thread(target=lambda: guest.enable_msix(ADDR, [0]))
    enabling.start()
    assert mapping.wait(5)
    removing = threading.Thread(target=lambda: host.detach(1, ADDR))
    removing.start()
    removing.join(0.5)
    go.set()
    enabling.join(5)
    removing.join(5)
    assert host.owner(ADDR) is None
    assert host.hypervisor.pirqs_of(1) == []
    assert device.msix_entries is None


@pytest.mark.parametrize("kind", ["msi", "msix"])
def test_a_device_that_fails_to_be_programmed_leaves_no_pirq_mapped(
    host: SimHost, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The physical bus may fail with an I/O error (a sysfs write to a device going away):
    the PIRQs mapped for the enable are unmapped, as for a refusal."""
    guest, device = attach(host)

    def broken(*_: object) -> None:
        raise OSError(5, "config write failed")

    monkeypatch.setattr(device, f"enable_{kind}", broken)
    enable = guest.enable_msi if kind == "msi" else lambda a: guest.enable_msix(a, [0])
    assert refused(lambda: enable(ADDR)) == XenPciError.OP_FAILED
    assert host.hypervisor.pirqs_of(1) == []
    monkeypatch.undo()
    enable(ADDR)  # and the bookkeeping lets the guest try again
    assert len(host.hypervisor.pirqs_of(1)) == 1


def test_a_device_failing_to_disable_msix_still_loses_its_pirqs_on_detach(
    host: SimHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    guest, device = attach(host)
    guest.enable_msix(ADDR, [0, 1])

    def broken() -> None:
        raise OSError(5, "config write failed")

    monkeypatch.setattr(device, "disable_msix", broken)
    host.detach(1, ADDR)
    assert host.hypervisor.pirqs_of(1) == []
    assert host.owner(ADDR) is None


def test_a_guest_repeating_refused_requests_cannot_flood_the_log(
    host: SimHost, caplog: pytest.LogCaptureFixture
) -> None:
    """As Linux's ratelimited warnings: a refusal is logged, but not once per op."""
    guest, _ = attach(host, msi=False)
    caplog.set_level(logging.INFO, logger="pciback.protocol.dispatch")
    for _ in range(200):
        assert refused(lambda: guest.enable_msi(ADDR)) == XenPciError.OP_FAILED
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refusals) <= 20


def test_a_flooding_guest_does_not_silence_another_guests_lines(
    host: SimHost, caplog: pytest.LogCaptureFixture
) -> None:
    """The limit is per guest: one guest spending its whole burst (and more) on refusals
    leaves another guest's first refusal in the log."""
    other = "0000:04:00.0"
    flooder, _ = attach(host, msi=False)
    host.add_device(other, nic_config(msi=False), bar_sizes={0: 0x4000})
    quiet = host.attach(2, [other])
    caplog.set_level(logging.INFO, logger="pciback.protocol.dispatch")
    for _ in range(100):
        assert refused(lambda: flooder.enable_msi(ADDR)) == XenPciError.OP_FAILED
    assert refused(lambda: quiet.enable_msi(other)) == XenPciError.OP_FAILED
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    flooded = [line for line in lines if line.startswith(ADDR)]
    assert 1 <= len(flooded) <= 20  # the flooder is limited ...
    assert [line for line in lines if line.startswith(other)] == [
        f"{other}: enable MSI refused: no MSI capability"
    ]  # ... and the other guest is not


def test_guest_connections_do_not_share_a_log_limit(host: SimHost) -> None:
    """Devices of one guest share its limit; another guest's devices have their own."""
    attach(host)
    second = "0000:03:00.1"
    other = "0000:04:00.0"
    host.add_device(second, nic_config(), bar_sizes={0: 0x4000})
    host.attach(1, [second])
    host.add_device(other, nic_config(), bar_sizes={0: 0x4000})
    host.attach(2, [other])
    limits = {}
    for domid, address in ((1, ADDR), (1, second), (2, other)):
        found = host.daemon.datapath.exported(domid, address)
        assert found is not None
        limits[address] = found[1].log_limit
    assert limits[ADDR] is limits[second]
    assert limits[other] is not limits[ADDR]
