"""The xenstore directories the toolstack role writes: libxl's layout, values and permissions
(libxl_pci.c; the lab's README lists what libxl wrote on Xen 4.17), in one transaction each, and
the xenstored ACLs that make the order matter."""

from __future__ import annotations

import errno
from functools import partial

import pytest

from pciback.ports.xenstore import Transaction, XenStoreError, run_transaction
from pciback.sim.toolstack import SimPcifront, SimToolstack
from pciback.sim.xenstore import SimXenStore
from pciback.toolstack import layout
from pciback.toolstack.layout import DeviceEntry

from .support import BE3, FE3, NET, NIC, NIC2, make_host, node_map

OPTS = "msitranslate=0,power_mgmt=0,permissive=0,rdm_policy=strict"
BACKEND = ("n0", "r3")
FRONTEND = ("n3", "r0")

# What libxl writes for a PV guest's first PCI device (the lab's README), nothing else.
LIBXL_BACKEND = {
    ".": ("", BACKEND),
    "frontend": (FE3, BACKEND),
    "frontend-id": ("3", BACKEND),
    "online": ("1", BACKEND),
    "state": ("1", BACKEND),
    "domain": ("guest3", BACKEND),
    "num_devs": ("1", BACKEND),
    "key-0": (NIC, BACKEND),
    "dev-0": (NIC, BACKEND),
    "state-0": ("1", BACKEND),
    "opts-0": (OPTS, BACKEND),
}
LIBXL_FRONTEND = {
    ".": ("", FRONTEND),
    "backend": (BE3, FRONTEND),
    "backend-id": ("0", FRONTEND),
    "state": ("1", FRONTEND),
}


def fresh_store() -> tuple[SimXenStore, SimToolstack]:
    store = SimXenStore()
    libxl = SimToolstack(store)
    libxl.make_domain(3)
    return store, libxl


def nodes(store: SimXenStore, root: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {
        path[len(root) + 1 :] or ".": (value, tuple(str(p) for p in store.tree.perms[path]))
        for path, value in store.tree.values.items()
        if path == root or path.startswith(root + "/")
    }


def test_a_first_device_is_libxls_layout_with_its_permissions() -> None:
    store, libxl = fresh_store()
    run_transaction(
        libxl.xs, lambda tx: layout.create_pci_backend(tx, 3, "guest3", DeviceEntry(NIC))
    )
    assert nodes(store, BE3) == LIBXL_BACKEND
    assert nodes(store, FE3) == LIBXL_FRONTEND


def test_the_options_and_guest_slot_as_libxl_formats_them() -> None:
    entry = DeviceEntry(NIC, vdevfn=5 << 3, permissive=True)
    assert entry.nodes(2) == {
        "key-2": NIC,
        "dev-2": NIC,
        "vdevfn-2": "28",  # "%x" of the devfn
        "opts-2": "msitranslate=0,power_mgmt=0,permissive=1,rdm_policy=strict",
        "state-2": "1",
    }


def test_a_hot_add_appends_and_asks_for_a_reconfiguration() -> None:
    store, libxl = fresh_store()
    run_transaction(
        libxl.xs, lambda tx: layout.create_pci_backend(tx, 3, "guest3", DeviceEntry(NIC))
    )
    index = run_transaction(
        libxl.xs, lambda tx: layout.add_device(tx, 3, DeviceEntry(NIC2), reconfigure=True)
    )
    assert index == 1
    got = nodes(store, BE3)
    assert {k: got[k][0] for k in ("key-1", "dev-1", "state-1", "opts-1", "num_devs", "state")} == {
        "key-1": NIC2,
        "dev-1": NIC2,
        "state-1": "1",
        "opts-1": OPTS,
        "num_devs": "2",
        "state": "7",  # Reconfiguring
    }


def test_removing_one_of_three_moves_the_next_down_as_libxl() -> None:
    store, libxl = fresh_store()
    third = "0000:03:00.2"
    run_transaction(
        libxl.xs, lambda tx: layout.create_pci_backend(tx, 3, "guest3", DeviceEntry(NIC))
    )
    for entry in (DeviceEntry(NIC2, 6 << 3), DeviceEntry(third)):
        run_transaction(
            libxl.xs, partial(layout.add_device, domid=3, device=entry, reconfigure=True)
        )
    libxl.xs.write(f"{BE3}/vdev-1", "0000:00:06.00")  # what the backend published
    libxl.xs.write(f"{BE3}/vdev-2", "0000:00:07.00")
    run_transaction(libxl.xs, lambda tx: layout.remove_device(tx, 3, 0))
    got = {k: v for k, (v, _) in nodes(store, BE3).items()}
    assert got["num_devs"] == "2"
    assert (got["dev-0"], got["key-0"], got["vdevfn-0"], got["vdev-0"]) == (
        NIC2,
        NIC2,
        "30",
        "0000:00:06.00",
    )
    assert (got["dev-1"], got["key-1"], got["vdev-1"]) == (third, third, "0000:00:07.00")
    assert "vdevfn-1" not in got  # the third had none: nothing moved into its place
    assert not any(k.endswith("-2") for k in got)


def test_the_attach_writes_libxls_nodes_and_the_backend_answers_in_them() -> None:
    with make_host() as host:
        host.create_domain(3)
        host.daemon_attach(3, NIC)
        got = node_map(host, BE3)
        # libxl's nodes, as libxl writes them; the backend's progress in its own nodes.
        for name, (value, acl) in LIBXL_BACKEND.items():
            if name not in ("state", "state-0"):
                assert got[name] == (value, acl), name
        assert got["state"] == ("3", BACKEND)  # Initialised: waiting for the frontend
        assert got["state-0"] == ("3", BACKEND)
        assert got["vdev-0"][1] == BACKEND and got["root_num"] == ("1", BACKEND)
        assert node_map(host, FE3) == LIBXL_FRONTEND


def test_a_guest_cannot_probe_a_directory_filled_before_it_was_given_to_it() -> None:
    """The lab's failure: nodes written under /local/domain/D/device inherit its permissions
    (dom0's, guest read-only), so a guest probing before the chmod cannot publish its page."""
    store, libxl = fresh_store()
    front = SimPcifront(store, 3)

    def careless(tx: Transaction) -> None:
        for name, value in (("backend", BE3), ("backend-id", "0"), ("state", "1")):
            tx.write(f"{FE3}/{name}", value)

    run_transaction(libxl.xs, careless)
    assert front.xs.read(f"{FE3}/state") == "1"  # it sees the directory ...
    with pytest.raises(XenStoreError) as info:
        front.publish()  # ... but cannot write its page reference in it
    assert info.value.errno == errno.EACCES
    run_transaction(libxl.xs, lambda tx: layout.path_cleanup(tx, FE3))
    run_transaction(
        libxl.xs, lambda tx: layout.create_pci_backend(tx, 3, "guest3", DeviceEntry(NET))
    )
    front.publish()  # the directory written as libxl does: the guest owns it
    assert front.state() == 3


def test_path_cleanup_removes_the_parents_it_empties_and_no_more() -> None:
    _, libxl = fresh_store()
    run_transaction(
        libxl.xs, lambda tx: layout.create_pci_backend(tx, 3, "guest3", DeviceEntry(NIC))
    )
    libxl.xs.write("/local/domain/0/backend/vbd/3/51712/state", "4")
    run_transaction(libxl.xs, lambda tx: layout.destroy_directories(tx, 3))
    assert libxl.xs.read("/local/domain/0/backend/pci") is None
    assert libxl.xs.read("/local/domain/0/backend/vbd/3/51712/state") == "4"
    assert libxl.xs.read("/local/domain/3/device/pci") is None
    assert libxl.xs.read("/local/domain/3/name") == "guest3"
