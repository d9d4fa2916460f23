"""The daemon's toolstack role end to end on the simulated host: attach to a paused domain and
to a running guest, what Xen is asked to grant, detach leaving nothing behind, refusals, and the
clean-up after a guest is destroyed."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator

import pytest

from pciback.generated.names import COMMON_HEADER
from pciback.ports.xenstore import XenStoreError
from pciback.sim import SimHost, SimHostError
from pciback.sim.toolstack import SimPcifront
from pciback.toolstack.grants import Grants, grants_for, subtract
from pciback.xenbus.states import XenbusState as S

from .support import BE3, DOM0_IRQ, NET, NIC, NIC2, SPARE, make_host, nic_with_io, node_map

VENDOR_ID = COMMON_HEADER.VENDOR_ID

# nic_with_io's resources: 128 KiB of memory at 0xfebc0000, 32 ports at 0xc000, a 256 KiB ROM
# at 0xfeb80000, and dom0's IRQ 23 (its dump's interrupt line says 11).
# Xen's rangeset merges the adjacent ROM and BAR: one inclusive range of pages.
NIC_MEMORY = [(0xFEB80, 0xFEBC0 + 31)]


@pytest.fixture
def host() -> Iterator[SimHost]:
    h = make_host()
    yield h
    h.close()


def no_pci_nodes(host: SimHost) -> bool:
    return not [p for p in host.env.store.nodes if "/pci" in p]


def test_grants_follow_the_bars_and_dom0s_irq() -> None:
    grants = grants_for(nic_with_io())
    assert grants == Grants(
        iomem=((0xFEBC0, 32), (0xFEB80, 64)), ioports=((0xC000, 0x20),), gsi=DOM0_IRQ
    )
    assert Grants.from_json(grants.to_json()) == grants
    unaligned = subtract([(10, 10)], [(12, 2), (19, 5)])
    assert unaligned == [(10, 2), (14, 5)]


def test_a_paused_domain_gets_the_device_and_finds_it_when_it_boots(host: SimHost) -> None:
    host.create_domain(3)
    result = host.daemon_attach(3, NIC)
    assert result["state"] == "taken" and not result["hot"]
    assert host.owner(NIC) == 3  # claimed by the backend before the guest runs
    granted = host.env.domains.granted(3)
    assert granted.iomem == NIC_MEMORY
    assert granted.ioports == [(0xC000, 0xC01F)]
    assert granted.pirqs == {DOM0_IRQ: DOM0_IRQ} and granted.irqs == [DOM0_IRQ]
    assert granted.devices == [NIC]
    guest = host.unpause(3)
    found = guest.enumerate()
    assert [(d.vendor, d.device) for d in found] == [(0x8086, 0x10D3)]
    assert guest.conf_read(found[0].address, VENDOR_ID.offset, VENDOR_ID.width) == 0x8086
    assert host.daemon.status()["attachments"] == [{"domid": 3, "device": NIC, "phase": "attached"}]


def test_a_running_guest_gets_a_second_device_by_reconfiguration(host: SimHost) -> None:
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    guest = host.unpause(3)
    toolstack = host.daemon.toolstack
    toolstack.drive = lambda: 0  # the guest does not answer yet: see what was written
    result = host.daemon.handle({"op": "attach", "domid": 3, "device": NIC2})
    assert result["state"] == "pending" and result["hot"]
    written = {k: v for k, (v, _) in node_map(host, BE3).items()}
    assert (written["state"], written["num_devs"], written["dev-1"], written["state-1"]) == (
        str(int(S.RECONFIGURING)),
        "2",
        NIC2,
        "1",
    )
    guest.domain.settled()
    assert sorted(guest.devices) == ["0000:00:00.0", "0000:00:00.1"]
    assert host.owner(NIC2) == 3
    assert host.env.domains.granted(3).devices == [NIC, NIC2]


def test_detach_leaves_no_node_and_nothing_granted(host: SimHost) -> None:
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    guest = host.unpause(3)
    resets = host.physical(NIC).resets
    result = host.daemon_detach(3, NIC)
    assert result == {"domid": 3, "device": NIC, "state": "released", "problems": []}
    assert no_pci_nodes(host)
    assert host.env.domains.leftovers() == {}
    assert host.owner(NIC) is None and host.is_seized(NIC)
    assert host.physical(NIC).resets > resets  # the pool reset it on release
    assert guest.devices == [] and host.daemon.status()["attachments"] == []
    # Back in the pool, it can go to another guest.
    host.create_domain(4)
    host.daemon_attach(4, NIC)
    assert host.owner(NIC) == 4


def test_detaching_one_of_two_keeps_the_other_and_its_shared_gsi(host: SimHost) -> None:
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    guest = host.unpause(3)
    host.daemon_attach(3, NIC2)  # same INTx line as NIC: GSI 23 shared
    host.daemon_detach(3, NIC)
    written = {k: v for k, (v, _) in node_map(host, BE3).items()}
    assert (written["num_devs"], written["dev-0"], written["key-0"]) == ("1", NIC2, NIC2)
    assert not any(k.endswith("-1") for k in written)
    assert guest.devices == ["0000:00:00.1"]
    granted = host.env.domains.granted(3)
    assert granted.devices == [NIC2]
    assert granted.pirqs == {DOM0_IRQ: DOM0_IRQ}  # NIC2 still uses it
    host.daemon_detach(3, NIC2)
    assert host.env.domains.leftovers() == {} and no_pci_nodes(host)


def test_permissive_and_interrupt_control_last_as_long_as_the_attachment(host: SimHost) -> None:
    host.create_domain(3)
    host.daemon_attach(3, NIC, vdev=5, permissive=True, interrupt_control=True)
    written = {k: v for k, (v, _) in node_map(host, BE3).items()}
    assert written["opts-0"].startswith("msitranslate=0,power_mgmt=0,permissive=1,")
    assert written["vdevfn-0"] == "28"
    pool = host.daemon.pool
    assert pool.permissive() == [NIC] and pool.interrupt_control() == [NIC]
    host.daemon_detach(3, NIC)
    assert pool.permissive() == [] and pool.interrupt_control() == []


@pytest.mark.parametrize(
    ("domid", "device", "message"),
    [
        (3, SPARE, f"{SPARE} is not assignable: run pciback assignable-add {SPARE}"),
        (3, "0000:09:00.0", "no PCI device 0000:09:00.0 on this host"),
        (9, NIC, "no domain 9 (or it is dying)"),
        (0, NIC, "domain 0 is dom0"),
        (40000, NIC, "domain id 40000 out of range"),
        (3, "03:00", "expected"),
    ],
)
def test_refusals_are_one_line_and_change_nothing(
    host: SimHost, domid: int, device: str, message: str
) -> None:
    host.create_domain(3)
    with pytest.raises(ValueError) as info:
        host.daemon.handle({"op": "attach", "domid": domid, "device": device})
    assert message in str(info.value) and "\n" not in str(info.value)
    assert host.env.domains.calls == [] and no_pci_nodes(host)


def test_a_device_another_guest_holds_names_that_guest(host: SimHost) -> None:
    host.create_domain(3)
    host.create_domain(4)
    host.daemon_attach(3, NIC)
    with pytest.raises(SimHostError, match=f"^{NIC} is assigned to domain 3$"):
        host.daemon_attach(4, NIC)
    with pytest.raises(SimHostError, match="already assigned to domain 3"):
        host.daemon_attach(3, NIC)
    host.attach(5, [NET])  # the libxl stand-in's guest: held through the ownership registry
    with pytest.raises(SimHostError, match=f"^{NET} is assigned to domain 5$"):
        host.daemon_attach(4, NET)
    with pytest.raises(SimHostError, match="not attached to domain 4 by pciback"):
        host.daemon_detach(4, NIC)


def test_two_devices_before_the_first_boot(host: SimHost) -> None:
    """Before the guest's pcifront connects, a further device joins the list without a
    reconfiguration (libxl's `starting` form); the guest finds both when it boots."""
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    result = host.daemon_attach(3, NIC2)
    assert result["state"] == "taken" and not result["hot"]
    assert {k: v for k, (v, _) in node_map(host, BE3).items()}["num_devs"] == "2"
    guest = host.unpause(3)
    assert [d.address for d in guest.enumerate()] == ["0000:00:00.0", "0000:00:00.1"]
    assert host.env.domains.granted(3).devices == [NIC, NIC2]
    assert host.daemon_attach(3, NET)["hot"]  # once it runs, a further one is a hot plug
    assert len(guest.devices) == 3


def test_a_paused_domains_only_device_can_be_taken_back(host: SimHost) -> None:
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    host.daemon_detach(3, NIC)
    assert no_pci_nodes(host) and host.env.domains.leftovers() == {}
    assert host.owner(NIC) is None


def test_a_guest_that_never_answers_keeps_its_device(host: SimHost) -> None:
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    host.unpause(3)
    host.daemon.toolstack.drive = host.daemon.pump  # the guest's pcifront is hung
    with pytest.raises(SimHostError, match=r"did not let go of it .* completes when it does"):
        host.daemon_detach(3, NIC)
    assert host.owner(NIC) == 3
    assert host.env.domains.granted(3).devices == [NIC]
    assert host.daemon.status()["attachments"][0]["phase"] == "detaching"


def test_a_guest_that_lets_go_late_finishes_the_detach(host: SimHost) -> None:
    """Seen on real Xen under emulation: an xHCI driver took longer than the 10 s wait to let
    go. Its answer, when it comes, completes the detach: nodes, grants and record gone."""
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    host.daemon_attach(3, NIC2)
    guest = host.unpause(3)
    drive = host.daemon.toolstack.drive
    assert drive is not None
    host.daemon.toolstack.drive = host.daemon.pump  # the guest does not answer in time
    with pytest.raises(SimHostError, match="did not let go"):
        host.daemon_detach(3, NIC)
    assert host.env.domains.granted(3).devices == [NIC, NIC2]
    host.daemon.toolstack.drive = drive
    for _ in range(50):  # the guest's pcifront answers at last
        if not drive():
            break
    assert host.owner(NIC) is None and host.owner(NIC2) == 3
    assert host.env.domains.granted(3).devices == [NIC2]
    assert host.daemon.status()["attachments"] == [
        {"domid": 3, "device": NIC2, "phase": "attached"}
    ]
    assert NIC not in str(node_map(host, BE3))
    assert [d.address for d in guest.enumerate()] == ["0000:00:00.1"]
    host.daemon_detach(3, NIC2)  # the other one leaves as usual
    assert host.env.domains.leftovers() == {} and no_pci_nodes(host)


def test_without_an_iommu_the_attach_warns_and_works(
    host: SimHost, caplog: pytest.LogCaptureFixture
) -> None:
    host.env.domains.iommu = False
    host.create_domain(3)
    with caplog.at_level(logging.WARNING, logger="pciback.toolstack"):
        host.daemon_attach(3, NIC)
    assert any("refuse the guest's MSI/MSI-X" in r.getMessage() for r in caplog.records)
    host.unpause(3)
    host.daemon_detach(3, NIC)
    assert host.env.domains.leftovers() == {}


def test_a_failed_grant_undoes_the_others(host: SimHost) -> None:
    host.create_domain(3)
    host.env.domains.fail["irq_permission"] = 1  # EPERM, after the BARs and the PIRQ
    with pytest.raises(SimHostError, match=r"irq_permission .* nothing was left granted"):
        host.daemon_attach(3, NIC)
    assert host.env.domains.leftovers() == {} and no_pci_nodes(host)
    assert host.daemon.status()["attachments"] == []
    host.daemon_attach(3, NIC)  # and it can be tried again


def test_a_destroyed_guests_directory_is_removed_and_its_device_returns(host: SimHost) -> None:
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    host.unpause(3)
    host.destroy_guest(3)  # xl destroy: libxl removes the guest's home, not our directory
    assert no_pci_nodes(host)
    assert host.owner(NIC) is None and host.is_seized(NIC)
    assert host.daemon.status()["attachments"] == []
    assert host.daemon.backends.backends == {}
    host.create_domain(4)
    host.daemon_attach(4, NIC)


def test_assignable_commands_over_the_pool(host: SimHost) -> None:
    handle = host.daemon.handle
    assert handle({"op": "assignable_list"}) == [NIC, NIC2, NET]
    assert handle({"op": "assignable_add", "device": SPARE}) == {"device": SPARE, "seized": True}
    assert handle({"op": "assignable_add", "device": SPARE})["seized"] is False
    host.create_domain(3)
    host.daemon_attach(3, SPARE)
    with pytest.raises(ValueError, match=f"assigned to domain 3: run pciback detach 3 {SPARE}"):
        handle({"op": "assignable_remove", "device": SPARE})
    host.daemon_detach(3, SPARE)
    assert SPARE in host.env.domains.quarantined  # where Xen 4.17 puts what a guest gave back
    assert handle({"op": "assignable_remove", "device": SPARE, "rebind": True}) == {
        "device": SPARE,
        "driver": "host",
    }
    assert host.env.bus.driver(SPARE) == "host" and not host.is_seized(SPARE)
    assert SPARE not in host.env.domains.quarantined  # dom0's again: its driver can DMA
    handle({"op": "assignable_remove", "device": NET})
    assert host.env.bus.driver(NET) is None  # as xl without -r: unbound
    assert NET not in host.daemon.pool.slots()


def test_a_guest_whose_backend_failed_is_detached_whole(host: SimHost) -> None:
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    front = SimPcifront(host.env.store, 3)
    front.publish(magic="6")  # a pcifront of another protocol version: the backend gives up
    host.daemon.pump()
    assert front.backend_state() == S.CLOSING
    assert "version mismatch" in (host.daemon.toolstack._backend_error(3) or "")
    with pytest.raises(
        SimHostError, match=r"is closing \(.*version mismatch.*\); detach its devices first"
    ):
        host.daemon_attach(3, NIC2)
    host.daemon_detach(3, NIC)
    assert no_pci_nodes(host)  # the error report went with the directories
    assert host.env.domains.leftovers() == {} and host.owner(NIC) is None


def test_a_device_another_toolstack_detached_is_forgotten_when_asked_for(
    host: SimHost,
) -> None:
    """libxl finds devices through the backend directory: `xl pci-detach` can unplug one the
    daemon attached. The attachment is then forgotten (and revoked) when the device is next
    asked for, instead of keeping it from every other guest."""
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    guest = host.unpause(3)
    index = host.toolstack.hot_remove(3, NIC)  # what xl pci-detach writes
    guest.domain.settled()
    host.toolstack.finish_remove(3, index)
    assert host.owner(NIC) is None
    host.create_domain(4)
    host.daemon_attach(4, NIC)
    assert set(host.env.domains.leftovers()) == {4}
    assert [a["domid"] for a in host.daemon.status()["attachments"]] == [4]


def test_a_running_guest_without_pci_gets_its_first_device(host: SimHost) -> None:
    host.create_domain(3)
    guest = host.unpause(3)  # booted with no PCI device at all
    assert guest.devices == []
    result = host.daemon_attach(3, NET)
    assert not result["hot"]  # a new PCI device: the guest's pcifront probes it
    assert [(d.vendor, d.device) for d in guest.enumerate()] == [(0x1AF4, 0x1041)]
    assert host.env.domains.granted(3).devices == [NET]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"op": "attach", "domid": "3", "device": NIC}, "'domid' must be a number"),
        ({"op": "attach", "domid": True, "device": NIC}, "'domid' must be a number"),
        ({"op": "detach", "domid": 3}, "'device' must be a device"),
        ({"op": "attach", "domid": 3, "device": NIC * 20}, "'device' must be a device"),
        ({"op": "attach", "domid": 3, "device": NIC, "permissive": 1}, "true or false"),
        ({"op": "attach", "domid": 3, "device": NIC, "vdev": 40}, "slot 0x28 out of range"),
        ({"op": "assignable_remove", "device": NIC, "rebind": "no"}, "true or false"),
    ],
)
def test_malformed_requests_are_refused_by_field(
    host: SimHost, request_: dict[str, object], message: str
) -> None:
    host.create_domain(3)
    with pytest.raises(ValueError, match=message):
        host.daemon.handle(request_)
    assert host.env.domains.calls == []


def test_a_failing_store_is_a_one_line_refusal(
    host: SimHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    host.create_domain(3)

    def broken(path: str) -> str | None:
        raise XenStoreError(errno.EIO, path, "xs_read: EIO")

    monkeypatch.setattr(host.daemon.toolstack.store, "read", broken)
    with pytest.raises(ValueError) as info:
        host.daemon.handle({"op": "attach", "domid": 3, "device": NIC})
    assert str(info.value).startswith("attach: ") and "EIO" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_device_that_cannot_leave_quarantine_is_not_given_to_a_host_driver(
    host: SimHost,
) -> None:
    host.create_domain(3)
    host.daemon_attach(3, NIC)
    host.destroy_guest(3)  # Xen quarantines the dead guest's device
    assert NIC in host.env.domains.quarantined
    host.env.domains.fail["dequarantine"] = errno.EPERM
    with pytest.raises(ValueError, match="quarantine"):
        host.daemon.handle({"op": "assignable_remove", "device": NIC, "rebind": True})
    assert host.is_seized(NIC)  # still the pool's: a host driver would DMA into a scratch page
