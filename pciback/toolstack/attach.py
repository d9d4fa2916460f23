"""Attach and detach, as libxl does them for a PV guest, for the devices this daemon holds.

Attach: refuse what cannot be done (not in the pool, held by another guest, no such domain);
record the attachment durably; grant (BAR ranges, the GSI, assignment in Xen); write the
xenstore directories, in one transaction (a new PCI device, or a hot add to a running guest:
backend Reconfiguring). Anything failing before the xenstore write commits is undone.

Detach: hot unplug (device Closing, backend Reconfiguring), wait for the guest to let go of it
and the backend to release it, remove its nodes (compacting the others) or, for the last one,
close and remove the whole PCI device; then revoke exactly what attach granted and forget the
record. Waiting happens without the daemon's lock, which the watch loop needs to serve the
reconfiguration; a guest that never answers gets a clear error and nothing is undone.

A guest that dies (xl destroy) loses its grants and devices in Xen and its home in xenstore,
but libxl never knew of the backend directory this role wrote: the daemon removes it when
@releaseDomain fires and the domain is found gone, and the devices go back to the pool.

At start-up, records left by a daemon that died are finished or undone (`reconcile`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from pciback.control.hide import HideSyntaxError, parse_device
from pciback.control.ownership import Ownership
from pciback.control.state import StateStore
from pciback.control.stub import StubError, StubPool
from pciback.ports.domain import NO_IOMMU, DomainError, DomainResources
from pciback.ports.hostbus import HostBus
from pciback.ports.xenstore import StoreOps, XenStore, XenStoreError, join, run_transaction
from pciback.toolstack import layout
from pciback.toolstack.grants import GrantsError, grants_for, subtract
from pciback.toolstack.layout import DEVID, DeviceEntry, backend_path, frontend_path
from pciback.toolstack.records import Attachment, AttachmentRecords, Phase
from pciback.xenbus.backend import ERROR_ROOT
from pciback.xenbus.manager import DOMID_MAX, XenbusBackends
from pciback.xenbus.parse import XenbusConfigError
from pciback.xenbus.states import XenbusState, state_or_unknown

log = logging.getLogger("pciback.toolstack")

S = XenbusState
RELEASE_TOKEN = "pciback:toolstack:release"
DEFAULT_TIMEOUT = 10.0  # libxl's wait for a backend state (LIBXL_DESTROY_TIMEOUT)
POLL = 0.01
_FLAGS = ("permissive", "interrupt_control")
# The backend has seen its frontend connect at least once: a hot plug can be answered.
_RUNNING = (S.CONNECTED, S.RECONFIGURING, S.RECONFIGURED)


class ToolstackError(ValueError):
    """An attach or detach refused or failed; the message is one line for the operator."""


class NotLetGo(ToolstackError):
    """The guest was asked to unplug the device and has not let go of it in time. The detach
    stays pending: it completes when the guest lets go (`Toolstack.settle`)."""


class Toolstack:
    def __init__(
        self,
        store: XenStore,
        domains: DomainResources,
        bus: HostBus,
        pool: StubPool,
        ownership: Ownership,
        backends: XenbusBackends,
        state: StateStore,
        lock: threading.RLock,
    ) -> None:
        self.store = store
        self.domains = domains
        self.bus = bus
        self.pool = pool
        self.ownership = ownership
        self.backends = backends
        self.lock = lock  # the daemon's: held for each step, never while waiting
        self.records = AttachmentRecords(state)
        self.timeout = DEFAULT_TIMEOUT
        # When set, what makes the world move while a request waits (the simulated host drives
        # the daemon and its guests in-process); None: the daemon's loop runs on its thread.
        self.drive: Callable[[], int] | None = None
        self._serial = threading.Lock()  # one toolstack request at a time, as libxl's lock

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.store.watch("@releaseDomain", RELEASE_TOKEN)

    def stop(self) -> None:
        with contextlib.suppress(XenStoreError):
            self.store.unwatch("@releaseDomain", RELEASE_TOKEN)

    # -- attach ------------------------------------------------------------------------------
    def attach(
        self,
        domid: int,
        device: str,
        *,
        vdev: int | None = None,
        permissive: bool = False,
        interrupt_control: bool = False,
    ) -> dict[str, Any]:
        address = _device(device)
        _check_domid(domid)
        if vdev is not None and not 0 < vdev <= 0x1F:
            raise ToolstackError(f"guest slot {vdev:#x} out of range (1..0x1f)")
        entry = DeviceEntry(address, None if vdev is None else vdev << 3, permissive)
        with self._serial:
            with self.lock:
                self._check_assignable(domid, address)
            self._check_domain(domid)
            exists = self.store.read(join(backend_path(domid), "num_devs")) is not None
            if exists:
                self._ready_for_another(domid)
            with self.lock:
                self._check_assignable(domid, address)  # unchanged while we waited?
                record = self._record(domid, address, entry, interrupt_control)
                self.records.put(record)  # durable before anything is granted
            try:
                self._grant(record)
                with self.lock:
                    self._set_flags(record, on=True)
                hot = self._write(domid, entry, exists)
            except (DomainError, XenStoreError, XenbusConfigError, ToolstackError) as exc:
                problems = self._undo(record)
                why = f"attach {address} to domain {domid}: {exc}"
                raise ToolstackError(why + _undone(problems)) from None
            with self.lock:
                self.records.put(record.at(Phase.ATTACHED))
            log.info("attached %s to domain %d (%s)", address, domid, "hot" if hot else "new")
            return self._attach_outcome(domid, address, hot)

    def _check_assignable(self, domid: int, address: str) -> None:
        if address not in self.bus.addresses():
            raise ToolstackError(f"no PCI device {address} on this host")
        if address not in self.pool.devices:
            raise ToolstackError(
                f"{address} is not assignable: run pciback assignable-add {address}"
            )
        holder = self._holder(address)
        if holder == domid:
            raise ToolstackError(f"{address} is already assigned to domain {domid}")
        if holder is not None:
            raise ToolstackError(f"{address} is assigned to domain {holder}")

    def _holder(self, address: str) -> int | None:
        self._prune(address)
        record = self.records.get(address)
        return record.domid if record is not None else self.ownership.owner(address)

    def _prune(self, address: str) -> None:
        """A completed attachment whose device is no longer in its guest's directory was
        undone by someone else (libxl finds the devices through the backend directory, so
        `xl pci-detach` and xl's domain destruction remove them their own way): revoke what
        may be left and forget it, rather than keep the device from every other guest."""
        record = self.records.get(address)
        if record is None or record.phase is not Phase.ATTACHED:
            return
        if layout.find_device(self.store, record.domid, address) is not None:
            return
        if not self._alive(record.domid):
            self._forget_dead(record.domid)
            return
        log.warning(
            "%s: no longer in domain %d's PCI directory (detached by another toolstack?); "
            "forgetting the attachment",
            address,
            record.domid,
        )
        self._release_if_unheld(record)
        self._undo(record)

    def _check_domain(self, domid: int) -> None:
        try:
            exists = self.domains.domain_exists(domid)
        except DomainError as exc:
            raise ToolstackError(f"cannot look domain {domid} up: {exc}") from None
        if not exists:
            raise ToolstackError(f"no domain {domid} (or it is dying)")
        if self.store.read(layout.domain_path(domid)) is None:
            raise ToolstackError(
                f"domain {domid} has no /local/domain/{domid} in xenstore yet (still being built?)"
            )

    def _ready_for_another(self, domid: int) -> None:
        """A guest that has a PCI device already: before its pcifront connected, the device
        simply joins the list (libxl's `starting`); once it has, libxl waits for the backend
        to be Connected before a hot add."""
        be_state = self._backend_state(domid)
        if be_state in (S.CLOSING, S.CLOSED):
            raise ToolstackError(
                f"the PCI backend of domain {domid} is {be_state.name.lower()}"
                + _because(self._backend_error(domid))
                + "; detach its devices first"
            )
        if be_state not in _RUNNING and self._frontend_state(domid) < S.INITIALISED:
            return  # not booted (or pcifront not started): no answer is needed
        if not self._wait(lambda: self._backend_state(domid) == S.CONNECTED):
            raise ToolstackError(
                f"the PCI backend of domain {domid} did not become Connected within "
                f"{self.timeout:g} s (it is {self._backend_state(domid).name}); try again"
            )

    def _record(
        self, domid: int, address: str, entry: DeviceEntry, interrupt_control: bool
    ) -> Attachment:
        try:
            grants = grants_for(self.bus.device(address))
        except (GrantsError, OSError, ValueError) as exc:
            raise ToolstackError(f"{address}: cannot read its resources: {exc}") from None
        settings = self.pool.devices[address].settings
        wanted = {"permissive": entry.permissive, "interrupt_control": interrupt_control}
        return Attachment(
            domid,
            address,
            grants,
            vdevfn=entry.vdevfn,
            permissive=entry.permissive,
            interrupt_control=interrupt_control,
            set_flags=tuple(f for f in _FLAGS if wanted[f] and not getattr(settings, f)),
        )

    def _grant(self, record: Attachment) -> None:
        """libxl's pci_add_dm_done for a PV guest, in its order."""
        domid, grants = record.domid, record.grants
        for first, count in grants.ioports:
            self.domains.ioport_permission(domid, first, count, True)
        for first, count in grants.iomem:
            self.domains.iomem_permission(domid, first, count, True)
        with self.lock:
            shared = self._gsi_shared(record)
        if grants.gsi is not None and not shared:
            pirq = self.domains.map_gsi(domid, grants.gsi)
            if pirq != grants.gsi:
                with contextlib.suppress(DomainError):
                    self.domains.unmap_gsi(domid, pirq)
                raise ToolstackError(
                    f"Xen mapped GSI {grants.gsi} as PIRQ {pirq}; the guest would bind the "
                    "wrong interrupt"
                )
            self.domains.irq_permission(domid, grants.gsi, True)
        try:
            self.domains.assign_device(domid, record.address)
        except DomainError as exc:
            if exc.errno not in NO_IOMMU:
                raise
            log.warning(
                "%s: not assigned to domain %d in Xen (%s): no IOMMU for it, so Xen will "
                "refuse the guest's MSI/MSI-X (it looks devices up by their assigned domain); "
                'give the domain passthrough = "enabled" on a host with an IOMMU',
                record.address,
                domid,
                exc,
            )

    def _gsi_shared(self, record: Attachment) -> bool:
        """Another device of the same guest already uses this GSI (shared INTx)."""
        return any(
            r.grants.gsi == record.grants.gsi
            for r in self.records.of_domain(record.domid)
            if r.address != record.address
        )

    def _write(self, domid: int, entry: DeviceEntry, exists: bool) -> bool:
        """The xenstore part, in one transaction; True when it was a hot add."""
        name = self.store.read(join(layout.domain_path(domid), "name"))
        be = backend_path(domid)

        def create(tx: StoreOps) -> bool:
            if tx.read(join(be, "num_devs")) is not None:
                raise ToolstackError(f"domain {domid} got a PCI backend meanwhile; try again")
            layout.create_pci_backend(tx, domid, name, entry)
            return False

        def add(tx: StoreOps) -> bool:
            # Decided on what the transaction reads, so a frontend or backend changing state
            # meanwhile makes the commit conflict. The backend connects only once the frontend
            # is Initialised: before, the device joins the list; after, only a reconfiguration
            # reaches the guest, and it must wait for Connected.
            state = state_or_unknown(tx.read(join(be, "state")))
            frontend = state_or_unknown(tx.read(join(frontend_path(domid), "state")))
            if state in (S.CLOSING, S.CLOSED):
                raise ToolstackError(f"the PCI backend of domain {domid} is {state.name.lower()}")
            connecting = state != S.CONNECTED and frontend >= S.INITIALISED
            if connecting or (state in _RUNNING and state != S.CONNECTED):
                raise ToolstackError(
                    f"the PCI backend of domain {domid} is {state.name}; try again"
                )
            hot = state == S.CONNECTED
            layout.add_device(tx, domid, entry, reconfigure=hot)
            return hot

        return run_transaction(self.store, add if exists else create)

    def _attach_outcome(self, domid: int, address: str, hot: bool) -> dict[str, Any]:
        """Wait (bounded) for the backend to take the device: at once for a new guest's
        directory, after the guest answers the reconfiguration for a hot add."""

        def settled() -> bool:
            return (
                self.ownership.owner(address) == domid
                or self._backend_error(domid) is not None
                or self.records.get(address) is None
            )

        self._wait(settled)
        with self.lock:
            error = self._backend_error(domid)
            if self.records.get(address) is None:
                raise ToolstackError(f"domain {domid} went away while {address} was attached")
            if self.ownership.owner(address) != domid and error is not None:
                raise ToolstackError(
                    f"the backend of domain {domid} refused {address}: {error}; run "
                    f"pciback detach {domid} {address} to clean up"
                )
            taken = self.ownership.owner(address) == domid
            return {
                "domid": domid,
                "device": address,
                "hot": hot,
                "state": "taken" if taken else "pending",
                "guest": self._guest_address(domid, address),
            }

    def _guest_address(self, domid: int, address: str) -> str | None:
        backend = self.backends.backends.get((domid, DEVID))
        if backend is None:
            return None
        return next((g for g, p in backend.topology.devices().items() if p == address), None)

    # -- detach ------------------------------------------------------------------------------
    def detach(self, domid: int, device: str) -> dict[str, Any]:
        address = _device(device)
        _check_domid(domid)
        with self._serial:
            with self.lock:
                record = self.records.get(address)
                if record is None or record.domid != domid:
                    holder = self._holder(address)
                    raise ToolstackError(
                        f"{address} is not attached to domain {domid} by pciback"
                        + (f" (it is assigned to domain {holder})" if holder is not None else "")
                    )
            if not self._alive(domid):
                self.reap()
                return {"domid": domid, "device": address, "state": "domain gone", "problems": []}
            with self.lock:
                self.records.put(record.at(Phase.DETACHING))
            try:
                self._unplug(domid, address)
            except NotLetGo as exc:
                # Asked is asked: the guest may still answer (under emulation an xHCI driver
                # takes longer than libxl's 10 s to let go), and its answer then finishes it.
                raise ToolstackError(f"detach {address} from domain {domid}: {exc}") from None
            except (ToolstackError, XenStoreError, XenbusConfigError) as exc:
                with self.lock:
                    if self.records.get(address) is not None:
                        self.records.put(record.at(Phase.ATTACHED))
                raise ToolstackError(f"detach {address} from domain {domid}: {exc}") from None
            problems = self._finish_detach(record)
            log.info("detached %s from domain %d", address, domid)
            return {"domid": domid, "device": address, "state": "released", "problems": problems}

    def _unplug(self, domid: int, address: str) -> None:
        found = layout.find_device(self.store, domid, address)
        if found is None:
            return  # its nodes are gone already: only the grants are left
        count = found[1]
        state = self._backend_state(domid)
        if state in (S.CLOSING, S.CLOSED):
            # The backend gave up on this guest (an error, or the guest closed it): the whole
            # PCI device is going, with every device in it.
            log.warning("domain %d: its PCI backend is %s; removing it whole", domid, state.name)
            self._close_device(domid, wait=False)
            return
        if state not in _RUNNING:
            # The frontend never connected (a paused guest not yet booted): nobody can answer a
            # hot unplug, and nobody uses the device yet. Only the whole device can go.
            if count > 1:
                raise ToolstackError(
                    f"domain {domid}'s pcifront has not connected, so one of its {count} "
                    "devices cannot be unplugged alone; boot the guest or destroy the domain"
                )
            self._close_device(domid, wait=False)
            return
        self._hot_unplug(domid, address)
        if count > 1:
            run_transaction(self.store, lambda tx: self._remove_nodes(tx, domid, address))
        else:
            self._close_device(domid, wait=True)

    def _hot_unplug(self, domid: int, address: str) -> None:
        if not self._wait(lambda: self._backend_state(domid) == S.CONNECTED):
            raise ToolstackError(
                f"its PCI backend is {self._backend_state(domid).name}, not Connected, after "
                f"{self.timeout:g} s; nothing was changed"
            )

        def closing(tx: StoreOps) -> None:
            found = layout.find_device(tx, domid, address)
            if found is None:
                return
            sub = state_or_unknown(tx.read(join(backend_path(domid), f"state-{found[0]}")))
            if sub not in (S.CLOSING, S.CLOSED):  # a detach run again leaves it as it is
                layout.mark_closing(tx, domid, found[0])

        run_transaction(self.store, closing)
        if not self._released(domid, address, wait=True):
            raise NotLetGo(
                f"the guest did not let go of it within {self.timeout:g} s (its pcifront did "
                "not answer the hot unplug); the detach completes when it does (pciback list "
                "shows it detaching), or destroy the domain"
            )

    def _released(self, domid: int, address: str, *, wait: bool) -> bool:
        """Whether the guest let go of the device it was asked to unplug: its sub-state Closed
        while the backend stays Connected, and the backend's hold on it dropped."""

        def released() -> bool:
            found = layout.find_device(self.store, domid, address)
            if found is None:
                return True
            sub = self.store.read(join(backend_path(domid), f"state-{found[0]}"))
            return (
                self._backend_state(domid) == S.CONNECTED
                and state_or_unknown(sub) == S.CLOSED
                and self.ownership.owner(address) != domid
            )

        if wait:
            return self._wait(released)
        with self.lock:
            return released()

    def settle(self) -> list[str]:
        """Finish each pending detach whose guest has now let go of the device (after the
        detach request timed out waiting for it); returns the devices detached. Called by the
        watch loop after the backends handled an event; a request in progress is left alone."""
        if not self._serial.acquire(blocking=False):
            return []
        try:
            with self.lock:
                pending = [r for r in self.records.all() if r.phase is Phase.DETACHING]
            done = []
            for record in pending:
                if not self._alive(record.domid):
                    continue  # reap's, on @releaseDomain
                if not self._released(record.domid, record.address, wait=False):
                    continue
                found = layout.find_device(self.store, record.domid, record.address)
                if found is not None and found[1] > 1:
                    run_transaction(
                        self.store,
                        partial(self._remove_nodes, domid=record.domid, address=record.address),
                    )
                elif found is not None:
                    self._close_device(record.domid, wait=False)
                problems = self._finish_detach(record)
                log.info(
                    "detached %s from domain %d: the guest let go after the request had "
                    "timed out%s",
                    record.address,
                    record.domid,
                    _undone(problems),
                )
                done.append(record.address)
            return done
        finally:
            self._serial.release()

    @staticmethod
    def _remove_nodes(tx: StoreOps, domid: int, address: str) -> None:
        found = layout.find_device(tx, domid, address)
        if found is not None:
            layout.remove_device(tx, domid, found[0])

    def _close_device(self, domid: int, *, wait: bool) -> None:
        """The last device: the whole PCI device goes, as libxl's generic removal: offline and
        Closing, the frontend answers with Closed and the backend follows; then both
        directories are removed. Without an answer in time they are removed anyway (libxl's
        forced removal): the backend then lets the devices go when its directory vanishes."""
        run_transaction(self.store, lambda tx: layout.close_backend(tx, domid))
        if wait and not self._wait(lambda: self._backend_state(domid) in (S.CLOSED, S.UNKNOWN)):
            log.warning(
                "domain %d: the PCI device did not close within %g s; removing it anyway",
                domid,
                self.timeout,
            )
        run_transaction(self.store, lambda tx: layout.destroy_directories(tx, domid))

    def _finish_detach(self, record: Attachment) -> list[str]:
        """After the xenstore part: make sure no backend holds the device any more, revoke,
        forget."""
        with self.lock:
            self._release_if_unheld(record)
        problems = self._revoke(record)
        with self.lock:
            self._set_flags(record, on=False)
            self.records.drop(record.address)
        return problems

    def _release_if_unheld(self, record: Attachment) -> None:
        """The device back in the pool when its backend directory is gone: the backend drops
        it when it sees that (scanned here rather than waiting for the watch), and a device
        no backend serves but still registered to the guest is released as at start-up."""
        self.backends.scan()
        if self.ownership.owner(record.address) != record.domid:
            return
        held = any(
            record.address in backend.exported.values()
            for key, backend in self.backends.backends.items()
            if key[0] == record.domid
        )
        if not held:
            self.pool.release(record.address, record.domid)

    def _revoke(self, record: Attachment) -> list[str]:
        """Exactly what attach granted, less what another device of the same guest still
        needs. Every step is tried; the failures are returned (and logged)."""
        domid, grants = record.domid, record.grants
        with self.lock:
            others = [
                g.grants for g in self.records.of_domain(domid) if g.address != record.address
            ]
        problems: list[str] = []

        def attempt(call: Callable[[], None], tolerated: frozenset[int] = frozenset()) -> None:
            try:
                call()
            except DomainError as exc:
                # ESRCH: the guest died meanwhile, and Xen dropped all of it with the guest.
                if exc.errno not in tolerated and exc.errno != errno.ESRCH:
                    problems.append(str(exc))
                    log.error("revoking from domain %d: %s", domid, exc)

        for first, count in subtract(grants.iomem, [r for g in others for r in g.iomem]):
            attempt(partial(self.domains.iomem_permission, domid, first, count, False))
        for first, count in subtract(grants.ioports, [r for g in others for r in g.ioports]):
            attempt(partial(self.domains.ioport_permission, domid, first, count, False))
        gsi = grants.gsi
        if gsi is not None and all(g.gsi != gsi for g in others):
            # Not mapped when the attach stopped before mapping it: nothing to undo then.
            attempt(partial(self.domains.unmap_gsi, domid, gsi), frozenset({errno.EINVAL}))
            attempt(partial(self.domains.irq_permission, domid, gsi, False))
        attempt(
            partial(self.domains.deassign_device, domid, record.address),
            NO_IOMMU | {errno.ENODEV, errno.EINVAL},
        )
        return problems

    def _undo(self, record: Attachment) -> list[str]:
        """An attach that failed before its xenstore write committed, or a record found with
        no device in xenstore: revoke, turn the flags it set off, forget."""
        problems = self._revoke(record)
        with self.lock:
            self._set_flags(record, on=False)
            self.records.drop(record.address)
        return problems

    def _set_flags(self, record: Attachment, *, on: bool) -> None:
        for flag in record.set_flags:
            if record.address not in self.pool.devices:
                return
            try:
                getattr(self.pool, f"set_{flag}")(record.address, on)
            except StubError as exc:
                log.error(
                    "%s: %s %s: %s", record.address, "setting" if on else "clearing", flag, exc
                )

    # -- dead guests and restarts -------------------------------------------------------------
    def reap(self) -> list[int]:
        """Clean up after every recorded guest that is gone (called on @releaseDomain):
        Xen revoked its grants and took its devices back when it died, so only xenstore and
        the pool are left to tidy. Returns the domains cleaned."""
        with self.lock:
            domids = sorted({r.domid for r in self.records.all()})
        dead = [d for d in domids if not self._alive(d)]
        for domid in dead:
            with self.lock:
                self._forget_dead(domid)
        return dead

    def _forget_dead(self, domid: int) -> None:
        records = self.records.of_domain(domid)
        with contextlib.suppress(XenStoreError):
            run_transaction(self.store, lambda tx: layout.destroy_directories(tx, domid))
        for record in records:
            self._release_if_unheld(record)
            self._set_flags(record, on=False)
            self.records.drop(record.address)
        log.info(
            "domain %d is gone: its PCI backend directory removed, %s back in the pool",
            domid,
            ", ".join(r.address for r in records),
        )

    def reconcile(self) -> None:
        """At start-up, after the backends were resumed: each record is checked against Xen
        and xenstore. A dead guest's is cleaned up; one whose device is not in xenstore is
        undone (the attach died before writing, or the detach after removing it); one whose
        device is there is an attachment that completed (an interrupted detach is left for
        the operator to run again)."""
        self.reap()
        for record in self.records.all():
            found = layout.find_device(self.store, record.domid, record.address)
            if found is None:
                problems = self._undo(record)
                log.warning(
                    "%s: %s of domain %d interrupted; its grants revoked%s",
                    record.address,
                    "attach" if record.phase is Phase.ATTACHING else "detach",
                    record.domid,
                    _undone(problems),
                )
            elif record.phase is not Phase.ATTACHED:
                with self.lock:
                    self.records.put(record.at(Phase.ATTACHED))
                if record.phase is Phase.DETACHING:
                    log.warning(
                        "%s: a detach from domain %d was interrupted; it is still attached: "
                        "run pciback detach %d %s again",
                        record.address,
                        record.domid,
                        record.domid,
                        record.address,
                    )
                else:
                    log.info("%s: attach to domain %d completed", record.address, record.domid)

    # -- the pool, as xl pci-assignable-* ------------------------------------------------------
    def assignable_add(self, device: str) -> dict[str, Any]:
        """Into the pool, as xl pci-assignable-add: already there is not an error."""
        address = _device(device)
        with self.lock:
            if address not in self.bus.addresses():
                raise ToolstackError(f"no PCI device {address} on this host")
            if address in self.pool.devices:
                return {"device": address, "seized": False}
            self.pool.add_slot(address)
            if address not in self.pool.devices:
                with contextlib.suppress(StubError):
                    self.pool.remove_slot(address)
                raise ToolstackError(f"{address} could not be seized; the daemon's log says why")
            return {"device": address, "seized": True}

    def assignable_remove(self, device: str, rebind: bool) -> dict[str, Any]:
        """Out of the pool, back to the driver it came from with `rebind` (else unbound, as
        xl without -r). Refused while a guest holds it, naming the guest."""
        address = _device(device)
        with self._serial, self.lock:
            holder = self._holder(address)
            if holder is not None:
                raise ToolstackError(
                    f"{address} is assigned to domain {holder}: "
                    f"run pciback detach {holder} {address} first"
                )
            if address not in self.pool.devices:
                raise ToolstackError(f"{address} is not assignable")
            driver = self.pool.devices[address].host_driver
            self._dequarantine(address)
            with contextlib.suppress(StubError):  # seized by a hide pattern: no own slot
                self.pool.remove_slot(address)
            self.pool.unseize(address, rebind=rebind)
            return {"device": address, "driver": driver if rebind else None}

    def _dequarantine(self, address: str) -> None:
        """A device a guest had is in Xen's quarantine (Xen 4.17 puts it there when it is
        deassigned or its guest dies), where its DMA reaches only a scratch page: give it
        back to dom0 before a host driver gets it, as libxl's pci-assignable-remove does."""
        try:
            self.domains.dequarantine(address)
        except DomainError as exc:
            if exc.errno == errno.ENODEV or exc.errno in NO_IOMMU:
                return  # never quarantined, or no IOMMU to quarantine it
            raise ToolstackError(
                f"{address}: cannot take it out of Xen's quarantine: {exc}"
            ) from None

    def assignable_list(self) -> list[str]:
        with self.lock:
            return sorted(self.pool.devices)

    def listing(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"domid": r.domid, "device": r.address, "phase": r.phase.value}
                for r in self.records.all()
            ]

    # -- helpers -----------------------------------------------------------------------------
    def _alive(self, domid: int) -> bool:
        try:
            return self.domains.domain_exists(domid)
        except DomainError as exc:  # cannot tell: never clean up a guest that may be alive
            log.error("cannot look domain %d up: %s", domid, exc)
            return True

    def _backend_state(self, domid: int) -> XenbusState:
        return state_or_unknown(self.store.read(join(backend_path(domid), "state")))

    def _frontend_state(self, domid: int) -> XenbusState:
        return state_or_unknown(self.store.read(join(frontend_path(domid), "state")))

    def _backend_error(self, domid: int) -> str | None:
        text = self.store.read(f"{ERROR_ROOT}/{domid}/{DEVID}/error")
        return None if text is None else text.partition(" ")[2][:200]

    def _wait(self, done: Callable[[], bool]) -> bool:
        """Until `done` (checked under the daemon's lock) or the timeout; True when done. The
        lock is not held meanwhile: the watch loop needs it to serve what is awaited."""
        deadline = time.monotonic() + self.timeout
        while True:
            with self.lock:
                if done():
                    return True
            if time.monotonic() >= deadline:
                return False
            if self.drive is None:
                time.sleep(POLL)
            elif not self.drive():  # in-process: nothing moved, nothing will
                with self.lock:
                    return done()


def _device(text: str) -> str:
    try:
        return parse_device(text)
    except HideSyntaxError as exc:
        raise ToolstackError(str(exc)) from None


def _check_domid(domid: int) -> None:
    if domid == 0:
        raise ToolstackError("domain 0 is dom0: its devices are not passed through")
    if not 0 < domid <= DOMID_MAX:
        raise ToolstackError(f"domain id {domid} out of range (1..{DOMID_MAX})")


def _because(error: str | None) -> str:
    return f" ({error})" if error else ""


def _undone(problems: list[str]) -> str:
    if not problems:
        return "; nothing was left granted"
    return "; revoking failed, check by hand: " + "; ".join(problems)
