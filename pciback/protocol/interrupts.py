"""MSI, multi-message MSI and MSI-X for one exported device.

The state checks are those Linux added after XSA-157 (a guest toggling modes or re-enabling
could otherwise leak or double-map host interrupts): no MSI while MSI-X is on nor the reverse,
no second enable, an MSI-X request bounded by the page (SH_INFO_MAX_VEC) and by the device's
table, and memory decoding on before MSI-X (the table lives in a BAR).

Where this differs from Linux on purpose: Linux hands the guest a raw -errno for MSI-X
failures (-EINVAL, -EALREADY, -ENXIO); every failure here is XEN_PCI_ERR_op_failed, so the
guest only ever sees values of the ABI's error enumeration. The state is the backend's own
bookkeeping, never the capability bits, which the device or the guest could have changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Protocol

from pciback.errors import PciOpError, XenPciError
from pciback.ports.bus import PhysicalDevice
from pciback.ports.hypervisor import HypervisorError, HypervisorPort, IrqKind
from pciback.protocol.abi import SH_INFO_MAX_VEC

CAP_MSI = 0x05
CAP_MSIX = 0x11
COMMAND = 0x04
COMMAND_MEMORY = 0x2
INTERRUPT_LINE = 0x3C
INTERRUPT_PIN = 0x3D
MSI_MAX_VECTORS = 32
MAX_PIRQ = 0xFFFF  # an MSI-X vector is a uint16 on the page


class CapabilityLocator(Protocol):
    def capability_offset(self, cap_id: int) -> int | None: ...


class MsiRefused(PciOpError):
    """An interrupt request refused; `info` is the vector count to retry with, if any."""

    def __init__(self, message: str, info: int | None = None) -> None:
        super().__init__(XenPciError.OP_FAILED, message)
        self.info = info


class InterruptControl:
    def __init__(
        self,
        domid: int,
        device: PhysicalDevice,
        hypervisor: HypervisorPort,
        caps: CapabilityLocator,
    ) -> None:
        self.domid = domid
        self.device = device
        self.hypervisor = hypervisor
        self.caps = caps
        self.msi_pirqs: tuple[int, ...] = ()
        self.msix_pirqs: tuple[tuple[int, int], ...] = ()  # (entry, pirq)

    @property
    def msi_enabled(self) -> bool:
        return bool(self.msi_pirqs)

    @property
    def msix_enabled(self) -> bool:
        return bool(self.msix_pirqs)

    def intx_pirq(self) -> int:
        """What a disable answers: the legacy interrupt, which dom0 maps one to one to a GSI."""
        if self.device.read(INTERRUPT_PIN, 1) == 0:
            return 0
        return self.device.read(INTERRUPT_LINE, 1)

    # -- MSI -------------------------------------------------------------------------------------
    def enable_msi(self, vectors: int = 1) -> int:
        """Map and enable `vectors` MSI messages; return the first PIRQ."""
        if self.msi_enabled:
            raise MsiRefused("MSI already enabled")
        if self.msix_enabled:
            raise MsiRefused("MSI-X is enabled")
        cap = self.caps.capability_offset(CAP_MSI)
        if cap is None:
            raise MsiRefused("no MSI capability")
        capable = 1 << ((self.device.read(cap + 2, 2) >> 1) & 7)
        capable = min(capable, MSI_MAX_VECTORS)
        if vectors < 1 or vectors & (vectors - 1) or vectors > capable:
            hint = min(capable, 1 << (max(vectors, 1).bit_length() - 1))
            raise MsiRefused(f"cannot enable {vectors} MSI vectors", info=hint)
        try:
            base = self.hypervisor.map_pirq(
                self.domid, self.device.address, IrqKind.MSI, 0, vectors
            )
        except HypervisorError as e:
            raise MsiRefused(str(e)) from e
        pirqs = tuple(range(base, base + vectors))
        try:
            self.device.enable_msi(vectors)
        except ValueError as e:
            self._unmap(pirqs)
            raise MsiRefused(str(e)) from e
        self.msi_pirqs = pirqs
        return base

    def disable_msi(self) -> int:
        if self.msi_enabled:
            self.device.disable_msi()
            pirqs, self.msi_pirqs = self.msi_pirqs, ()
            self._unmap(pirqs)
        return self.intx_pirq()

    # -- MSI-X -----------------------------------------------------------------------------------
    def enable_msix(self, entries: Sequence[int]) -> list[int]:
        """Map and enable these MSI-X table entries; return one PIRQ per entry, in order."""
        if len(entries) > SH_INFO_MAX_VEC:
            raise MsiRefused(f"{len(entries)} MSI-X entries exceed the page's {SH_INFO_MAX_VEC}")
        if self.msix_enabled:
            raise MsiRefused("MSI-X already enabled")
        if self.msi_enabled:
            raise MsiRefused("MSI is enabled")
        if not self.device.read(COMMAND, 2) & COMMAND_MEMORY:
            raise MsiRefused("memory decoding is off: the MSI-X table is unreachable")
        cap = self.caps.capability_offset(CAP_MSIX)
        if cap is None:
            raise MsiRefused("no MSI-X capability")
        table_size = (self.device.read(cap + 2, 2) & 0x7FF) + 1
        if not entries or len(entries) > table_size:
            raise MsiRefused(f"{len(entries)} MSI-X entries for a table of {table_size}")
        if any(not 0 <= e < table_size for e in entries) or len(set(entries)) != len(entries):
            raise MsiRefused("MSI-X entries out of the table or repeated")
        mapped: list[tuple[int, int]] = []
        try:
            for entry in entries:
                pirq = self.hypervisor.map_pirq(
                    self.domid, self.device.address, IrqKind.MSIX, entry, 1
                )
                mapped.append((entry, pirq))
                if pirq > MAX_PIRQ:
                    raise ValueError(f"PIRQ {pirq} does not fit the page")
            self.device.enable_msix(tuple(entries))
        except (HypervisorError, ValueError) as e:
            self._unmap(tuple(p for _, p in mapped))
            raise MsiRefused(str(e)) from e
        self.msix_pirqs = tuple(mapped)
        return [p for _, p in mapped]

    def disable_msix(self) -> int:
        if self.msix_enabled:
            self.device.disable_msix()
            mapped, self.msix_pirqs = self.msix_pirqs, ()
            self._unmap(tuple(p for _, p in mapped))
        return self.intx_pirq()

    def restore(self) -> None:
        """Program the device again after a reset took its interrupt set-up away (what the
        host's pci_restore_state does); the PIRQs stay mapped."""
        if self.msi_pirqs:
            self.device.enable_msi(len(self.msi_pirqs))
        if self.msix_pirqs:
            self.device.enable_msix(tuple(entry for entry, _ in self.msix_pirqs))

    def teardown(self) -> None:
        """The guest is going: nothing it set up may survive it."""
        self.disable_msix()
        self.disable_msi()

    def _unmap(self, pirqs: tuple[int, ...]) -> None:
        for pirq in pirqs:
            # A PIRQ already gone with its domain leaves nothing to leak.
            with contextlib.suppress(HypervisorError):
                self.hypervisor.unmap_pirq(self.domid, pirq)
