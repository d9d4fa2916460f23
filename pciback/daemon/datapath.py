"""The data path of the simulated backend: grant-mapped shared pages and event channels, and the
exported devices each connection serves (issue 4's transport, dispatcher and interrupts over the
engine's config-space view).

What a guest holds survives a daemon restart through the state database: each exported view's
virtual state (shadow registers, BAR sizing latches) and each device's mapped PIRQs. Interrupt
records are written on every change, before the device is programmed. A view is saved after a
wake-up of its connection whose conf writes changed it (the frontend already has its answers
then), and on a clean stop. So a crash loses the view changes of the ops served in the batch
under way, and leaks a PIRQ mapped just before it (see pciback.protocol.interrupts). Records are
read back as untrusted: what fails validation is logged and the device is shown as it is.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

from pciback.control.hide import parse_address
from pciback.daemon.quirks import quirk_register
from pciback.errors import XenPciError
from pciback.ownership import Ownership
from pciback.ports.hostbus import HostBus
from pciback.ports.hypervisor import HypervisorPort
from pciback.protocol.abi import ChannelState, Cmd
from pciback.protocol.aer import DEFAULT_TIMEOUT, AerOutcome, recover
from pciback.protocol.connection import AerTarget, BackendConnection
from pciback.protocol.dispatch import ExportedDevice, dispatch
from pciback.protocol.interrupts import InterruptControl, InterruptStateError, unmap_saved
from pciback.protocol.ops import OpRequest, OpResult
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.state import StateError
from pciback.stub import StubPool

if TYPE_CHECKING:
    from pciback.engine.space import ConfigSpace

MAX_GRANTS = 4096

log = logging.getLogger("pciback.datapath")


class SimGrantTable:
    """What the hypervisor keeps for the simulation: pages a guest granted, ports it bound."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pages: dict[tuple[int, int], SharedPage] = {}
        self._channels: dict[tuple[int, int], EventChannel] = {}
        self._next = 8  # low grant references are the guest kernel's own

    def grant(self, domid: int, page: SharedPage) -> int:
        with self._lock:
            if len(self._pages) >= MAX_GRANTS:
                raise OSError(errno.ENOSPC, "grant table full")
            ref, self._next = self._next, self._next + 1
            self._pages[(domid, ref)] = page
            return ref

    def bind(self, domid: int, channel: EventChannel) -> int:
        with self._lock:
            port, self._next = self._next, self._next + 1
            self._channels[(domid, port)] = channel
            return port

    def map(self, domid: int, ref: int) -> SharedPage:
        with self._lock:
            page = self._pages.get((domid, ref))
        if page is None:
            raise OSError(errno.ENOENT, f"domain {domid} granted no page with reference {ref}")
        return page

    def channel(self, domid: int, port: int) -> EventChannel:
        with self._lock:
            channel = self._channels.get((domid, port))
        if channel is None:
            raise OSError(errno.ENOENT, f"domain {domid} has no unbound event channel {port}")
        return channel

    def revoke(self, domid: int) -> None:
        with self._lock:
            for key in [k for k in self._pages if k[0] == domid]:
                del self._pages[key]
            for key in [k for k in self._channels if k[0] == domid]:
                del self._channels[key]


class _GuestDevices:
    """The DeviceLookup of one connection: guest devfn -> exported device."""

    def __init__(self) -> None:
        # Held by the service thread for the whole of each op, and by whoever drops devices:
        # an op that looked a device up finishes before the device can be torn down and
        # given back, so nothing of it lands on a device the guest no longer holds.
        # Taken before `lock`, never while holding it.
        self.serving = threading.Lock()
        self.lock = threading.Lock()
        self.by_guest: dict[str, tuple[str, ExportedDevice]] = {}
        self.by_devfn: dict[tuple[int, int, int], ExportedDevice] = {}
        self.spaces: dict[str, ConfigSpace] = {}  # physical address -> the view exported
        self.dirty: set[str] = set()  # physical addresses a conf write reached since a save
        self.saved: dict[str, str] = {}  # physical address -> the view state last saved

    def lookup(self, domain: int, bus: int, devfn: int) -> ExportedDevice | None:
        with self.lock:
            return self.by_devfn.get((domain, bus, devfn))


class _Link:
    def __init__(self, connection: BackendConnection, devices: _GuestDevices) -> None:
        self.connection = connection
        self.devices = devices


class SimDataPath:
    def __init__(
        self,
        grants: SimGrantTable,
        bus: HostBus,
        hypervisor: HypervisorPort,
        pool: StubPool,
        ownership: Ownership,
    ) -> None:
        self.grants = grants
        self.bus = bus
        self.hypervisor = hypervisor
        self.pool = pool
        self.ownership = ownership
        self._links: dict[tuple[int, int], _Link] = {}
        self._lock = threading.Lock()

    def connect(self, domid: int, devid: int, gnt_ref: int, evtchn: int) -> None:
        page = self.grants.map(domid, gnt_ref)
        channel = self.grants.channel(domid, evtchn)
        self.disconnect(domid, devid)
        devices = _GuestDevices()
        connection = BackendConnection(
            domid,
            page,
            channel.backend,
            devices,
            handler=lambda req: self._serve_op(devices, req),
            after_batch=lambda: self._save_views(domid, devices, dirty_only=True),
        )
        with self._lock:
            self._links[(domid, devid)] = _Link(connection, devices)
        connection.start()
        log.info(
            "dom%d/%d: serving the shared page (gref %d, port %d)", domid, devid, gnt_ref, evtchn
        )

    def set_devices(self, domid: int, devid: int, devices: dict[str, str]) -> None:
        with self._lock:
            link = self._links.get((domid, devid))
        if link is None:
            return
        table = link.devices
        with table.serving, table.lock:
            for guest, (physical, exported) in list(table.by_guest.items()):
                if devices.get(guest) != physical:
                    self._drop(table, physical, exported)
                    del table.by_guest[guest]
                    domain, bus, slot, function = parse_address(guest)
                    table.by_devfn.pop((domain, bus, slot << 3 | function), None)
            for guest, physical in devices.items():
                if guest in table.by_guest:
                    continue
                exported = self._export(domid, guest, physical, table)
                table.by_guest[guest] = (physical, exported)
                domain, bus, slot, function = parse_address(guest)
                table.by_devfn[(domain, bus, slot << 3 | function)] = exported

    def _export(
        self, domid: int, guest: str, physical: str, table: _GuestDevices
    ) -> ExportedDevice:
        from pciback.engine import build_config_space  # loads the generated tables

        owner = self.ownership.owner(physical)
        if owner != domid:  # interrupts are mapped for the registered owner and no one else
            raise ValueError(f"{physical} is owned by domain {owner}, not {domid}")
        device = self.bus.device(physical)
        permissive, quirks = self.pool.policy(physical)
        view = build_config_space(
            device, permissive=permissive, extra_registers=[quirk_register(q) for q in quirks]
        )
        view.allow_interrupt_control = self.pool.allows_interrupt_control(physical)

        def record(state: dict[str, Any]) -> None:
            self._save_interrupts(physical, owner, state)

        irq = InterruptControl(owner, device, self.hypervisor, view, on_change=record)
        self._restore(domid, physical, view, irq, table)
        table.spaces[physical] = view
        return ExportedDevice(guest, device, view, irq)

    # -- what survives a restart -------------------------------------------------------------
    def _restore(
        self,
        domid: int,
        physical: str,
        view: ConfigSpace,
        irq: InterruptControl,
        table: _GuestDevices,
    ) -> None:
        """Adopt what a previous daemon saved for this device and guest. Whatever does not
        validate is logged and dropped: the guest then sees the device as the device is."""
        from pciback.engine.snapshot import import_state

        state = self.pool.state
        if state is None:
            return
        saved_view = state.views().get(physical)
        if saved_view is not None:
            saved_domid, text = saved_view
            try:
                if saved_domid != domid:
                    raise ValueError(f"saved for domain {saved_domid}")
                skipped = import_state(view, json.loads(text))
            except Exception as exc:  # untrusted input: whatever fails costs only this record
                log.error(
                    "%s: saved view state for domain %d unusable (%s); the guest sees the "
                    "device as it is now",
                    physical,
                    domid,
                    exc,
                )
                state.forget_view(physical)
            else:
                for problem in skipped:
                    log.warning("%s: saved view state: %s", physical, problem)
                table.saved[physical] = text
                log.info("%s: view state of domain %d restored", physical, domid)
            # The operator's current policy wins over the flags the record carries.
            view.permissive, _ = self.pool.policy(physical)
            view.allow_interrupt_control = self.pool.allows_interrupt_control(physical)
        saved_irq = state.interrupts().get(physical)
        if saved_irq is not None:
            saved_domid, text = saved_irq
            try:
                data = json.loads(text)
            except (ValueError, RecursionError) as exc:
                log.error("%s: saved interrupt state unreadable (%s); dropped", physical, exc)
                state.forget_interrupts(physical)
                return
            try:
                if saved_domid != domid:
                    raise InterruptStateError(f"saved for domain {saved_domid}, not {domid}")
                irq.import_state(data)
            except InterruptStateError as exc:
                log.error("%s: saved interrupt state not adopted: %s", physical, exc)
                self._unmap_record(physical, saved_domid, data)
            else:
                log.info("%s: interrupts of domain %d adopted: %s", physical, domid, text)

    def _unmap_record(self, physical: str, domid: int, data: object) -> None:
        state = self.pool.state
        try:
            pirqs = unmap_saved(self.hypervisor, domid, data)
        except InterruptStateError as exc:
            log.error(
                "%s: saved interrupt state of domain %d is malformed (%s); whatever PIRQs it "
                "named stay mapped until the domain is destroyed",
                physical,
                domid,
                exc,
            )
        else:
            if pirqs:
                log.warning("%s: unmapped PIRQs %s of domain %d", physical, list(pirqs), domid)
        if state is not None:
            state.forget_interrupts(physical)

    def sweep_saved(self) -> list[str]:
        """After start-up: records no connection adopted belong to guests that went away (or
        never came back); unmap their PIRQs and drop them. Returns the addresses swept."""
        state = self.pool.state
        if state is None:
            return []
        held = self.held()
        swept = []
        for physical, (domid, text) in state.interrupts().items():
            if (physical, domid) in held:
                continue
            try:
                data: object = json.loads(text)
            except (ValueError, RecursionError):
                data = None
            self._unmap_record(physical, domid, data)
            swept.append(physical)
        for physical, (domid, _) in state.views().items():
            if (physical, domid) not in held:
                state.forget_view(physical)
        return swept

    def held(self) -> set[tuple[str, int]]:
        """(physical address, domain) of every device a connection serves now."""
        with self._lock:
            links = [(d, link) for (d, _), link in self._links.items()]
        pairs = set()
        for domid, link in links:
            with link.devices.lock:
                pairs |= {(p, domid) for p, _ in link.devices.by_guest.values()}
        return pairs

    def _save_interrupts(self, physical: str, domid: int, data: dict[str, Any]) -> None:
        state = self.pool.state
        if state is None:
            return
        try:
            if data["msi"] or data["msix"]:
                state.save_interrupts(physical, domid, json.dumps(data))
            else:
                state.forget_interrupts(physical)
        except (sqlite3.Error, StateError):
            # The guest's op goes on; the mapping is only at risk across a restart.
            log.exception("%s: saving the interrupt state failed", physical)

    def _serve_op(self, devices: _GuestDevices, req: OpRequest) -> OpResult:
        with devices.serving:
            result = dispatch(req, devices)
            if req.cmd == Cmd.CONF_WRITE and result.err == XenPciError.SUCCESS:
                with devices.lock:
                    exported = devices.by_devfn.get((req.domain, req.bus, req.devfn))
                    if exported is not None:
                        devices.dirty.add(exported.physical.address)
        return result

    def _save_views(self, domid: int, devices: _GuestDevices, dirty_only: bool) -> None:
        """Save the views that changed since their last save. Under the table's lock, so a
        device being dropped cannot have its record written back after it was deleted."""
        from pciback.engine.snapshot import export_state

        with devices.lock:
            names = set(devices.dirty) if dirty_only else set(devices.spaces)
            devices.dirty.clear()
            state = self.pool.state if names else None
            if state is None:
                return
            for physical in sorted(names):
                space = devices.spaces.get(physical)
                if space is None:
                    continue
                text = json.dumps(export_state(space), sort_keys=True)
                if devices.saved.get(physical) == text:
                    continue
                try:
                    state.save_view(physical, domid, text)
                except (sqlite3.Error, StateError):
                    log.exception("%s: saving the view state failed", physical)
                    continue
                devices.saved[physical] = text

    def _drop(self, devices: _GuestDevices, physical: str, exported: ExportedDevice) -> None:
        """The guest lets the device go: its interrupts and its saved view go with it.
        Called with the table's lock held."""
        exported.irq.teardown()
        devices.spaces.pop(physical, None)
        devices.saved.pop(physical, None)
        devices.dirty.discard(physical)
        state = self.pool.state
        if state is not None:
            try:
                state.forget_view(physical)
            except (sqlite3.Error, StateError):
                log.exception("%s: forgetting the view state failed", physical)

    def apply_policy(self, physical: str) -> None:
        """The operator changed a device's permissive or interrupt-control knob: a view
        already exported follows at once."""
        permissive, _ = self.pool.policy(physical)
        control = self.pool.allows_interrupt_control(physical)
        with self._lock:
            links = list(self._links.values())
        for link in links:
            with link.devices.lock:
                space = link.devices.spaces.get(physical)
                if space is not None:
                    space.permissive = permissive
                    space.allow_interrupt_control = control

    def disconnect(self, domid: int, devid: int) -> None:
        with self._lock:
            link = self._links.pop((domid, devid), None)
        if link is None:
            return
        link.connection.close()
        with link.devices.serving, link.devices.lock:
            for physical, exported in link.devices.by_guest.values():
                self._drop(link.devices, physical, exported)
            link.devices.by_guest.clear()
            link.devices.by_devfn.clear()

    # -- what the host side asks of a live connection -----------------------------------------
    def connection(self, domid: int, devid: int = 0) -> BackendConnection | None:
        with self._lock:
            link = self._links.get((domid, devid))
        return None if link is None else link.connection

    def exported(
        self, domid: int, physical: str
    ) -> tuple[BackendConnection, ExportedDevice] | None:
        """The connection serving `physical` to `domid`, and the device as exported there."""
        with self._lock:
            links = [link for (d, _), link in self._links.items() if d == domid]
        for link in links:
            with link.devices.lock:
                for p, exported in link.devices.by_guest.values():
                    if p == physical:
                        return link.connection, exported
        return None

    def recover_aer(
        self, physical: str, state: ChannelState, timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[int, AerOutcome]:
        """An uncorrectable error on `physical`: recover it with its owner's frontend, or kill
        the owner (its interrupts go with it) and reset the device. Returns (owner, outcome);
        a killed owner is the toolstack's to reap, which releases the device."""
        owner = self.ownership.owner(physical)
        found = None if owner is None else self.exported(owner, physical)
        if owner is None or found is None:
            raise ValueError(f"{physical} is not in use by a connected guest")
        connection, exported = found
        domain, bus, slot, function = parse_address(exported.guest_address)

        def reset_device() -> None:
            exported.physical.reset()
            exported.irq.restore()  # what a slot reset's state restore gives back

        def kill_guest() -> None:
            self.hypervisor.kill_domain(owner)
            with self._lock:
                links = [link for (d, _), link in self._links.items() if d == owner]
            for link in links:
                with link.devices.serving, link.devices.lock:
                    for _, dev in link.devices.by_guest.values():
                        dev.irq.teardown()

        target = AerTarget(domain, bus, slot << 3 | function)
        outcome = recover(
            connection,
            target,
            state,
            reset_device=reset_device,
            kill_guest=kill_guest,
            timeout=timeout,
        )
        return owner, outcome

    def suspend(self, domid: int, devid: int) -> None:
        with self._lock:
            link = self._links.pop((domid, devid), None)
        if link is not None:
            link.connection.close()
            self._save_views(domid, link.devices, dirty_only=False)

    def close(self) -> None:
        for domid, devid in list(self._links):
            self.disconnect(domid, devid)
