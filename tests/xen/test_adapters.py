"""The adapters' own logic over stand-in libraries: arguments reaching the C calls, results and
errors coming back, resources released. No Xen is involved (see pciback.xen)."""

from __future__ import annotations

import errno
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from pciback.engine.chain import CAP_NEXT
from pciback.errors import XenPciError
from pciback.generated.names import COMMON_HEADER, MSI, MSIX, TYPE0
from pciback.ports.hypervisor import HypervisorError, IrqKind
from pciback.ports.xenstore import WatchEvent, XenStoreError, run_transaction
from pciback.protocol.abi import Cmd, Flag
from pciback.protocol.abi import ffi as abi_ffi
from pciback.xen import atomic, gnttab, physdev
from pciback.xen._loader import XenUnavailable
from pciback.xen.atomic import BitAction, bit_op, word_of
from pciback.xen.environment import XenDataPath
from pciback.xen.evtchn import XenEventPort
from pciback.xen.gnttab import GrantTable
from pciback.xen.physdev import PhysdevCalls
from pciback.xen.xenctrl import SHUTDOWN_CRASH, XenHypervisor, msix_table_base
from pciback.xen.xenstore import XenStoreClient
from tests.xen.fakes import FakeEvtchn, FakeGnttab, FakeXencall, FakeXenctrl, FakeXenstore


def _need_libatomic() -> None:
    try:
        atomic.library()
    except XenUnavailable as exc:
        pytest.skip(str(exc))


# -- libxenctrl ------------------------------------------------------------------------------


def test_msi_maps_into_the_guest_with_bus_and_devfn() -> None:
    lib = FakeXenctrl(pirq=81)
    hv = XenHypervisor(lib=lib, table_base=lambda a: pytest.fail("MSI has no table"))
    assert hv.map_pirq(5, "0000:03:02.1", IrqKind.MSI, 0, 1) == 81
    assert lib.calls == [("map", 5, -1, -1, 2 << 3 | 1, 3, 0, 0)]
    # MAP_PIRQ_TYPE_MSI names segment 0: another segment would map some other device
    with pytest.raises(HypervisorError, match="segment 1"):
        hv.map_pirq(5, "0001:03:02.1", IrqKind.MSI, 0, 1)
    assert len(lib.calls) == 1


def test_msix_passes_the_entry_and_the_table_bar() -> None:
    lib = FakeXenctrl()
    hv = XenHypervisor(lib=lib, table_base=lambda a: 0xFE00_0000 if a == "0000:03:00.0" else 0)
    assert hv.map_pirq(5, "0000:03:00.0", IrqKind.MSIX, 7, 1) == 77
    assert lib.calls[-1] == ("map", 5, -1, -1, 0, 3, 7, 0xFE00_0000)


@pytest.mark.parametrize(
    ("domid", "address", "kind", "index", "count", "message"),
    [
        (0, "0000:03:00.0", IrqKind.MSI, 0, 1, "out of range"),  # dom0 is this host
        (0x7FF0, "0000:03:00.0", IrqKind.MSI, 0, 1, "out of range"),
        (5, "03:00.0", IrqKind.MSI, 0, 1, "not a PCI address"),
        (5, "0000:03:00.0", IrqKind.MSI, 0, 4, "MULTI_MSI"),
        (5, "0000:03:00.0", IrqKind.MSI, 1, 1, "MSI index 1"),
        (5, "0000:03:00.0", IrqKind.MSIX, 2048, 1, "no MSI-X entry 2048"),
    ],
)
def test_bad_requests_never_reach_the_hypervisor(
    domid: int, address: str, kind: IrqKind, index: int, count: int, message: str
) -> None:
    lib = FakeXenctrl()
    with pytest.raises(HypervisorError, match=message):
        XenHypervisor(lib=lib, table_base=lambda a: 1).map_pirq(domid, address, kind, index, count)
    assert lib.calls == []


def test_a_failed_hypercall_says_which_and_why() -> None:
    hv = XenHypervisor(lib=FakeXenctrl(fail={"map": errno.ENOSPC, "unmap": errno.EINVAL}))
    with pytest.raises(HypervisorError, match=r"xc_physdev_map_pirq_msi dom5 .*ENOSPC"):
        hv.map_pirq(5, "0000:03:00.0", IrqKind.MSI, 0, 1)
    with pytest.raises(HypervisorError, match=r"xc_physdev_unmap_pirq dom5 81: EINVAL"):
        hv.unmap_pirq(5, 81)


def test_an_unreadable_msix_table_is_a_hypervisor_error() -> None:
    def no_table(address: str) -> int:
        raise ValueError(f"{address} has no MSI-X capability")

    hv = XenHypervisor(lib=FakeXenctrl(), table_base=no_table)
    with pytest.raises(HypervisorError, match="no MSI-X capability"):
        hv.map_pirq(5, "0000:03:00.0", IrqKind.MSIX, 0, 1)


def test_kill_shuts_down_as_crashed_and_destroys_only_when_that_fails() -> None:
    lib = FakeXenctrl()
    hv = XenHypervisor(lib=lib)
    hv.kill_domain(9)
    assert lib.calls == [("shutdown", 9, SHUTDOWN_CRASH)]
    lib = FakeXenctrl(fail={"shutdown": errno.ESRCH})
    XenHypervisor(lib=lib).kill_domain(9)
    assert lib.calls == [("shutdown", 9, SHUTDOWN_CRASH), ("destroy", 9)]
    with pytest.raises(HypervisorError, match="out of range"):
        hv.kill_domain(0)


def test_a_closed_interface_refuses_calls() -> None:
    lib = FakeXenctrl()
    hv = XenHypervisor(lib=lib)
    hv.close()
    hv.close()
    assert lib.calls == [("close",)]
    with pytest.raises(HypervisorError, match="closed"):
        hv.unmap_pirq(5, 81)


def _fake_device(root: Path, address: str, config: bytes, resource: str) -> None:
    d = root / "devices" / address
    d.mkdir(parents=True)
    (d / "config").write_bytes(config)
    (d / "resource").write_text(resource)


def test_msix_table_base_is_the_bar_named_by_the_capability(tmp_path: Path) -> None:
    config = bytearray(256)
    msi, msix = 0x40, 0x50  # where this device has them
    config[COMMON_HEADER.STATUS.offset] = COMMON_HEADER.STATUS.CAPABILITIES_LIST.mask
    config[TYPE0.CAPABILITIES_POINTER.offset] = msi
    config[msi : msi + 2] = bytes([MSI.id, msix])  # MSI, then
    config[msix : msix + 2] = bytes([MSIX.id, 0x00])  # MSI-X: table in BAR 2 at offset 0x2000
    table = msix + MSIX.TABLE.offset
    config[table : table + MSIX.TABLE.width] = (0x2000 | 2).to_bytes(4, "little")
    bars = ["0x00000000fe000000 0x00000000fe0fffff 0x0000000000040200"] * 2
    bars.append("0x00000000fd000000 0x00000000fd003fff 0x0000000000040200")
    bars += ["0x0000000000000000 0x0000000000000000 0x0000000000000000"] * 4
    _fake_device(tmp_path, "0000:03:00.0", bytes(config), "\n".join(bars) + "\n")
    assert msix_table_base("0000:03:00.0", tmp_path) == 0xFD00_0000
    config[msi + CAP_NEXT] = 0  # MSI-X unlinked
    _fake_device(tmp_path, "0000:04:00.0", bytes(config), "\n".join(bars) + "\n")
    with pytest.raises(ValueError, match="no MSI-X"):
        msix_table_base("0000:04:00.0", tmp_path)


# -- libxenstore -------------------------------------------------------------------------------


@pytest.fixture
def store() -> tuple[XenStoreClient, FakeXenstore]:
    lib = FakeXenstore()
    client = XenStoreClient(lib=lib)
    client.libc = lib  # the fake's allocations are freed by the fake
    return client, lib


def test_store_reads_writes_lists_and_removes(store: tuple[XenStoreClient, FakeXenstore]) -> None:
    client, lib = store
    lib.nodes["/local/domain/0/backend/pci"] = b""
    client.write("/local/domain/0/backend/pci/5", "")
    client.write("/local/domain/0/backend/pci/5/0/state", "1")
    client.write("/local/domain/0/backend/pci/7", "caf\u00e9")
    assert client.read("/local/domain/0/backend/pci/5/0/state") == "1"
    assert client.read("/local/domain/0/backend/pci/7") == "caf\u00e9"
    assert client.read("/nowhere") is None
    assert client.list("/local/domain/0/backend/pci") == ["5", "7"]
    assert client.list("/nowhere") is None
    client.rm("/local/domain/0/backend/pci/5")
    client.rm("/local/domain/0/backend/pci/5")  # absent: not an error
    assert client.list("/local/domain/0/backend/pci") == ["7"]
    assert lib.live == {}  # every result handed back to free()


def test_store_errors_carry_errno(store: tuple[XenStoreClient, FakeXenstore]) -> None:
    client, _ = store
    with pytest.raises(XenStoreError) as info:
        client.write("/denied/x", "1")
    assert info.value.errno == errno.EACCES
    with pytest.raises(XenStoreError) as info:
        client.read("relative/path")
    assert info.value.errno == errno.EINVAL
    with pytest.raises(XenStoreError) as info:
        client.write("/big", "x" * 5000)
    assert info.value.errno == errno.E2BIG


def test_transactions_retry_on_conflict(store: tuple[XenStoreClient, FakeXenstore]) -> None:
    client, lib = store
    lib.tx_conflicts = 2

    def body(tx: Any) -> str:
        tx.write("/local/domain/0/x", "1")
        return "done"

    assert run_transaction(client, body) == "done"
    ends = [c for c in lib.calls if c[0] == "end"]
    assert [c[2] for c in ends] == [False, False, False]
    writes = [c for c in lib.calls if c[0] == "write"]
    assert all(w[1] == e[1] for w, e in zip(writes, ends, strict=True))  # each in its own tx
    tx = client.transaction()
    tx.abort()
    tx.abort()
    assert lib.calls[-1][2] is True


def test_watch_events_arrive_through_the_fd(store: tuple[XenStoreClient, FakeXenstore]) -> None:
    client, lib = store
    client.watch("/local/domain/0/backend/pci", "be")
    assert lib.watches == [("/local/domain/0/backend/pci", "be")]
    assert client.next_event(0.0) is None
    threading.Timer(0.05, lib.fire, ("/local/domain/0/backend/pci/5", "be")).start()
    event = client.next_event(5.0)
    assert event is not None and (event.path, event.token) == (
        "/local/domain/0/backend/pci/5",
        "be",
    )
    lib.fire("/a", "t")
    lib.fire("/b", "t")
    assert [client.next_event(0.0), client.next_event(None)] == [
        WatchEvent("/a", "t"),
        WatchEvent("/b", "t"),
    ]
    client.unwatch("/local/domain/0/backend/pci", "be")
    with pytest.raises(XenStoreError):
        client.unwatch("/local/domain/0/backend/pci", "be")
    client.close()
    with pytest.raises(XenStoreError, match="closed"):
        client.read("/a")


def test_wake_ends_a_wait_without_an_event(store: tuple[XenStoreClient, FakeXenstore]) -> None:
    client, lib = store
    client.watch("/local/domain/0/backend/pci", "be")
    client.wake()  # before the wait: the wait returns at once
    assert client.next_event(None) is None
    threading.Timer(0.05, client.wake).start()  # during a wait that would last forever
    assert client.next_event(None) is None
    lib.fire("/a", "t")
    client.wake()
    assert client.next_event(None) == WatchEvent("/a", "t")  # a pending event still comes
    client.close()
    client.wake()  # after close: nothing to wake, and no error


def test_a_watch_fd_above_1023_still_wakes_the_wait(
    store: tuple[XenStoreClient, FakeXenstore],
) -> None:
    """select() refuses descriptors from 1024 up; a dom0 serving hundreds of guests has them."""
    client, lib = store
    high = 1500
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= high:
        pytest.skip(f"the open-file limit ({soft}) does not allow fd {high}")
    os.dup2(lib.fd, high)
    os.close(lib.fd)
    lib.fd = high
    client.watch("/local/domain/0/backend/pci", "be")
    threading.Timer(0.05, lib.fire, ("/local/domain/0/backend/pci/9", "be")).start()
    assert client.next_event(5.0) == WatchEvent("/local/domain/0/backend/pci/9", "be")
    assert client.next_event(0.01) is None
    client.close()
    assert lib.live == {}


# -- libxengnttab + libxenevtchn: one connection end to end ---------------------------------


def _datapath(gnt: FakeGnttab, evt: FakeEvtchn) -> XenDataPath:
    unused = cast(Any, None)  # no device is exported in these tests
    return XenDataPath(
        GrantTable(lib=gnt),
        unused,
        unused,
        unused,
        unused,
        bind=lambda domid, port: XenEventPort(domid, port, lib=evt),
    )


def test_a_granted_page_and_bound_port_serve_the_guest_then_are_released() -> None:
    _need_libatomic()
    gnt, evt = FakeGnttab(), FakeEvtchn(local_port=40)
    memory = gnt.grant(5, 9)
    path = _datapath(gnt, evt)
    path.connect(5, 0, 9, 11)
    assert ("bind", 5, 11) in evt.calls
    page: Any = abi_ffi.cast("struct xen_pci_sharedinfo *", memory)
    page.op.cmd = Cmd.CONF_READ
    page.op.size = 4
    flags = word_of(gnttab.ffi.buffer(memory))
    bit_op(flags, Flag.PCIF_ACTIVE, BitAction.SET)  # pcifront raises the op...
    evt.deliver(40)  # ...and notifies
    deadline = time.monotonic() + 5
    while bit_op(flags, Flag.PCIF_ACTIVE, BitAction.TEST) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not bit_op(flags, Flag.PCIF_ACTIVE, BitAction.TEST)
    assert int(page.op.err) == XenPciError.DEV_NOT_FOUND  # nothing exported at 0000:00:00.0
    assert evt.notified == [40]
    while ("unmask", 40) not in evt.calls and time.monotonic() < deadline:
        time.sleep(0.005)  # taken when the service thread goes back to sleep
    assert ("unmask", 40) in evt.calls
    path.disconnect(5, 0)
    address = int(abi_ffi.cast("uintptr_t", page))
    assert ("unbind", 40) in evt.calls and ("close", 40) in evt.calls
    assert ("unmap", address, 1) in gnt.calls
    path.disconnect(5, 0)  # idempotent
    assert gnt.calls.count(("unmap", address, 1)) == 1


def test_a_failed_bind_unmaps_the_page_it_had_mapped() -> None:
    _need_libatomic()
    gnt, evt = FakeGnttab(), FakeEvtchn(bind_errno=errno.EINVAL)
    memory = gnt.grant(5, 9)
    path = _datapath(gnt, evt)
    with pytest.raises(OSError, match="binding port 11 of domain 5"):
        path.connect(5, 0, 9, 11)
    address = int(abi_ffi.cast("uintptr_t", memory))
    assert ("unmap", address, 1) in gnt.calls
    assert ("close", 40) in evt.calls  # the event channel handle too


def test_an_ungranted_reference_is_an_error_not_a_mapping() -> None:
    _need_libatomic()
    table = GrantTable(lib=FakeGnttab())
    with pytest.raises(OSError, match="cannot map grant 9 of domain 5"):
        table.map_page(5, 9)
    with pytest.raises(ValueError, match="32-bit"):
        table.map_page(5, 1 << 32)
    with pytest.raises(ValueError, match="out of range"):
        table.map_page(0, 9)


def test_event_port_arguments_are_checked_before_any_open() -> None:
    evt = FakeEvtchn()
    with pytest.raises(ValueError, match="port 0"):
        XenEventPort(5, 0, lib=evt)
    with pytest.raises(ValueError, match="out of range"):
        XenEventPort(0, 3, lib=evt)
    assert evt.calls == []


def test_closing_a_port_wakes_its_sleeper_first() -> None:
    evt = FakeEvtchn()
    port = XenEventPort(5, 3, lib=evt)
    woke: list[bool] = []
    sleeper = threading.Thread(target=lambda: woke.append(port.wait(None)))
    sleeper.start()
    time.sleep(0.02)
    port.close()
    sleeper.join(5)
    assert woke == [False] and port.closed
    assert evt.calls[-2:] == [("unbind", 40), ("close", 40)]
    port.kick_self()  # harmless after close
    assert port.wait(0) is False


def test_reconnecting_releases_the_old_page_and_port_and_suspend_releases_the_new() -> None:
    _need_libatomic()
    gnt, evt = FakeGnttab(), FakeEvtchn(local_port=40)
    old, new = gnt.grant(5, 9), gnt.grant(5, 10)
    path = _datapath(gnt, evt)
    path.connect(5, 0, 9, 11)
    path.connect(5, 0, 10, 12)  # the frontend reconfigured: a new page and port
    unmapped = [c[1] for c in gnt.calls if c[0] == "unmap"]
    assert unmapped == [int(abi_ffi.cast("uintptr_t", old))]
    assert [c for c in evt.calls if c[0] in ("unbind", "close")] == [("unbind", 40), ("close", 40)]
    path.suspend(5, 0)  # the daemon stops: the guest keeps its end, ours is let go
    unmapped = [c[1] for c in gnt.calls if c[0] == "unmap"]
    assert unmapped[-1] == int(abi_ffi.cast("uintptr_t", new))
    assert evt.calls[-2:] == [("unbind", 41), ("close", 41)]
    path.close()
    assert len([c for c in gnt.calls if c[0] == "unmap"]) == 2


# -- libxencall: PHYSDEVOP_prepare_msix / release_msix -----------------------------------------


def test_prepare_and_release_msix_name_the_device_in_a_hypercall_buffer() -> None:
    lib = FakeXencall()
    calls = PhysdevCalls(lib=lib)
    hv = XenHypervisor(lib=FakeXenctrl(), physdev=calls)
    hv.prepare_msix("0000:00:03.0")
    hv.release_msix("0000:05:1f.7")
    op = physdev.HYPERVISOR_PHYSDEV_OP
    assert [c for c in lib.calls if c[0] == "call"] == [
        ("call", op, physdev.PHYSDEVOP_PREPARE_MSIX, 0, 0, 3 << 3),
        ("call", op, physdev.PHYSDEVOP_RELEASE_MSIX, 0, 5, 0x1F << 3 | 7),
    ]
    assert lib.calls.count(("free",)) == 2  # every buffer given back
    hv.close()
    assert ("close",) in lib.calls


def test_a_refused_preparation_carries_its_errno() -> None:
    calls = PhysdevCalls(lib=FakeXencall(fail=errno.EBUSY))
    with pytest.raises(HypervisorError, match="EBUSY") as info:
        calls.prepare_msix("0000:00:03.0")
    assert info.value.code == errno.EBUSY
    with pytest.raises(HypervisorError, match="not a PCI address"):
        calls.prepare_msix("00:03.0")
    hv = XenHypervisor(lib=FakeXenctrl())  # no libxencall: refused, with the reason
    with pytest.raises(HypervisorError, match="libxencall"):
        hv.prepare_msix("0000:00:03.0")
