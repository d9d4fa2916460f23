"""A simulated dom0: physical devices from dumps, a hypervisor, and guests whose every access
crosses a real shared page and event channel to a backend thread.

Attaching a device the hide list did not already take seizes it on the spot, as `xl
pci-assignable-add` does; a device belongs to at most one guest. When a guest loses a device
(detach, destroy, or an AER kill) its interrupts are torn down and the device is reset, so the
next owner finds neither mapped PIRQs nor the previous guest's settings.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from pciback.control.hide import HidePattern, format_address, parse_address, parse_hide
from pciback.protocol.abi import ChannelState
from pciback.protocol.aer import AerOutcome, recover
from pciback.protocol.connection import AerTarget, BackendConnection
from pciback.protocol.devmap import DeviceMap, DeviceMapFull, Mode
from pciback.protocol.dispatch import ExportedDevice
from pciback.protocol.interrupts import InterruptControl
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim.device import SimDevice
from pciback.sim.frontend import AerHandler, GuestDevice, SimFrontend
from pciback.sim.hypervisor import SimHypervisor


class SimHostError(Exception):
    """A host-side request that cannot be done (unknown device, device owned elsewhere, ...)."""


class SimGuest:
    """A guest domain: its pcifront and, behind the page, its backend connection."""

    def __init__(self, domid: int, mode: Mode, op_timeout: float) -> None:
        self.domid = domid
        self.mode: Mode = mode
        self.devmap = DeviceMap(mode)
        self.page = SharedPage()
        self.channel = EventChannel()
        self.backend = BackendConnection(domid, self.page, self.channel.backend, self.devmap)
        self.frontend = SimFrontend(self.page, self.channel.frontend, timeout=op_timeout)
        self.backend.start()
        self.frontend.start()
        self.closed = False

    @property
    def devices(self) -> list[str]:
        return self.devmap.guest_addresses()

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
        return self.frontend.enumerate(self.devmap.root_buses())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.frontend.close()
        self.backend.close()
        self.channel.close()


def _close_guests(guests: dict[int, SimGuest]) -> None:
    for guest in list(guests.values()):
        guest.close()


class SimHost:
    def __init__(
        self,
        permissive: bool = False,
        *,
        aer_timeout: float = 5.0,
        op_timeout: float = 10.0,
        hypervisor: SimHypervisor | None = None,
    ) -> None:
        self.permissive = permissive
        self.aer_timeout = aer_timeout
        self.op_timeout = op_timeout
        self.hypervisor = hypervisor or SimHypervisor()
        self._lock = threading.RLock()
        self._devices: dict[str, SimDevice] = {}
        self._hide: list[HidePattern] = []
        self._seized: set[str] = set()
        self._owners: dict[str, int] = {}
        self._guests: dict[int, SimGuest] = {}
        # Service threads hold no reference to the host; a host dropped unclosed still stops them.
        self._finalizer = weakref.finalize(self, _close_guests, self._guests)

    def __enter__(self) -> SimHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for domid in list(self._guests):
            self.destroy_guest(domid)
        self._finalizer()

    # -- devices ---------------------------------------------------------------------------------
    def add_device(
        self,
        address: str,
        config: bytes | str | Path,
        bar_sizes: Mapping[int, int] | None = None,
    ) -> SimDevice:
        address = _normalise(address)
        with self._lock:
            if address in self._devices:
                raise SimHostError(f"{address} already exists")
            device = SimDevice(address, config, bar_sizes)
            self._devices[address] = device
            if any(p.matches(address) for p in self._hide):
                self._seized.add(address)
            return device

    def hide(self, text: str) -> list[str]:
        """Apply a `xen-pciback.hide` list; returns the present devices it seized."""
        patterns = parse_hide(text)
        with self._lock:
            self._hide.extend(patterns)
            taken = [a for a in self._devices if any(p.matches(a) for p in patterns)]
            self._seized.update(taken)
            return sorted(taken)

    def is_seized(self, address: str) -> bool:
        return _normalise(address) in self._seized

    def physical(self, address: str) -> SimDevice:
        address = _normalise(address)
        try:
            return self._devices[address]
        except KeyError:
            raise SimHostError(f"no device {address}") from None

    def owner(self, address: str) -> int | None:
        return self._owners.get(_normalise(address))

    # -- guests ----------------------------------------------------------------------------------
    def attach(self, domid: int, devices: Sequence[str], mode: Mode = "passthrough") -> SimGuest:
        if isinstance(devices, str):  # one address, not its characters
            devices = [devices]
        addresses = [_normalise(a) for a in devices]
        with self._lock:
            if domid == 0:
                raise SimHostError("dom0 cannot be a pcifront guest")
            if mode not in ("passthrough", "vpci"):
                raise SimHostError(f"unknown mode {mode!r}: passthrough or vpci")
            for address in addresses:
                self.physical(address)
                owner = self._owners.get(address)
                if owner is not None and owner != domid:
                    raise SimHostError(f"{address} is assigned to domain {owner}")
            guest = self._guests.get(domid)
            if guest is None:
                guest = SimGuest(domid, mode, self.op_timeout)
                self._guests[domid] = guest
            elif guest.mode != mode:
                raise SimHostError(f"domain {domid} already runs in {guest.mode} mode")
            for address in addresses:
                try:
                    guest.devmap.add(address, functools.partial(self._export, domid, address))
                except DeviceMapFull as e:
                    raise SimHostError(str(e)) from None
                self._seized.add(address)
                self._owners[address] = domid
            return guest

    def guest(self, domid: int) -> SimGuest:
        try:
            return self._guests[domid]
        except KeyError:
            raise SimHostError(f"no guest {domid}") from None

    def detach(self, domid: int, address: str) -> None:
        address = _normalise(address)
        with self._lock:
            guest = self.guest(domid)
            exported = guest.devmap.remove(address)
            if exported is None:
                raise SimHostError(f"{address} is not assigned to domain {domid}")
            self._release(address, exported, reset=True)

    def destroy_guest(self, domid: int) -> None:
        self._destroy(domid, reset=True)

    def _destroy(self, domid: int, *, reset: bool) -> None:
        with self._lock:
            guest = self._guests.pop(domid, None)
            if guest is None:
                return
            guest.close()
            for address in guest.devmap.physical_addresses():
                exported = guest.devmap.remove(address)
                if exported is not None:
                    self._release(address, exported, reset=reset)

    def inject_aer(self, address: str, state: ChannelState = ChannelState.IO_FROZEN) -> AerOutcome:
        """An uncorrectable error on `address`, recovered with its owner's help if it can."""
        address = _normalise(address)
        with self._lock:
            domid = self._owners.get(address)
            if domid is None:
                raise SimHostError(f"{address} is not assigned to a guest")
            guest = self._guests[domid]
            exported = guest.devmap.get(address)
            assert exported is not None
        domain, bus, slot, function = parse_address(exported.guest_address)
        target = AerTarget(domain, bus, slot << 3 | function)
        device = self._devices[address]

        def reset_device() -> None:
            device.reset()
            exported.irq.restore()  # what a slot reset's state restore gives back

        outcome = recover(
            guest.backend,
            target,
            state,
            reset_device=reset_device,
            kill_guest=lambda: self._kill(domid),
            timeout=self.aer_timeout,
        )
        if outcome.killed:  # the toolstack reaps the killed domain; its device is reset already
            self._destroy(domid, reset=False)
        return outcome

    # -- internals -------------------------------------------------------------------------------
    def _export(self, domid: int, address: str, guest_address: str) -> ExportedDevice:
        from pciback.engine import build_config_space  # the engine loads generated tables

        device = self._devices[address]
        view = build_config_space(device, permissive=self.permissive)
        irq = InterruptControl(domid, device, self.hypervisor, view)
        return ExportedDevice(guest_address, device, view, irq)

    def _kill(self, domid: int) -> None:
        self.hypervisor.kill_domain(domid)
        guest = self._guests.get(domid)
        if guest is not None:
            for address in guest.devmap.physical_addresses():
                exported = guest.devmap.get(address)
                if exported is not None:
                    exported.irq.teardown()

    def _release(self, address: str, exported: ExportedDevice, *, reset: bool) -> None:
        exported.irq.teardown()
        if reset:
            self._devices[address].reset()
        self._owners.pop(address, None)


def _normalise(address: str) -> str:
    try:
        return format_address(*parse_address(address.strip().lower()))
    except ValueError as e:
        raise SimHostError(str(e)) from None
