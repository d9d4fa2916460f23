"""How a guest's devices are laid out on its PCI buses: the two topologies of the Linux driver.

passthrough  the guest sees each device at its real address; every bus that holds an exported
             device and has no exported bridge above it is published as a root.
vpci         the guest sees one bus 0000:00; each device gets the first free slot, functions of
             one physical multifunction device share a slot and keep their function numbers.
"""

from __future__ import annotations

from typing import Protocol

from pciback.control.hide import format_address, parse_address

VPCI_SLOTS = 32


class TopologyError(ValueError):
    pass


class Topology(Protocol):
    name: str

    def add(
        self,
        physical: str,
        is_bridge: bool,
        guest: str | None = None,
        bridged_buses: tuple[int, int] | None = None,
    ) -> str:
        """Place `physical`; returns its guest address (`guest` restores an earlier placement,
        `bridged_buses` is a PCI-to-PCI bridge's secondary..subordinate range)."""
        ...

    def remove(self, physical: str) -> None: ...

    def physical_of(self, guest: str) -> str | None: ...

    def guest_of(self, physical: str) -> str | None: ...

    def roots(self) -> list[tuple[int, int]]:
        """(domain, bus) pairs to publish as root-N, in order."""
        ...

    def devices(self) -> dict[str, str]:
        """guest address -> physical address."""
        ...


class Passthrough:
    name = "passthrough"

    def __init__(self) -> None:
        self._devices: dict[str, str] = {}
        self._bridged: dict[str, tuple[int, int, int]] = {}  # bridge -> (domain, first, last)

    def add(
        self,
        physical: str,
        is_bridge: bool,
        guest: str | None = None,
        bridged_buses: tuple[int, int] | None = None,
    ) -> str:
        if guest is not None and guest != physical:
            raise TopologyError(f"passthrough places {physical} at its own address, not {guest}")
        if physical in self._devices:
            raise TopologyError(f"{physical} is already on this guest's bus")
        self._devices[physical] = physical
        if bridged_buses is not None and bridged_buses[0] <= bridged_buses[1]:
            self._bridged[physical] = (parse_address(physical)[0], *bridged_buses)
        return physical

    def remove(self, physical: str) -> None:
        self._devices.pop(physical, None)
        self._bridged.pop(physical, None)

    def physical_of(self, guest: str) -> str | None:
        return self._devices.get(guest)

    def guest_of(self, physical: str) -> str | None:
        return physical if physical in self._devices else None

    def roots(self) -> list[tuple[int, int]]:
        # As Linux: a device reached through an exported bridge is found by scanning below
        # that bridge, so its bus is not a root of its own.
        roots: list[tuple[int, int]] = []
        for physical in self._devices:
            domain, bus, _, _ = parse_address(physical)
            behind = any(
                d == domain and first <= bus <= last and bridge != physical
                for bridge, (d, first, last) in self._bridged.items()
            )
            if not behind and (domain, bus) not in roots:
                roots.append((domain, bus))
        return roots

    def devices(self) -> dict[str, str]:
        return dict(self._devices)


class VirtualBus:
    name = "vpci"

    def __init__(self) -> None:
        self._slots: list[dict[int, str]] = [{} for _ in range(VPCI_SLOTS)]

    def _home(self, physical: str) -> tuple[int, int, int]:
        domain, bus, slot, _ = parse_address(physical)
        return domain, bus, slot

    def add(
        self,
        physical: str,
        is_bridge: bool,
        guest: str | None = None,
        bridged_buses: tuple[int, int] | None = None,
    ) -> str:
        if is_bridge:
            raise TopologyError(f"{physical}: bridges cannot be exported on the virtual PCI bus")
        if self.guest_of(physical) is not None:
            raise TopologyError(f"{physical} is already on this guest's bus")
        function = parse_address(physical)[3]
        if guest is not None:
            gd, gb, gs, gf = parse_address(guest)
            if (gd, gb) != (0, 0) or gf != function or gf in self._slots[gs]:
                raise TopologyError(f"cannot restore {physical} at {guest}")
            self._slots[gs][gf] = physical
            return guest
        home = self._home(physical)
        for slot, functions in enumerate(self._slots):
            if functions and self._home(next(iter(functions.values()))) == home:
                if function in functions:
                    raise TopologyError(f"virtual slot {slot} already has function {function}")
                functions[function] = physical
                return format_address(0, 0, slot, function)
        for slot, functions in enumerate(self._slots):
            if not functions:
                functions[function] = physical
                return format_address(0, 0, slot, function)
        raise TopologyError("no more space on the virtual PCI bus (32 slots)")

    def remove(self, physical: str) -> None:
        for functions in self._slots:
            for function, p in list(functions.items()):
                if p == physical:
                    del functions[function]

    def physical_of(self, guest: str) -> str | None:
        try:
            domain, bus, slot, function = parse_address(guest)
        except ValueError:
            return None
        if (domain, bus) != (0, 0):
            return None
        return self._slots[slot].get(function)

    def guest_of(self, physical: str) -> str | None:
        for slot, functions in enumerate(self._slots):
            for function, p in functions.items():
                if p == physical:
                    return format_address(0, 0, slot, function)
        return None

    def roots(self) -> list[tuple[int, int]]:
        return [(0, 0)]

    def devices(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for slot, functions in enumerate(self._slots):
            for function, physical in sorted(functions.items()):
                out[format_address(0, 0, slot, function)] = physical
        return out


def make_topology(mode: str) -> Topology:
    if mode == "passthrough":
        return Passthrough()
    if mode == "vpci":
        return VirtualBus()
    raise TopologyError(f"unknown topology {mode!r} (passthrough or vpci)")
