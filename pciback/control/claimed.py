"""What the stub pool hands a guest's backend when it claims a device for it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Claimed:
    """A device handed to a guest: what the topology needs to place it."""

    address: str
    is_bridge: bool
    # A PCI-to-PCI bridge's (secondary, subordinate) bus range: buses reached through it.
    bridged_buses: tuple[int, int] | None = None
