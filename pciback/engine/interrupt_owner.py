"""Who writes a device's MSI and MSI-X control bits for a guest's view: its interrupt owner.

The enable bits (and MSI-X's function mask) decide whether the device signals interrupts the
hypervisor has mapped for the guest, so one object owns them: the protocol's InterruptControl,
which the ops go through too. A config write that interrupt control lets through is handed to
it by the view rather than written to the device by the hook; a view with no owner attached
(built outside a served connection) lets no such write reach the device.
"""

from __future__ import annotations

from typing import Protocol


class InterruptOwner(Protocol):
    def write_control_bit(self, control: int, bit: int, on: bool) -> None:
        """Set (`on`) or clear `bit` of the MSI or MSI-X control register at offset
        `control` of the device, for a guest's config write."""
        ...
