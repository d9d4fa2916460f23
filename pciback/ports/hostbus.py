"""The host side of the physical bus: which functions exist and which host driver holds each.

The stub pool takes a function from its host driver (unbind) before seizing it and may hand it
back (bind) on release; config access itself goes through `PhysicalDevice`.
"""

from __future__ import annotations

from typing import Protocol

from pciback.ports.bus import PhysicalDevice

STUB_DRIVER = "pciback"


class HostBus(Protocol):
    def addresses(self) -> list[str]:
        """Every function present, `DDDD:BB:DD.F`, sorted."""
        ...

    def device(self, address: str) -> PhysicalDevice:
        """KeyError when the function is not present."""
        ...

    def driver(self, address: str) -> str | None:
        """The bound driver's name, None when unbound."""
        ...

    def upstream(self, address: str) -> tuple[str, ...]:
        """The bridges above the function, nearest first (what an error on a link takes down
        with it); empty for a function on a root bus."""
        ...

    def unbind(self, address: str) -> None: ...

    def bind(self, address: str, driver: str) -> None: ...
