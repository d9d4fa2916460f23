"""MSI, multi-message MSI and MSI-X for one exported device.

The state checks are those Linux added after XSA-157 (a guest toggling modes or re-enabling
could otherwise leak or double-map host interrupts): no MSI while MSI-X is on nor the reverse,
no second enable, an MSI-X request bounded by the page (SH_INFO_MAX_VEC) and by the device's
table, and memory decoding on before MSI-X (the table lives in a BAR). As the host's PCI core
(pci_enable_msi / pci_enable_msix_exact), neither is enabled while the function is not in D0:
in D1, D2 or D3hot it does not decode its BARs, where the MSI-X table lives, and it may not
signal interrupts at all.

Where this differs from Linux on purpose: Linux hands the guest a raw -errno for MSI-X
failures (-EINVAL, -EALREADY, -ENXIO); every failure here is XEN_PCI_ERR_op_failed, so the
guest only ever sees values of the ABI's error enumeration. The state is the backend's own
bookkeeping, never the capability bits, which the device or the guest could have changed.

That bookkeeping is exported after every change (`on_change`), so that a restarted daemon can
adopt it (`import_state`) or, for a guest that went away meanwhile, unmap its PIRQs
(`saved_pirqs`). The saved form is untrusted on the way back in. The order of a change makes a
crash leave an intent to resolve or a record the device contradicts, never worse: an enable
announces what it is about to map (`before_map`), maps, records, then programs the device; a
disable unprograms the device, unmaps, then records. So a record whose enable bit the device no
longer has is stale, and is refused on import; and an intent still there after a crash (its
PIRQs never recorded) tells the next daemon which domain and device to look for PIRQs the map
may have produced. Every record after an intent settles it, a failed map's too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pciback.engine.chain import STATUS, STD_END, FoundCapability, walk_standard
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import COMMON_HEADER, MSI, MSIX, PM, TYPE0
from pciback.ports.bus import PhysicalDevice
from pciback.ports.hypervisor import HypervisorError, HypervisorPort, IrqKind
from pciback.protocol.abi import SH_INFO_MAX_VEC

COMMAND = COMMON_HEADER.COMMAND
PMCSR = PM.PMCSR
MSI_CONTROL, MSIX_CONTROL = MSI.CONTROL, MSIX.CONTROL
# What a guest's config write may toggle with interrupt control allowed (MSI-X's control
# register is as wide as MSI's).
_CONTROL_BITS = frozenset(
    (MSI_CONTROL.ENABLE.mask, MSIX_CONTROL.ENABLE.mask, MSIX_CONTROL.FUNCTION_MASK.mask)
)
MSI_MAX_VECTORS = 32  # the most a multiple-message encoding can ask for (6 and 7 reserved)
MAX_PIRQ = 0xFFFF  # an MSI-X vector is a uint16 on the page
STATE_VERSION = 1
ALL_ONES_16 = 0xFFFF
D3COLD = 4  # Linux's PCI_D3cold: no config space to read

log = logging.getLogger(__name__)


class CapabilityLocator(Protocol):
    def capability_offset(self, cap_id: int) -> int | None: ...


class MsiRefused(PciOpError):
    """An interrupt request refused; `info` is the vector count to retry with, if any."""

    def __init__(self, message: str, info: int | None = None) -> None:
        super().__init__(XenPciError.OP_FAILED, message)
        self.info = info


class InterruptStateError(ValueError):
    """A saved interrupt state that cannot be adopted; the message says why."""


SavedPirqs = tuple[int, tuple[int, ...], tuple[tuple[int, int], ...]]  # domid, MSI, MSI-X


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def saved_pirqs(data: object) -> SavedPirqs:
    """The shape checks of a saved state, needing no device: what a sweep may unmap for a
    guest that is gone. Raises InterruptStateError."""
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise InterruptStateError(f"not an interrupt state of version {STATE_VERSION}")
    if set(data) != {"version", "domid", "address", "msi", "msix"}:
        raise InterruptStateError("unexpected or missing keys")
    domid, msi, msix = data["domid"], data["msi"], data["msix"]
    if not _int(domid) or not 0 < domid <= 0x7FEF:
        raise InterruptStateError(f"domain {domid!r} out of range")
    if not isinstance(data["address"], str) or len(data["address"]) > 32:
        raise InterruptStateError("address is not a device address")
    if not isinstance(msi, list) or not isinstance(msix, list):
        raise InterruptStateError("'msi' and 'msix' must be lists")
    if len(msi) > MSI_MAX_VECTORS or len(msix) > SH_INFO_MAX_VEC:
        raise InterruptStateError(
            f"{len(msi)} MSI / {len(msix)} MSI-X vectors: more than a device can have"
        )
    if msi and msix:
        raise InterruptStateError("MSI and MSI-X both enabled")
    if msi and (len(msi) & (len(msi) - 1)):
        raise InterruptStateError(f"{len(msi)} MSI vectors is not a power of two")
    pairs = []
    for pair in msix:
        if not isinstance(pair, list) or len(pair) != 2 or not all(_int(v) for v in pair):
            raise InterruptStateError("an MSI-X entry is not an [entry, pirq] pair")
        pairs.append((pair[0], pair[1]))
    if not all(_int(p) for p in msi):
        raise InterruptStateError("an MSI PIRQ is not an integer")
    if msi and msi != list(range(msi[0], msi[0] + len(msi))):
        raise InterruptStateError("MSI PIRQs are not one consecutive block")
    pirqs = [*msi, *(p for _, p in pairs)]
    if any(not 0 < p <= MAX_PIRQ for p in pirqs) or len(set(pirqs)) != len(pirqs):
        raise InterruptStateError(f"PIRQs out of 1..{MAX_PIRQ} or repeated")
    entries = [e for e, _ in pairs]
    last = MSIX_CONTROL.TABLE_SIZE.mask  # the largest table size field: entries minus one
    if any(not 0 <= e <= last for e in entries) or len(set(entries)) != len(entries):
        raise InterruptStateError("MSI-X entries out of any table or repeated")
    return domid, tuple(msi), tuple(pairs)


def unmap_saved(hypervisor: HypervisorPort, domid: int, data: object) -> tuple[int, ...]:
    """Unmap the PIRQs a saved state names for `domid` (a guest that is gone, or a record
    that could not be adopted); InterruptStateError, unmapping nothing, when its shape is
    wrong or it names another domain: then no number in it can be trusted."""
    saved_domid, msi, msix = saved_pirqs(data)
    if saved_domid != domid:
        raise InterruptStateError(f"saved for domain {saved_domid}, filed under {domid}")
    pirqs = (*msi, *(pirq for _, pirq in msix))
    for pirq in pirqs:
        with contextlib.suppress(HypervisorError):  # gone with its domain already
            hypervisor.unmap_pirq(domid, pirq)
    return pirqs


def _own_capabilities(device: PhysicalDevice) -> tuple[list[FoundCapability], int] | None:
    """The device's own standard capabilities, hidden ones included, by a bounded walk (the
    device is not trusted), and where its standard space ends; None when its config space
    reads all ones (powered off or gone)."""
    status = device.read(STATUS.offset, STATUS.width)
    if status == ALL_ONES_16:
        return None
    end = min(device.config_size, STD_END)
    if not status & STATUS.CAPABILITIES_LIST.mask:
        return [], end
    return walk_standard(device.read, end), end


def power_state(device: PhysicalDevice) -> int:
    """The D-state (0..3) the function's first PM capability reports, as the host's PCI core
    knows it; 0 for a function without one (it is always in D0), D3COLD when its config space
    reads all ones (powered off or gone). Read from the device itself, not the guest's view:
    a capability hidden from the guest still tells the state."""
    own = _own_capabilities(device)
    if own is None:
        return D3COLD
    caps, end = own
    for cap in caps:
        if cap.ident == PM.id:
            if cap.offset + PMCSR.offset + PMCSR.width > end:
                return 0  # a PMCSR past standard space is no register of PM's
            pmcsr = device.read(cap.offset + PMCSR.offset, PMCSR.width)
            return D3COLD if pmcsr == ALL_ONES_16 else PMCSR.POWER_STATE.get(pmcsr)
    return 0


def device_enables(device: PhysicalDevice) -> tuple[bool, bool] | None:
    """Whether MSI and MSI-X are enabled in the device itself (a capability hidden from the
    guest still counts); None when its config space is gone (all ones): nothing can be told
    then."""
    own = _own_capabilities(device)
    if own is None:
        return None
    caps, end = own
    msi_on = msix_on = False
    for cap in caps:
        at = cap.offset + MSI_CONTROL.offset  # MSI-X's control register is at the same place
        if at + MSI_CONTROL.width > end:
            continue
        if cap.ident == MSI.id:
            msi_on = msi_on or bool(device.read(at, MSI_CONTROL.width) & MSI_CONTROL.ENABLE.mask)
        elif cap.ident == MSIX.id:
            enabled = device.read(at, MSIX_CONTROL.width) & MSIX_CONTROL.ENABLE.mask
            msix_on = msix_on or bool(enabled)
    return msi_on, msix_on


def _require_d0(device: PhysicalDevice, what: str) -> None:
    state = power_state(device)
    if state != 0:
        name = "D3cold" if state == D3COLD else f"D{state}"
        raise MsiRefused(f"the function is in {name}: {what} is enabled only in D0")


class InterruptControl:
    def __init__(
        self,
        domid: int,
        device: PhysicalDevice,
        hypervisor: HypervisorPort,
        caps: CapabilityLocator,
        on_change: Callable[[dict[str, Any]], None] | None = None,
        before_map: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`on_change` gets the new exported state after every change, `before_map` what is
        about to be mapped before any map hypercall (both for persistence)."""
        self.domid = domid
        self.device = device
        self.hypervisor = hypervisor
        self.caps = caps
        self.on_change = on_change
        self.before_map = before_map
        self.msi_pirqs: tuple[int, ...] = ()
        self.msix_pirqs: tuple[tuple[int, int], ...] = ()  # (entry, pirq)

    @property
    def msi_enabled(self) -> bool:
        return bool(self.msi_pirqs)

    @property
    def msix_enabled(self) -> bool:
        return bool(self.msix_pirqs)

    def intx_pirq(self) -> int:
        """What a disable answers, as Linux: dom0's IRQ for the device, which is the GSI and
        the PIRQ the guest was granted for it (never the firmware's interrupt-line byte)."""
        pin = TYPE0.INTERRUPT_PIN  # at the same offset in a bridge's header
        if self.device.read(pin.offset, pin.width) == 0:
            return 0
        return self.device.host_irq()

    # -- what the device says ------------------------------------------------------------------
    def _settle_with_device(self) -> None:
        """Before an enable: the device's own enable bits, not only this bookkeeping, decide.
        With interrupt control allowed, a guest's config write can have turned a mode off
        behind the ops: its PIRQs are stale, and unmapped here so that the mode can be enabled
        again. A mode on in the device that this bookkeeping did not enable (a guest's config
        write; a bridge seized with the host's interrupts on) refuses every enable: a second
        mode on top of it, or its message reprogrammed under whoever set it up."""
        enables = device_enables(self.device)
        if enables is None:  # powered off or gone: the D0 check refuses the enable
            return
        msi_on, msix_on = enables
        if self.msi_pirqs and not msi_on:
            log.info("%s: MSI turned off by a config write: PIRQs unmapped", self.device.address)
            self.disable_msi()
        if self.msix_pirqs and not msix_on:
            log.info("%s: MSI-X turned off by a config write: PIRQs unmapped", self.device.address)
            self.disable_msix()
        if msi_on and not self.msi_pirqs:
            raise MsiRefused("MSI is on in the device, not set up through this backend")
        if msix_on and not self.msix_pirqs:
            raise MsiRefused("MSI-X is on in the device, not set up through this backend")

    # -- a guest's config write -------------------------------------------------------------------
    def write_control_bit(self, control: int, bit: int, on: bool) -> None:
        """A guest's config write of an MSI or MSI-X control bit, let through by the view's
        hooks only with interrupt control allowed (device models drive the capability
        themselves): besides the ops, the only writer of these bits. Nothing is mapped or
        unmapped here; the next enable op settles with what the device then says
        (`_settle_with_device`)."""
        if bit not in _CONTROL_BITS:
            raise ValueError(f"{bit:#x} is no MSI/MSI-X control bit a guest may write")
        current = self.device.read(control, MSI_CONTROL.width)
        wanted = current | bit if on else current & ~bit
        if wanted != current:
            self.device.write(control, MSI_CONTROL.width, wanted)

    # -- MSI -------------------------------------------------------------------------------------
    def enable_msi(self, vectors: int = 1) -> int:
        """Map and enable `vectors` MSI messages; return the first PIRQ."""
        self._settle_with_device()
        if self.msi_enabled:
            raise MsiRefused("MSI already enabled")
        if self.msix_enabled:
            raise MsiRefused("MSI-X is enabled")
        _require_d0(self.device, "MSI")
        cap = self.caps.capability_offset(MSI.id)
        if cap is None:
            raise MsiRefused("no MSI capability")
        control = self.device.read(cap + MSI_CONTROL.offset, MSI_CONTROL.width)
        capable = 1 << MSI_CONTROL.MULTIPLE_MESSAGE_CAPABLE.get(control)
        capable = min(capable, MSI_MAX_VECTORS)
        if vectors < 1 or vectors & (vectors - 1) or vectors > capable:
            hint = min(capable, 1 << (max(vectors, 1).bit_length() - 1))
            raise MsiRefused(f"cannot enable {vectors} MSI vectors", info=hint)
        self._intend(IrqKind.MSI, list(range(vectors)))
        try:
            base = self.hypervisor.map_pirq(
                self.domid, self.device.address, IrqKind.MSI, 0, vectors
            )
        except HypervisorError as e:
            self._record((), ())  # nothing was mapped: the intent is settled
            raise MsiRefused(str(e)) from e
        pirqs = tuple(range(base, base + vectors))
        self._record(pirqs, ())
        try:
            self.device.enable_msi(vectors)
        except (ValueError, OSError) as e:  # a refusal, or the bus failed under us
            self._unmap(pirqs)
            self._record((), ())
            raise MsiRefused(str(e)) from e
        self.msi_pirqs = pirqs
        return base

    def disable_msi(self) -> int:
        if self.msi_enabled:
            pirqs, self.msi_pirqs = self.msi_pirqs, ()
            try:
                self.device.disable_msi()
            finally:  # a device that fails here must not keep the guest's PIRQs mapped
                self._unmap(pirqs)
                self._record((), self.msix_pirqs)
        return self.intx_pirq()

    # -- MSI-X -----------------------------------------------------------------------------------
    def enable_msix(self, entries: Sequence[int]) -> list[int]:
        """Map and enable these MSI-X table entries; return one PIRQ per entry, in order."""
        if len(entries) > SH_INFO_MAX_VEC:
            raise MsiRefused(f"{len(entries)} MSI-X entries exceed the page's {SH_INFO_MAX_VEC}")
        self._settle_with_device()
        if self.msix_enabled:
            raise MsiRefused("MSI-X already enabled")
        if self.msi_enabled:
            raise MsiRefused("MSI is enabled")
        if not self.device.read(COMMAND.offset, COMMAND.width) & COMMAND.MEMORY_SPACE.mask:
            raise MsiRefused("memory decoding is off: the MSI-X table is unreachable")
        _require_d0(self.device, "MSI-X")
        cap = self.caps.capability_offset(MSIX.id)
        if cap is None:
            raise MsiRefused("no MSI-X capability")
        control = self.device.read(cap + MSIX_CONTROL.offset, MSIX_CONTROL.width)
        table_size = MSIX_CONTROL.TABLE_SIZE.get(control) + 1
        if not entries or len(entries) > table_size:
            raise MsiRefused(f"{len(entries)} MSI-X entries for a table of {table_size}")
        if any(not 0 <= e < table_size for e in entries) or len(set(entries)) != len(entries):
            raise MsiRefused("MSI-X entries out of the table or repeated")
        mapped: list[tuple[int, int]] = []
        self._intend(IrqKind.MSIX, list(entries))
        try:
            for entry in entries:
                pirq = self.hypervisor.map_pirq(
                    self.domid, self.device.address, IrqKind.MSIX, entry, 1
                )
                mapped.append((entry, pirq))
                if not 0 < pirq <= MAX_PIRQ:
                    raise ValueError(f"PIRQ {pirq} does not fit the page")
            self._record((), tuple(mapped))
            self.device.enable_msix(tuple(entries))
        except (HypervisorError, ValueError, OSError) as e:
            self._unmap(tuple(p for _, p in mapped))
            self._record((), ())  # also settles the intent when nothing was mapped
            raise MsiRefused(str(e)) from e
        self.msix_pirqs = tuple(mapped)
        return [p for _, p in mapped]

    def disable_msix(self) -> int:
        if self.msix_enabled:
            mapped, self.msix_pirqs = self.msix_pirqs, ()
            try:
                self.device.disable_msix()
            finally:  # a device that fails here must not keep the guest's PIRQs mapped
                self._unmap(tuple(p for _, p in mapped))
                self._record(self.msi_pirqs, ())
        return self.intx_pirq()

    def restore(self) -> None:
        """Program the device again after a reset took its interrupt set-up away (what the
        host's pci_restore_state does); the PIRQs stay mapped."""
        if self.msi_pirqs:
            self.device.enable_msi(len(self.msi_pirqs))
        if self.msix_pirqs:
            self.device.enable_msix(tuple(entry for entry, _ in self.msix_pirqs))

    def teardown(self) -> None:
        """The guest is going: nothing it set up may survive it, even when the device fails
        to be unprogrammed (the pool resets it on release)."""
        for disable in (self.disable_msix, self.disable_msi):
            try:
                disable()
            except OSError as exc:
                log.warning("%s: disabling interrupts failed: %s", self.device.address, exc)

    # -- persistence -----------------------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        return self._state(self.msi_pirqs, self.msix_pirqs)

    def _state(self, msi: tuple[int, ...], msix: tuple[tuple[int, int], ...]) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "domid": self.domid,
            "address": self.device.address,
            "msi": list(msi),
            "msix": [[entry, pirq] for entry, pirq in msix],
        }

    def _intend(self, kind: IrqKind, indexes: list[int]) -> None:
        if self.before_map is not None:
            self.before_map(
                {
                    "version": STATE_VERSION,
                    "domid": self.domid,
                    "address": self.device.address,
                    "kind": kind.value,
                    "indexes": indexes,  # MSI: the vectors; MSI-X: the table entries
                }
            )

    def _record(self, msi: tuple[int, ...], msix: tuple[tuple[int, int], ...]) -> None:
        if self.on_change is not None:
            self.on_change(self._state(msi, msix))

    def import_state(self, data: object) -> None:
        """Adopt what a previous daemon mapped for this guest and device: the PIRQs stay
        mapped and the device as it is; nothing is called. Raises InterruptStateError, and
        then nothing is adopted."""
        if self.msi_enabled or self.msix_enabled:
            raise InterruptStateError("interrupts already set up here")
        domid, msi, msix = saved_pirqs(data)
        assert isinstance(data, dict)
        if domid != self.domid or data["address"] != self.device.address:
            raise InterruptStateError(
                f"saved for domain {domid} and {data['address']!r}, "
                f"not domain {self.domid} and {self.device.address}"
            )
        if msi:
            cap = self.caps.capability_offset(MSI.id)
            if cap is None:
                raise InterruptStateError("MSI saved, but the device shows no MSI capability")
            control = self.device.read(cap + MSI_CONTROL.offset, MSI_CONTROL.width)
            capable = min(1 << MSI_CONTROL.MULTIPLE_MESSAGE_CAPABLE.get(control), MSI_MAX_VECTORS)
            if len(msi) > capable:
                raise InterruptStateError(f"{len(msi)} MSI vectors for a device of {capable}")
            if not control & MSI_CONTROL.ENABLE.mask:
                raise InterruptStateError("MSI saved as on, but the device has it off (stale)")
        if msix:
            cap = self.caps.capability_offset(MSIX.id)
            if cap is None:
                raise InterruptStateError("MSI-X saved, but the device shows no MSI-X capability")
            control = self.device.read(cap + MSIX_CONTROL.offset, MSIX_CONTROL.width)
            table_size = MSIX_CONTROL.TABLE_SIZE.get(control) + 1
            if any(entry >= table_size for entry, _ in msix):
                raise InterruptStateError(f"MSI-X entries beyond the table of {table_size}")
            if not control & MSIX_CONTROL.ENABLE.mask:
                raise InterruptStateError("MSI-X saved as on, but the device has it off (stale)")
        self.msi_pirqs, self.msix_pirqs = msi, msix

    def _unmap(self, pirqs: tuple[int, ...]) -> None:
        for pirq in pirqs:
            # A PIRQ already gone with its domain leaves nothing to leak.
            with contextlib.suppress(HypervisorError):
                self.hypervisor.unmap_pirq(self.domid, pirq)
