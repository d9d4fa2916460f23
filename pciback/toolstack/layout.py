"""The xenstore layout libxl writes for a PV guest's PCI devices (tools/libs/light/libxl_pci.c:
libxl__create_pci_backend, libxl_create_pci_backend_device, libxl__device_pci_add_xenstore,
libxl__device_pci_remove_xenstore; libxl_device.c and libxl_xshelp.c for the generic removal
and path clean-up), as transaction bodies.

    /local/domain/0/backend/pci/D/0    owner dom0, the guest may read (n0 rD)
        frontend = /local/domain/D/device/pci/0   frontend-id = D   online = 1   state = 1
        domain = <name>   num_devs = N
        key-i = dev-i = DDDD:BB:DD.F   state-i = 1   [vdevfn-i = %x]
        opts-i = msitranslate=0,power_mgmt=0,permissive=P,rdm_policy=strict
    /local/domain/D/device/pci/0       owner the guest, dom0 may read (nD r0)
        backend = /local/domain/0/backend/pci/D/0   backend-id = 0   state = 1

Each directory is created, given its permissions and filled inside one transaction: a guest
must never see its frontend directory before it owns it (it could not write its page reference
and its probe would fail for good), and a watching backend must never see half a directory.
"""

from __future__ import annotations

from dataclasses import dataclass

from pciback.ports.xenstore import Access, Permission, StoreOps, join
from pciback.xenbus.backend import BACKEND_ROOT, ERROR_ROOT
from pciback.xenbus.parse import MAX_DEVS, XenbusConfigError, parse_bdf
from pciback.xenbus.states import XenbusState, state_or_unknown

S = XenbusState
DEVID = 0  # libxl gives a guest one PCI backend device, devid 0
# The per-device nodes libxl moves or removes on a hot unplug, in its order.
DEVICE_KEYS = ("state", "key", "dev", "vdev", "opts", "vdevfn", "name")
MAX_CLEANUP_DEPTH = 16


def domain_path(domid: int) -> str:
    return f"/local/domain/{domid}"


def backend_path(domid: int, devid: int = DEVID) -> str:
    return f"{BACKEND_ROOT}/{domid}/{devid}"


def frontend_path(domid: int, devid: int = DEVID) -> str:
    return f"{domain_path(domid)}/device/pci/{devid}"


def backend_perms(domid: int) -> tuple[Permission, ...]:
    """libxl's be_perms: dom0 owns it, the guest may read it."""
    return (Permission(0, Access.NONE), Permission(domid, Access.READ))


def frontend_perms(domid: int) -> tuple[Permission, ...]:
    """libxl's fe_perms: the guest owns it, dom0 may read it."""
    return (Permission(domid, Access.NONE), Permission(0, Access.READ))


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One device as libxl_create_pci_backend_device lists it."""

    address: str  # DDDD:BB:DD.F, libxl's PCI_BDF
    vdevfn: int | None = None  # the guest slot asked for, as devfn (slot << 3)
    permissive: bool = False

    def opts(self) -> str:
        # msitranslate and power_mgmt are xl's defaults (0); rdm_policy libxl's ("strict").
        return f"msitranslate=0,power_mgmt=0,permissive={int(self.permissive)},rdm_policy=strict"

    def nodes(self, index: int) -> dict[str, str]:
        nodes = {f"key-{index}": self.address, f"dev-{index}": self.address}
        if self.vdevfn:
            nodes[f"vdevfn-{index}"] = f"{self.vdevfn:x}"
        nodes[f"opts-{index}"] = self.opts()
        nodes[f"state-{index}"] = str(int(S.INITIALISING))
        return nodes


def create_pci_backend(tx: StoreOps, domid: int, name: str | None, device: DeviceEntry) -> None:
    """A guest's first PCI device: both directories, libxl__create_pci_backend plus the device
    nodes libxl__device_pci_add_xenstore writes in the same transaction. The frontend's state
    is the last node written."""
    be, fe = backend_path(domid), frontend_path(domid)
    tx.rm(be)
    tx.mkdir(be)
    tx.set_permissions(be, backend_perms(domid))
    _write_all(
        tx,
        be,
        {
            "frontend": fe,
            "frontend-id": str(domid),
            "online": "1",
            "state": str(int(S.INITIALISING)),
            **({"domain": name} if name is not None else {}),
            **device.nodes(0),
            "num_devs": "1",
        },
    )
    tx.rm(fe)
    tx.mkdir(fe)
    tx.set_permissions(fe, frontend_perms(domid))
    _write_all(tx, fe, {"backend": be, "backend-id": "0", "state": str(int(S.INITIALISING))})


def add_device(tx: StoreOps, domid: int, device: DeviceEntry, *, reconfigure: bool) -> int:
    """A further device: its nodes at index num_devs and num_devs + 1, in one transaction; with
    `reconfigure` (a running guest: libxl's hot add) the backend to Reconfiguring as well,
    without (the guest has not connected yet: libxl's `starting`) the backend takes the
    longer list when the frontend connects. Returns the index."""
    be = backend_path(domid)
    index = read_count(tx, be)
    if index >= MAX_DEVS:
        raise XenbusConfigError(join(be, "num_devs"), f"already {index} devices")
    nodes = {**device.nodes(index), "num_devs": str(index + 1)}
    if reconfigure:
        nodes["state"] = str(int(S.RECONFIGURING))
    _write_all(tx, be, nodes)
    return index


def mark_closing(tx: StoreOps, domid: int, index: int) -> None:
    """Hot unplug, first step: the device Closing and the backend Reconfiguring."""
    be = backend_path(domid)
    tx.write(join(be, f"state-{index}"), str(int(S.CLOSING)))
    tx.write(join(be, "state"), str(int(S.RECONFIGURING)))


def remove_device(tx: StoreOps, domid: int, index: int, devid: int = DEVID) -> None:
    """Hot unplug, last step: the device's nodes go, the following devices move down one
    index and num_devs drops by one, as libxl__device_pci_remove_xenstore does."""
    be = backend_path(domid, devid)
    count = min(read_count(tx, be), MAX_DEVS)
    for key in DEVICE_KEYS:
        tx.rm(join(be, f"{key}-{index}"))
    tx.write(join(be, "num_devs"), str(max(count - 1, 0)))
    for j in range(index + 1, count):
        for key in DEVICE_KEYS:
            value = tx.read(join(be, f"{key}-{j}"))
            if value is not None:
                tx.write(join(be, f"{key}-{j - 1}"), value)
                tx.rm(join(be, f"{key}-{j}"))


def close_backend(tx: StoreOps, domid: int) -> None:
    """The whole PCI device goes (libxl__initiate_device_generic_remove): offline, and Closing
    unless already Closed."""
    be = backend_path(domid)
    if tx.read(join(be, "state")) is None:
        return
    tx.write(join(be, "online"), "0")
    if state_or_unknown(tx.read(join(be, "state"))) != S.CLOSED:
        tx.write(join(be, "state"), str(int(S.CLOSING)))


def error_path(domid: int, devid: int = DEVID) -> str:
    """Where the backend reports a failure (xenbus_dev_fatal's node)."""
    return f"{ERROR_ROOT}/{domid}/{devid}"


def destroy_directories(tx: StoreOps, domid: int) -> None:
    """Both directories and the parents they leave empty (libxl__device_destroy), and the
    backend's error report, which would otherwise be blamed on the next guest with this id."""
    path_cleanup(tx, frontend_path(domid))
    path_cleanup(tx, backend_path(domid))
    path_cleanup(tx, error_path(domid))


def path_cleanup(tx: StoreOps, path: str) -> None:
    """Remove `path`, then each parent left with no value and no children
    (libxl__xs_path_cleanup): nothing this role created stays behind."""
    tx.rm(path)
    for _ in range(MAX_CLEANUP_DEPTH):
        path = path.rsplit("/", 1)[0]
        if not path or path.count("/") <= 3:  # never /local/domain/N itself
            return
        if tx.read(path) != "" or tx.list(path):
            return
        tx.rm(path)


def read_count(tx: StoreOps, be: str) -> int:
    text = (tx.read(join(be, "num_devs")) or "0").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 5:
        raise XenbusConfigError(join(be, "num_devs"), f"not a device count: {text[:16]!r}")
    return int(text)


def find_device(tx: StoreOps, domid: int, address: str) -> tuple[int, int] | None:
    """(index, num_devs) of `address` in the guest's backend directory, None when absent."""
    be = backend_path(domid)
    if tx.read(join(be, "state")) is None:
        return None
    count = min(read_count(tx, be), MAX_DEVS)
    for i in range(count):
        text = tx.read(join(be, f"dev-{i}"))
        try:
            if text is not None and parse_bdf(f"dev-{i}", text) == address:
                return i, count
        except XenbusConfigError:
            continue
    return None


def _write_all(tx: StoreOps, base: str, nodes: dict[str, str]) -> None:
    for name, value in nodes.items():
        tx.write(join(base, name), value)
