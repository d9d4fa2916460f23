"""The data path of the simulated backend: grant-mapped shared pages and event channels, and the
exported devices each connection serves (issue 4's transport, dispatcher and interrupts over the
engine's config-space view).
"""

from __future__ import annotations

import errno
import logging
import threading

from pciback.control.hide import parse_address
from pciback.daemon.quirks import quirk_register
from pciback.ownership import Ownership
from pciback.ports.hostbus import HostBus
from pciback.ports.hypervisor import HypervisorPort
from pciback.protocol.abi import ChannelState
from pciback.protocol.aer import DEFAULT_TIMEOUT, AerOutcome, recover
from pciback.protocol.connection import AerTarget, BackendConnection
from pciback.protocol.dispatch import ExportedDevice
from pciback.protocol.interrupts import InterruptControl
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.stub import StubPool

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
        self.lock = threading.Lock()
        self.by_guest: dict[str, tuple[str, ExportedDevice]] = {}
        self.by_devfn: dict[tuple[int, int, int], ExportedDevice] = {}

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
        connection = BackendConnection(domid, page, channel.backend, devices)
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
        with table.lock:
            for guest, (physical, exported) in list(table.by_guest.items()):
                if devices.get(guest) != physical:
                    exported.irq.teardown()
                    del table.by_guest[guest]
                    domain, bus, slot, function = parse_address(guest)
                    table.by_devfn.pop((domain, bus, slot << 3 | function), None)
            for guest, physical in devices.items():
                if guest in table.by_guest:
                    continue
                exported = self._export(domid, guest, physical)
                table.by_guest[guest] = (physical, exported)
                domain, bus, slot, function = parse_address(guest)
                table.by_devfn[(domain, bus, slot << 3 | function)] = exported

    def _export(self, domid: int, guest: str, physical: str) -> ExportedDevice:
        from pciback.engine import build_config_space  # loads the generated tables

        owner = self.ownership.owner(physical)
        if owner != domid:  # interrupts are mapped for the registered owner and no one else
            raise ValueError(f"{physical} is owned by domain {owner}, not {domid}")
        device = self.bus.device(physical)
        permissive, quirks = self.pool.policy(physical)
        view = build_config_space(
            device, permissive=permissive, extra_registers=[quirk_register(q) for q in quirks]
        )
        irq = InterruptControl(owner, device, self.hypervisor, view)
        return ExportedDevice(guest, device, view, irq)

    def disconnect(self, domid: int, devid: int) -> None:
        with self._lock:
            link = self._links.pop((domid, devid), None)
        if link is None:
            return
        link.connection.close()
        with link.devices.lock:
            for _, exported in link.devices.by_guest.values():
                exported.irq.teardown()
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
                with link.devices.lock:
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

    def close(self) -> None:
        for domid, devid in list(self._links):
            self.disconnect(domid, devid)
