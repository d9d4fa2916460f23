"""Which guest-visible address each exported device has.

`passthrough` shows a device at its physical address (the guest sees the host's buses, which
the backend publishes as root buses). `vpci` puts every device on the virtual bus 0000:00: the
functions of one physical slot share a virtual slot and keep their function numbers, other
devices take the lowest free slot, as Linux's vpci.c does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

from pciback.control.hide import format_address, parse_address
from pciback.protocol.dispatch import ExportedDevice

Mode = Literal["passthrough", "vpci"]
SLOTS = 32


class DeviceMapFull(Exception):
    """No free virtual slot left for a device."""


class DeviceMap:
    def __init__(self, mode: Mode) -> None:
        if mode not in ("passthrough", "vpci"):
            raise ValueError(f"unknown export mode {mode!r}")
        self.mode: Mode = mode
        self._lock = threading.Lock()
        self._by_devfn: dict[tuple[int, int, int], ExportedDevice] = {}
        self._by_physical: dict[str, ExportedDevice] = {}

    def add(self, physical: str, make: Callable[[str], ExportedDevice]) -> ExportedDevice:
        """Export `physical`; `make` builds the device for its guest address."""
        with self._lock:
            if physical in self._by_physical:
                return self._by_physical[physical]
            guest = self._guest_address(physical)
            dev = make(guest)
            domain, bus, slot, function = parse_address(guest)
            self._by_devfn[(domain, bus, slot << 3 | function)] = dev
            self._by_physical[physical] = dev
            return dev

    def remove(self, physical: str) -> ExportedDevice | None:
        with self._lock:
            dev = self._by_physical.pop(physical, None)
            if dev is not None:
                domain, bus, slot, function = parse_address(dev.guest_address)
                del self._by_devfn[(domain, bus, slot << 3 | function)]
            return dev

    def lookup(self, domain: int, bus: int, devfn: int) -> ExportedDevice | None:
        return self._by_devfn.get((domain, bus, devfn))

    def get(self, physical: str) -> ExportedDevice | None:
        return self._by_physical.get(physical)

    def physical_addresses(self) -> list[str]:
        with self._lock:
            return list(self._by_physical)

    def guest_addresses(self) -> list[str]:
        with self._lock:
            return sorted(d.guest_address for d in self._by_physical.values())

    def root_buses(self) -> list[tuple[int, int]]:
        with self._lock:
            return sorted({(k[0], k[1]) for k in self._by_devfn})

    def _guest_address(self, physical: str) -> str:
        domain, bus, slot, function = parse_address(physical)
        if self.mode == "passthrough":
            return format_address(domain, bus, slot, function)
        used: set[int] = set()
        for other, dev in self._by_physical.items():
            _, _, vslot, _ = parse_address(dev.guest_address)
            used.add(vslot)
            o_domain, o_bus, o_slot, o_function = parse_address(other)
            if (o_domain, o_bus, o_slot) == (domain, bus, slot) and o_function != function:
                return format_address(0, 0, vslot, function)
        for vslot in range(SLOTS):
            if vslot not in used:
                return format_address(0, 0, vslot, function)
        raise DeviceMapFull(f"no virtual slot left for {physical}")
