"""A simulated host bus: functions by address and the driver each is bound to."""

from __future__ import annotations

from collections.abc import Mapping

from pciback.ports.bus import PhysicalDevice

MAX_DEPTH = 32  # bridges above one function: a loop in `parents` must end too


class SimHostBus:
    def __init__(
        self,
        devices: Mapping[str, PhysicalDevice],
        drivers: Mapping[str, str | None] | None = None,
    ) -> None:
        self.devices = devices
        self.drivers: dict[str, str | None] = dict(drivers or {})
        self.history: list[tuple[str, str, str | None]] = []  # (op, address, driver)
        self.parents: dict[str, str] = {}  # function -> the bridge right above it, if any

    def upstream(self, address: str) -> tuple[str, ...]:
        bridges: list[str] = []
        parent = self.parents.get(address)
        while parent is not None and parent not in bridges and len(bridges) < MAX_DEPTH:
            bridges.append(parent)
            parent = self.parents.get(parent)
        return tuple(bridges)

    def addresses(self) -> list[str]:
        return sorted(self.devices)

    def device(self, address: str) -> PhysicalDevice:
        return self.devices[address]

    def driver(self, address: str) -> str | None:
        if address not in self.devices:
            raise KeyError(address)
        return self.drivers.get(address, "host")

    def unbind(self, address: str) -> None:
        self.history.append(("unbind", address, self.driver(address)))
        self.drivers[address] = None

    def bind(self, address: str, driver: str) -> None:
        if self.driver(address) is not None:
            raise ValueError(f"{address} is already bound to {self.driver(address)}")
        self.history.append(("bind", address, driver))
        self.drivers[address] = driver
