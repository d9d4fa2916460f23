"""A simulated dom0 for tests: the daemon's own control plane and data path, driven in-process.

SimHost is a façade, not a second backend. It holds a simulated environment (bus, xenstore,
grant table, hypervisor) and the `Daemon` built on it, exactly as `pciback daemon` and the
demo do: the stub pool with its hide list, the ownership registry, the xenbus backends and the
data path. Every host-side call is a toolstack action through xenstore, and every guest is a
`SimDomain` that answers the xenbus handshake and speaks the protocol over a granted page.
Instead of running the daemon's watch loop on a thread, the host hands the daemon its pending
watch events whenever it waits for the backend, so each call returns with the handshake done.

What the host adds to the daemon is what libxl does around it: a device not hidden is made
assignable on the spot (`xl pci-assignable-add`), a hot add is refused up front when another
domain holds the device (a refused reconfiguration would close the running guest's backend),
a removed device's nodes are deleted once the backend let it go, and a guest killed by AER
recovery is reaped.

The daemon can be stopped and started again under running guests (`stop_daemon`,
`start_daemon`, `restart_daemon`, with a `state_dir`), as an operator restarts the service, or
die and be started again (`crash_daemon`, `start_daemon`): what the guests hold is resumed from
the state database.

A device the pool seized was reset, restored and had bus mastering turned off before any guest
saw it; `physical(addr).writes` starts afresh when `attach` hands the device to a guest, so it
holds what that guest caused (`history` keeps the pool's writes too).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pciback.control.hide import format_address, parse_address
from pciback.daemon.config import Config
from pciback.daemon.control import ControlError
from pciback.daemon.core import Daemon
from pciback.daemon.datapath import SimDataPath
from pciback.protocol.abi import ChannelState
from pciback.protocol.aer import AerOutcome
from pciback.protocol.connection import BackendConnection
from pciback.protocol.dispatch import ExportedDevice
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim.device import SimDevice
from pciback.sim.domain import BackendClosed, SimDomain
from pciback.sim.environment import SimEnvironment
from pciback.sim.frontend import AerHandler, GuestDevice, SimFrontend
from pciback.sim.hypervisor import SimHypervisor
from pciback.sim.toolstack import SimToolstack
from pciback.xenbus.backend import ERROR_ROOT
from pciback.xenbus.manager import DOMID_MAX
from pciback.xenbus.states import XenbusState

MODES = ("passthrough", "vpci")
DEVID = 0  # one PCI backend device per guest, as libxl makes it


class SimHostError(Exception):
    """A host-side request that cannot be done (unknown device, device owned elsewhere, ...)."""


class SimGuest:
    """A guest domain: its pcifront (xenbus half and op path) and, behind the page, the
    daemon's connection serving it."""

    def __init__(self, domain: SimDomain, mode: str, datapath: SimDataPath) -> None:
        self.domain = domain
        self.domid = domain.domid
        self.mode = mode
        self._datapath = datapath

    def rebind(self, datapath: SimDataPath) -> None:
        """A restarted daemon serves this guest now."""
        self._datapath = datapath

    @property
    def page(self) -> SharedPage:
        return self.domain.page

    @property
    def channel(self) -> EventChannel:
        return self.domain.channel

    @property
    def frontend(self) -> SimFrontend:
        return self.domain.ops

    @property
    def backend(self) -> BackendConnection:
        """The daemon's connection serving this guest's page."""
        connection = self._datapath.connection(self.domid, DEVID)
        if connection is None:
            raise SimHostError(f"domain {self.domid} is not connected")
        return connection

    @property
    def closed(self) -> bool:
        return self.domain.closed

    @property
    def devices(self) -> list[str]:
        """The guest-visible addresses the backend published in xenstore."""
        return sorted(self.domain.xenbus.devices())

    def exported(self, physical: str) -> ExportedDevice:
        """The device as the backend serves it to this guest (its view and interrupts)."""
        found = self._datapath.exported(self.domid, _normalise(physical))
        if found is None:
            raise SimHostError(f"{physical} is not served to domain {self.domid}")
        return found[1]

    def conf_read(self, addr: str, offset: int, size: int) -> int:
        return self.frontend.conf_read(addr, offset, size)

    def conf_write(self, addr: str, offset: int, size: int, value: int) -> None:
        self.frontend.conf_write(addr, offset, size, value)

    def enable_msi(self, addr: str) -> int:
        return self.frontend.enable_msi(addr)

    def enable_multi_msi(self, addr: str, count: int) -> int:
        return self.frontend.enable_multi_msi(addr, count)

    def disable_msi(self, addr: str) -> None:
        self.frontend.disable_msi(addr)

    def enable_msix(self, addr: str, entries: Sequence[int] | int) -> list[int]:
        """`entries`: MSI-X table entries, or a count meaning entries 0..count-1."""
        wanted = list(range(entries)) if isinstance(entries, int) else list(entries)
        return self.frontend.enable_msix(addr, wanted)

    def disable_msix(self, addr: str) -> None:
        self.frontend.disable_msix(addr)

    def set_aer_handler(self, handler: AerHandler | None) -> None:
        self.frontend.set_aer_handler(handler)

    def enumerate(self) -> list[GuestDevice]:
        """Scan the root buses the backend published, as pcifront and the PCI core do."""
        return self.domain.enumerate()


def _shut_down(daemon: Daemon, domains: dict[int, SimDomain]) -> None:
    # The service threads first, then the guests' channels: a channel must not close under a
    # backend still serving it. Nothing here may refer to the SimHost, or it would never die.
    daemon.datapath.close()
    for domain in list(domains.values()):
        domain.close()
    domains.clear()
    daemon.stop()


class SimHost:
    def __init__(
        self,
        permissive: bool = False,
        *,
        aer_timeout: float = 5.0,
        op_timeout: float = 10.0,
        hypervisor: SimHypervisor | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """`permissive`: every device's uncovered config-space writes reach the hardware (the
        Linux module parameter). `state_dir`: the daemon's state database (default: memory)."""
        self.permissive = permissive
        self.aer_timeout = aer_timeout
        self.op_timeout = op_timeout
        self.env = SimEnvironment({}, hypervisor=hypervisor or SimHypervisor())
        config = Config(state_dir=state_dir, permissive_all=permissive, log_level="warning")
        self.daemon = Daemon(config, self.env, control=False)
        self.daemon.start()
        self.toolstack = SimToolstack(self.env.store, self.env.domains)
        self._lock = threading.RLock()
        self._guests: dict[int, SimGuest] = {}
        self._domains: dict[int, SimDomain] = {}
        self._made: set[int] = set()  # domains created (paused) for the daemon's toolstack role
        self.daemon.toolstack.drive = _driver(self.daemon, self._domains)
        self._finalizer = weakref.finalize(self, _shut_down, self.daemon, self._domains)

    @property
    def hypervisor(self) -> SimHypervisor:
        return self.env.hypervisor

    def __enter__(self) -> SimHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for domid in sorted(set(self._guests) | self._made):
                self.destroy_guest(domid)
            self._finalizer()

    # -- devices ---------------------------------------------------------------------------------
    def add_device(
        self,
        address: str,
        config: bytes | str | Path,
        bar_sizes: Mapping[int, int] | None = None,
    ) -> SimDevice:
        """A function appears on the bus; the stub pool seizes it if a slot names it."""
        address = _normalise(address)
        with self._lock, self.daemon.lock:
            if address in self.env.devices:
                raise SimHostError(f"{address} already exists")
            device = SimDevice(address, config, bar_sizes)
            self.env.devices[address] = device
            self.daemon.pool.device_added(address)
            return device

    def hide(self, text: str) -> list[str]:
        """Apply a `xen-pciback.hide` list to the stub pool; returns the present devices it
        seized (HideSyntaxError for a malformed list)."""
        with self._lock, self.daemon.lock:
            return sorted(self.daemon.pool.hide(text))

    def is_seized(self, address: str) -> bool:
        return _normalise(address) in self.daemon.pool.devices

    def physical(self, address: str) -> SimDevice:
        address = _normalise(address)
        try:
            return self.env.devices[address]
        except KeyError:
            raise SimHostError(f"no device {address}") from None

    def owner(self, address: str) -> int | None:
        return self.daemon.ownership.owner(_normalise(address))

    def allow_interrupt_control(self, address: str, on: bool = True) -> None:
        """The operator's `pciback interrupt-control add|remove` for a device in the pool,
        as the same control request; a guest's view of it follows at once."""
        op = "interrupt_control_add" if on else "interrupt_control_remove"
        with self._lock:
            self._running()
            try:
                self.daemon.handle({"op": op, "arg": _normalise(address)})
            except (ControlError, ValueError) as exc:
                raise SimHostError(str(exc)) from None

    # -- the daemon's lifecycle --------------------------------------------------------------------
    def stop_daemon(self) -> None:
        """Stop the daemon as SIGTERM does: guests keep their devices, pages and interrupts,
        and their ops wait for the next daemon."""
        with self._lock:
            if self.daemon.config.state_dir is None:
                raise SimHostError("a daemon restart needs a state_dir")
            self.daemon.stop()

    def crash_daemon(self) -> None:
        """The daemon dies without stopping (SIGKILL, a crash): what is not in the state
        directory yet is lost, the guests keep their devices, pages and PIRQs, and their ops
        wait for the next daemon (`start_daemon`)."""
        with self._lock:
            if self.daemon.config.state_dir is None:
                raise SimHostError("a daemon restart needs a state_dir")
            self.daemon.kill()

    def start_daemon(self) -> None:
        """A new daemon on the same host and state directory resumes the guests."""
        with self._lock:
            if not self.daemon.stopped.is_set():
                raise SimHostError("the daemon is running")
            self._finalizer.detach()
            self.daemon = Daemon(self.daemon.config, self.env, control=False)
            self.daemon.toolstack.drive = _driver(self.daemon, self._domains)
            self._finalizer = weakref.finalize(self, _shut_down, self.daemon, self._domains)
            self.daemon.start()
            for domain in self._domains.values():
                domain.pump = self.daemon.pump
            for guest in self._guests.values():
                guest.rebind(self.daemon.datapath)

    def restart_daemon(self) -> None:
        self.stop_daemon()
        self.start_daemon()

    def _running(self) -> None:
        if self.daemon.stopped.is_set():
            raise SimHostError("the daemon is stopped")

    # -- guests ----------------------------------------------------------------------------------
    def attach(self, domid: int, devices: Sequence[str], mode: str = "passthrough") -> SimGuest:
        """Give `devices` to guest `domid`: a new guest is created through xenstore and boots
        its pcifront; a running one gets them by hot add. Returns when the backend has them."""
        if isinstance(devices, str):  # one address, not its characters
            devices = [devices]
        addresses = list(dict.fromkeys(_normalise(a) for a in devices))
        with self._lock:
            self._running()
            if not 0 < domid <= DOMID_MAX:
                raise SimHostError(f"domain {domid} cannot be a pcifront guest")
            if mode not in MODES:
                raise SimHostError(f"unknown mode {mode!r}: passthrough or vpci")
            for address in addresses:
                device = self.physical(address)
                self._make_assignable(address)
                if self.owner(address) is None:
                    device.hand_over()
            guest = self._guests.get(domid)
            if guest is None:
                return self._create(domid, addresses, mode)
            if guest.mode != mode:
                raise SimHostError(f"domain {domid} already runs in {guest.mode} mode")
            new = [a for a in addresses if self.owner(a) != domid]
            for address in new:  # libxl refuses before writing anything
                owner = self.owner(address)
                if owner is not None:
                    raise SimHostError(f"{address} is assigned to domain {owner}")
            for address in new:  # one reconfiguration at a time, as libxl does
                self.toolstack.hot_add(domid, address, DEVID)
                self._settle(guest)
            return guest

    def guest(self, domid: int) -> SimGuest:
        try:
            return self._guests[domid]
        except KeyError:
            raise SimHostError(f"no guest {domid}") from None

    def detach(self, domid: int, address: str) -> None:
        """Hot remove through xenstore; the backend releases the device to the pool."""
        address = _normalise(address)
        with self._lock:
            self._running()
            guest = self.guest(domid)
            try:
                index = self.toolstack.hot_remove(domid, address)
            except KeyError:
                raise SimHostError(f"{address} is not assigned to domain {domid}") from None
            self._settle(guest)
            self.toolstack.finish_remove(domid, index)

    def destroy_guest(self, domid: int) -> None:
        """Guest shutdown: the toolstack removes its backend directory and releases the domain;
        the backend stops servicing and gives the devices back before the guest's channel goes.
        With the daemon stopped, the next daemon finds the guest gone and cleans up after it."""
        with self._lock:
            self._guests.pop(domid, None)
            domain = self._domains.pop(domid, None)
            made = domid in self._made
            self._made.discard(domid)
            if domain is None and not made:
                return
            self.toolstack.destroy(domid)
            if not self.daemon.stopped.is_set():
                self.daemon.pump()
            if domain is not None:
                domain.close()

    def inject_aer(self, address: str, state: ChannelState = ChannelState.IO_FROZEN) -> AerOutcome:
        """An uncorrectable error on `address`, recovered with its owner's help if it can.
        The host lock is not held meanwhile: the guest keeps issuing ops while it answers."""
        address = _normalise(address)
        try:
            owner, outcome = self.daemon.datapath.recover_aer(address, state, self.aer_timeout)
        except ValueError as exc:
            raise SimHostError(str(exc)) from None
        if outcome.killed:  # the toolstack reaps the killed domain
            self.destroy_guest(owner)
        return outcome

    # -- the daemon's toolstack role (pciback attach / detach instead of xl) -----------------------
    def create_domain(self, domid: int) -> None:
        """`xl create -p`: the domain exists, paused, with its xenstore home as libxl makes it
        and no PCI device: nothing of the guest runs until `unpause`."""
        with self._lock:
            self._running()
            if not 0 < domid <= DOMID_MAX:
                raise SimHostError(f"domain {domid} cannot be a pcifront guest")
            if domid in self._guests or domid in self._made:
                raise SimHostError(f"domain {domid} exists")
            self.toolstack.make_domain(domid)
            self._made.add(domid)

    def daemon_attach(
        self,
        domid: int,
        address: str,
        *,
        vdev: int | None = None,
        permissive: bool = False,
        interrupt_control: bool = False,
    ) -> dict[str, object]:
        """`pciback attach`: the daemon's own toolstack role gives the device, through the same
        control request the CLI sends. A running guest answers the hot plug before this
        returns; a paused one finds the directory when it is unpaused."""
        address = _normalise(address)
        with self._lock:
            self._running()
            device = self.physical(address)
            if self.owner(address) is None:
                device.hand_over()
            request: dict[str, object] = {
                "op": "attach",
                "domid": domid,
                "device": address,
                "permissive": permissive,
                "interrupt_control": interrupt_control,
            }
            if vdev is not None:
                request["vdev"] = vdev
            result = self._toolstack_request(request)
            guest = self._guests.get(domid)
            if guest is not None:
                if guest.domain.xenbus.state() == XenbusState.INITIALISING:
                    guest.domain.boot(self.op_timeout)  # a new PCI device: pcifront probes it
                else:
                    self._settle(guest)
            return result

    def daemon_detach(self, domid: int, address: str) -> dict[str, object]:
        """`pciback detach`: hot unplug answered by the guest, grants revoked."""
        with self._lock:
            self._running()
            request = {"op": "detach", "domid": domid, "device": _normalise(address)}
            return self._toolstack_request(request)

    def unpause(self, domid: int, mode: str | None = None) -> SimGuest:
        """`xl unpause` of a domain made by `create_domain`: the guest boots, its pcifront finds
        the directory the daemon wrote and connects; `guest.enumerate()` then scans it."""
        with self._lock:
            self._running()
            if domid not in self._made:
                raise SimHostError(f"domain {domid} was not created paused")
            self._made.discard(domid)
            domain = SimDomain(
                self.env.store, self.env.grants, domid, self.op_timeout, pump=self.daemon.pump
            )
            guest = SimGuest(domain, mode or self.daemon.config.topology, self.daemon.datapath)
            self._domains[domid] = domain
            self._guests[domid] = guest
            if domain.xenbus.backend_state() != XenbusState.UNKNOWN:
                try:
                    domain.boot(self.op_timeout)
                except (BackendClosed, TimeoutError) as exc:
                    why = self._backend_error(domid) or str(exc)
                    raise SimHostError(f"domain {domid}: {why}") from None
            return guest

    def _toolstack_request(self, request: dict[str, object]) -> dict[str, object]:
        try:
            result = self.daemon.handle(dict(request))
        except (ControlError, ValueError) as exc:
            raise SimHostError(str(exc)) from None
        assert isinstance(result, dict)
        return result

    # -- the toolstack's side ----------------------------------------------------------------------
    def _make_assignable(self, address: str) -> None:
        with self.daemon.lock:
            if address not in self.daemon.pool.devices:
                self.daemon.pool.add_slot(address)

    def _create(self, domid: int, addresses: list[str], mode: str) -> SimGuest:
        domain = SimDomain(
            self.env.store, self.env.grants, domid, self.op_timeout, pump=self.daemon.pump
        )
        guest = SimGuest(domain, mode, self.daemon.datapath)
        self._domains[domid] = domain
        self._guests[domid] = guest
        try:
            self.toolstack.create(domid, addresses, mode, DEVID)
            self.daemon.pump()  # the backend reaches InitWait before pcifront publishes
            domain.boot(self.op_timeout)
        except (BackendClosed, TimeoutError) as exc:
            why = self._backend_error(domid) or str(exc)
            self.destroy_guest(domid)
            raise SimHostError(f"domain {domid}: {why}") from None
        except BaseException:
            self.destroy_guest(domid)
            raise
        return guest

    def _settle(self, guest: SimGuest) -> None:
        try:
            guest.domain.settled(self.op_timeout)
        except (BackendClosed, TimeoutError) as exc:
            # A failed reconfiguration closes the whole backend (as Linux): the guest is lost.
            why = self._backend_error(guest.domid) or str(exc)
            self.destroy_guest(guest.domid)
            raise SimHostError(f"domain {guest.domid}: {why}; its backend closed") from None

    def _backend_error(self, domid: int) -> str | None:
        path = f"{ERROR_ROOT}/{domid}/{DEVID}/error"
        text = self.toolstack.xs.read(path)
        if text is None:
            return None
        _, _, message = text.partition(" ")  # "<errno> <message>", as xenbus_dev_fatal writes
        return message

    def backend_state(self, domid: int) -> XenbusState:
        return self.guest(domid).domain.xenbus.backend_state()


def _driver(daemon: Daemon, domains: dict[int, SimDomain]) -> Callable[[], int]:
    """What makes the simulated world move while the daemon's toolstack role waits for it:
    the daemon's pending watch events, then each guest's pcifront. (Not a SimHost method: the
    daemon must hold no reference to the host, or the host would never be collected.)"""

    def drive() -> int:
        moved = daemon.pump()
        for domain in list(domains.values()):
            if not domain.closed:
                moved += domain.xenbus.step()
        return moved

    return drive


def _normalise(address: str) -> str:
    try:
        return format_address(*parse_address(address.strip().lower()))
    except ValueError as e:
        raise SimHostError(str(e)) from None
