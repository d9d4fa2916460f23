"""The other two parties of the xenbus handshake, simulated: the toolstack (what libxl writes to
give a guest PCI devices, hot add and hot remove them, and destroy the guest) and the xenbus half
of a guest's pcifront (publish the shared page, follow the backend's state, scan root buses).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from pciback.ports.xenstore import Access, Permission, Transaction, XenStoreError, run_transaction
from pciback.protocol.abi import XEN_PCI_MAGIC
from pciback.sim.xenstore import SimXenStore, SimXenStoreClient
from pciback.toolstack.layout import backend_perms, domain_path, frontend_perms, remove_device
from pciback.xenbus.backend import BACKEND_ROOT, ERROR_ROOT
from pciback.xenbus.parse import parse_bdf
from pciback.xenbus.states import XenbusState, state_or_unknown

if TYPE_CHECKING:
    from pciback.sim.domctl import SimDomctl

S = XenbusState


def backend_path(domid: int, devid: int = 0) -> str:
    return f"{BACKEND_ROOT}/{domid}/{devid}"


def frontend_path(domid: int, devid: int = 0) -> str:
    return f"/local/domain/{domid}/device/pci/{devid}"


class SimToolstack:
    """Dom0's toolstack: creates and edits backend and frontend directories as libxl does."""

    def __init__(self, store: SimXenStore, domains: SimDomctl | None = None) -> None:
        self.store = store
        self.domains = domains  # the simulated Xen's domains, when the test has one
        self.xs = store.connect(0)
        self.created: dict[int, set[int]] = {}  # the backend devices libxl knows of, by domain

    def make_domain(self, domid: int, name: str | None = None) -> None:
        """A domain is built (libxl__domain_make): its home in xenstore, read-only to it, with
        the few directories it may write, and the domain itself in the simulated Xen."""
        home = domain_path(domid)
        readonly = (Permission(0, Access.NONE), Permission(domid, Access.READ))
        writable = (Permission(domid, Access.NONE),)

        def body(tx: Transaction) -> None:
            tx.rm(home)
            for path, perms in (
                (home, readonly),
                (f"{home}/device", readonly),
                (f"{home}/control", readonly),
                (f"{home}/data", writable),
                (f"{home}/error", writable),
            ):
                tx.mkdir(path)
                tx.set_permissions(path, perms)
            tx.write(f"{home}/name", name or f"guest{domid}")
            tx.write(f"{home}/domid", str(domid))

        run_transaction(self.xs, body)
        if self.domains is not None:
            self.domains.create_domain(domid)

    def create(
        self, domid: int, devices: list[str], mode: str | None = None, devid: int = 0
    ) -> None:
        """The guest's PCI backend device with `devices`, as libxl creates it with a domain
        (the domain is made first when it does not exist yet)."""
        be, fe = backend_path(domid, devid), frontend_path(domid, devid)
        if self.xs.read(domain_path(domid)) is None:
            self.make_domain(domid)

        def body(tx: Transaction) -> None:
            tx.rm(be)
            tx.mkdir(be)
            tx.set_permissions(be, backend_perms(domid))
            tx.write(f"{be}/frontend", fe)
            tx.write(f"{be}/frontend-id", str(domid))
            tx.write(f"{be}/online", "1")
            tx.write(f"{be}/domain", f"guest{domid}")
            if mode is not None:
                tx.write(f"{be}/topology", mode)
            for i, address in enumerate(devices):
                tx.write(f"{be}/dev-{i}", address)
                tx.write(f"{be}/state-{i}", str(int(S.INITIALISING)))
            tx.write(f"{be}/num_devs", str(len(devices)))
            tx.write(f"{be}/state", str(int(S.INITIALISING)))
            tx.rm(fe)
            tx.mkdir(fe)
            tx.set_permissions(fe, frontend_perms(domid))
            tx.write(f"{fe}/backend", be)
            tx.write(f"{fe}/backend-id", "0")
            tx.write(f"{fe}/state", str(int(S.INITIALISING)))

        run_transaction(self.xs, body)
        self.created.setdefault(domid, set()).add(devid)

    def hot_add(self, domid: int, address: str, devid: int = 0) -> int:
        be = backend_path(domid, devid)

        def body(tx: Transaction) -> int:
            index = int(tx.read(f"{be}/num_devs") or "0")
            tx.write(f"{be}/dev-{index}", address)
            tx.write(f"{be}/state-{index}", str(int(S.INITIALISING)))
            tx.write(f"{be}/num_devs", str(index + 1))
            tx.write(f"{be}/state", str(int(S.RECONFIGURING)))
            return index

        return run_transaction(self.xs, body)

    def hot_remove(self, domid: int, address: str, devid: int = 0) -> int:
        be = backend_path(domid, devid)

        def body(tx: Transaction) -> int:
            count = int(tx.read(f"{be}/num_devs") or "0")
            for i in range(count):
                text = tx.read(f"{be}/dev-{i}")
                if text is not None and parse_bdf("dev", text) == address:
                    tx.write(f"{be}/state-{i}", str(int(S.CLOSING)))
                    tx.write(f"{be}/state", str(int(S.RECONFIGURING)))
                    return i
            raise KeyError(f"{address} is not assigned to domain {domid}")

        return run_transaction(self.xs, body)

    def finish_remove(self, domid: int, index: int, devid: int = 0) -> None:
        """After the backend is Connected again, libxl deletes the removed device's nodes and
        moves the devices listed after it down one index, num_devs one less, in one
        transaction: without that compaction the 257th hot add to one guest would overflow
        the list. (libxl then removes the whole PCI device when it was the last one; this
        keeps the empty backend, so that a test can hot add to the guest again.)"""
        run_transaction(self.xs, lambda tx: remove_device(tx, domid, index, devid))

    def destroy(self, domid: int, devid: int = 0) -> None:
        """Guest shutdown: the domain dies in Xen, its home goes, and the backend directories
        libxl made for it are removed. A backend directory libxl did not make (the daemon's
        toolstack role writes its own) stays for whoever made it."""
        known = self.created.pop(domid, set())
        if devid in known:
            self.xs.write(f"{backend_path(domid, devid)}/online", "0")
        if self.domains is not None:
            self.domains.destroy_domain(domid)
        self.store.release_domain(domid)
        if known:
            self.xs.rm(f"{BACKEND_ROOT}/{domid}")
        # A later domain with this id must not be blamed for this one's failure.
        self.xs.rm(f"{ERROR_ROOT}/{domid}")


class SimPcifront:
    """The xenbus half of a guest's pcifront, connected to the store as the guest."""

    def __init__(
        self, store: SimXenStore, domid: int, devid: int = 0, gnt_ref: int = 8, evtchn: int = 9
    ) -> None:
        self.xs: SimXenStoreClient = store.connect(domid)
        self.domid = domid
        self.fe = frontend_path(domid, devid)
        self.be = backend_path(domid, devid)
        self.gnt_ref = gnt_ref
        self.evtchn = evtchn
        self.roots: list[str] = []
        self.errors: list[str] = []

    def state(self) -> XenbusState:
        return state_or_unknown(self.xs.read(f"{self.fe}/state"))

    def backend_state(self) -> XenbusState:
        return state_or_unknown(self._backend("state"))

    def _backend(self, name: str) -> str | None:
        """A backend node as the guest reads it: once the toolstack removed the directory,
        the guest may not even look (its nearest ancestor is dom0's), which is absence."""
        try:
            return self.xs.read(f"{self.be}/{name}")
        except XenStoreError as exc:
            if exc.errno == errno.EACCES:
                return None
            raise

    def switch(self, state: XenbusState) -> None:
        if self.state() != state:
            self.xs.write(f"{self.fe}/state", str(int(state)))

    def publish(self, magic: str = XEN_PCI_MAGIC) -> None:
        def body(tx: Transaction) -> None:
            tx.write(f"{self.fe}/pci-op-ref", str(self.gnt_ref))
            tx.write(f"{self.fe}/event-channel", str(self.evtchn))
            tx.write(f"{self.fe}/magic", magic)

        run_transaction(self.xs, body)
        self.switch(S.INITIALISED)

    def step(self) -> bool:
        """React once to the backend's state as pcifront does; True when something changed."""
        if self.xs.read(self.fe) is None:
            return False  # the PCI device was removed: pcifront is gone with it
        before = self.state()
        be = self.backend_state()
        if be == S.CONNECTED and before == S.INITIALISED:
            self.roots = self._read_roots()
            self.switch(S.CONNECTED)
        elif be == S.RECONFIGURING and before == S.CONNECTED:
            self.switch(S.RECONFIGURING)
        elif be == S.RECONFIGURED and before == S.RECONFIGURING:
            self.roots = self._read_roots()
            self.switch(S.CONNECTED)
        elif be in (S.CLOSING, S.CLOSED) and before < S.CLOSING:
            self.switch(S.CLOSED)
        return self.state() != before

    def close(self) -> None:
        self.switch(S.CLOSING)
        self.switch(S.CLOSED)

    def _read_roots(self) -> list[str]:
        count = int(self._backend("root_num") or "0")
        return [self._backend(f"root-{j}") or "" for j in range(min(count, 256))]

    def devices(self) -> list[str]:
        """Guest addresses the backend published for devices in use (state-N Initialised)."""
        count = int(self._backend("num_devs") or "0")
        found = []
        for i in range(min(count, 256)):
            if state_or_unknown(self._backend(f"state-{i}")) == S.INITIALISED:
                vdev = self._backend(f"vdev-{i}")
                if vdev is not None:
                    found.append(parse_bdf("vdev", vdev))
        return found
