"""The bits hardware clears when software writes a 1 to them, for the simulated device.

Write-1-to-clear is a property of the device, not of the backend's policy: a status bit the
device sets (an error it detected, a PME it signalled, a slot event) stays set until software
writes a 1 to it, and a 0 leaves it alone. The simulated device needs to know which bits those
are to behave as hardware does. Which bits they are is typed here from the specifications (PCI
3.0 6.2.3 for the status register, the PCI-to-PCI bridge specification for the secondary status
and the bridge control, PCI PM 1.2, PCI-X 2.0a 7.2, PCIe 6.0 chapters 7 and 9 for the rest),
field by field, independently of the policy's rw1c decisions: a policy that got one wrong then
shows in what the device holds, instead of being mirrored by the simulation. Where a register
is, and where its fields are, comes from the policy's names (generated/), as everywhere else.

A register is marked only where the function has it: the root registers (PCIe's root status,
AER's root error status) on a root port or event collector, the slot status where a slot is
implemented, Link Status 2 in a version-2 PCIe capability, DPC's RP PIO status with the root
port extensions. And only within its capability's extent (up to the next capability of its
list, by address, or the end of its space), so that no capability lends its offsets to the one
after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pciback.engine.chain import EXT_END, EXT_START, STD_END, walk
from pciback.generated.names import (
    AER,
    COMMON_HEADER,
    CONST,
    DOE,
    DPC,
    PCIE,
    PCIX,
    PCIX_BRIDGE,
    PL16,
    PM,
    PRI,
    SECPCIE,
    SRIOV,
    TYPE1,
)
from pciback.tables import Bits

Reader = Callable[[int, int], int]
# (register, the names of its fields that clear on a 1)
Rw1cRegister = tuple[Any, tuple[str, ...]]
# Whether a capability at an offset has the register, given a reader of the config space and
# the function's PCI Express capabilities register (None: no PCIe capability): a layout the
# capability's own bits or the function's port type choose.
Present = Callable[[Reader, int, int | None], bool]

_ERRORS = (  # the PCI status errors, in the header's status and a bridge's secondary status
    "MASTER_DATA_PARITY_ERROR",
    "SIGNALED_TARGET_ABORT",
    "RECEIVED_TARGET_ABORT",
    "RECEIVED_MASTER_ABORT",
    "DETECTED_PARITY_ERROR",
)
HEADER: tuple[Rw1cRegister, ...] = ((COMMON_HEADER.STATUS, (*_ERRORS, "SIGNALED_SYSTEM_ERROR")),)
BRIDGE_HEADER: tuple[Rw1cRegister, ...] = (
    (TYPE1.SECONDARY_STATUS, (*_ERRORS, "RECEIVED_SYSTEM_ERROR")),
    (TYPE1.BRIDGE_CONTROL, ("DISCARD_TIMER_STATUS",)),
)
_SPLIT = ("SPLIT_DISCARDED", "UNEXPECTED_SPLIT")
_BRIDGE_SPLIT = (*_SPLIT, "SPLIT_OVERRUN", "SPLIT_DELAYED")


def _always(read: Reader, pos: int, pcie: int | None) -> bool:
    return True


def _version_2(pcie: int | None) -> bool:
    return pcie is not None and PCIE.CAPS.VERSION.get(pcie) >= 2


def _port_type(pcie: int | None) -> int | None:
    return None if pcie is None else PCIE.CAPS.PORT_TYPE.get(pcie)


def _has_link(read: Reader, pos: int, pcie: int | None) -> bool:
    # A version-1 structure of a root complex integrated endpoint ends before the link.
    return _version_2(pcie) or _port_type(pcie) != CONST.PCIE_RC_INTEGRATED_ENDPOINT


def _has_slot(read: Reader, pos: int, pcie: int | None) -> bool:
    return pcie is not None and bool(PCIE.CAPS.SLOT_IMPLEMENTED.get(pcie))


def _is_root(read: Reader, pos: int, pcie: int | None) -> bool:
    """A root port or a root complex event collector: the root registers, PCIe's and AER's."""
    return _port_type(pcie) in (CONST.PCIE_ROOT_PORT, CONST.PCIE_RC_EVENT_COLLECTOR)


def _has_version_2(read: Reader, pos: int, pcie: int | None) -> bool:
    return _version_2(pcie)


def _dpc_rp_extensions(read: Reader, pos: int, pcie: int | None) -> bool:
    return bool(read(pos + DPC.CAPS.offset, DPC.CAPS.width) & DPC.CAPS.RP_EXTENSIONS.mask)


def _every_field(register: Any) -> tuple[str, ...]:
    return tuple(name for name, value in vars(register).items() if isinstance(value, Bits))


# By capability ID: the registers with bits that clear on a 1, and when the capability has them.
# Not here: the equalization request bits of Link Status 2 and of the 32 GT/s status, which the
# policy names only as part of wider read-only fields (no guest write reaches them).
STANDARD: Mapping[int, tuple[tuple[Rw1cRegister, Present], ...]] = {
    PM.id: (((PM.PMCSR, ("PME_STATUS",)), _always),),
    PCIE.id: (
        (
            (
                PCIE.DEVSTA,
                (
                    "COR_ERR_DETECTED",
                    "NONFATAL_ERR_DETECTED",
                    "FATAL_ERR_DETECTED",
                    "UR_DETECTED",
                    "EMERGENCY_POWER_REDUCTION",
                ),
            ),
            _always,
        ),
        ((PCIE.LINKSTA, ("BW_MGMT_STATUS", "AUTONOMOUS_BW_STATUS")), _has_link),
        (
            (
                PCIE.SLOTSTA,
                (
                    "ATTENTION_BUTTON_PRESSED",
                    "POWER_FAULT",
                    "MRL_CHANGED",
                    "PRESENCE_CHANGED",
                    "COMMAND_COMPLETED",
                    "DLL_CHANGED",
                ),
            ),
            _has_slot,
        ),
        ((PCIE.ROOTSTA, ("PME_STATUS",)), _is_root),
        ((PCIE.LINKSTA2, ("DRS_RECEIVED",)), _has_version_2),
    ),
}
# A PCI-X capability's two layouts share the ID: a bridge's is told by its header.
PCIX_FUNCTION: tuple[Rw1cRegister, ...] = ((PCIX.STATUS, (*_SPLIT, "SPLIT_ERROR_MESSAGE")),)
PCIX_OF_BRIDGE: tuple[Rw1cRegister, ...] = (
    (PCIX_BRIDGE.SECONDARY_STATUS, _BRIDGE_SPLIT),
    (PCIX_BRIDGE.BRIDGE_STATUS, _BRIDGE_SPLIT),
)
EXTENDED: Mapping[int, tuple[tuple[Rw1cRegister, Present], ...]] = {
    AER.id: (
        ((AER.UNCORRECTABLE_STATUS, _every_field(AER.UNCORRECTABLE_STATUS)), _always),
        ((AER.CORRECTABLE_STATUS, _every_field(AER.CORRECTABLE_STATUS)), _always),
        (
            (
                AER.ROOT_ERROR_STATUS,
                (
                    "ERR_COR_RECEIVED",
                    "MULTIPLE_ERR_COR",
                    "ERR_FATAL_NONFATAL_RECEIVED",
                    "MULTIPLE_ERR_FATAL_NONFATAL",
                    "FIRST_UNCORRECTABLE_FATAL",
                    "NONFATAL_MESSAGES",
                    "FATAL_MESSAGES",
                ),
            ),
            _is_root,
        ),
    ),
    DPC.id: (
        ((DPC.STATUS, ("TRIGGER_STATUS", "INTERRUPT_STATUS", "SIG_SFW_STATUS")), _always),
        ((DPC.RP_PIO_STATUS, _every_field(DPC.RP_PIO_STATUS)), _dpc_rp_extensions),
    ),
    SRIOV.id: (((SRIOV.STATUS, ("VF_MIGRATION_STATUS",)), _always),),
    SECPCIE.id: (((SECPCIE.LANE_ERROR_STATUS, ("LANES",)), _always),),
    PL16.id: (((PL16.STATUS, ("EQUALIZATION_REQUEST",)), _always),),
    PRI.id: (((PRI.STATUS, ("RESPONSE_FAILURE", "UNEXPECTED_GROUP_INDEX")), _always),),
    DOE.id: (((DOE.STATUS, ("INTERRUPT_STATUS",)), _always),),
}


def _mask(register: Any, fields: Iterable[str]) -> int:
    mask = 0
    for name in fields:
        mask |= getattr(register, name).mask
    return mask


def _mark(out: bytearray, at: int, end: int, register: Any, fields: Iterable[str]) -> None:
    """The fields' bits of `register` at `at`, if the register lies before `end`."""
    if at < 0 or at + register.width > min(end, len(out)):
        return
    mask = _mask(register, fields)
    for i in range(register.width):
        out[at + i] |= (mask >> (8 * i)) & 0xFF


def _extents(offsets: list[int], end: int) -> dict[int, int]:
    """Each capability's end: the next capability's start by address, or the space's end."""
    ordered = sorted(set(offsets))
    return {pos: (ordered[i + 1] if i + 1 < len(ordered) else end) for i, pos in enumerate(ordered)}


def hardware_rw1c(read: Reader, size: int) -> bytearray:
    """Per byte of the `size` bytes of config space `read` reads, the bits that a 1 written to
    them clears on the device."""
    out = bytearray(size)
    header_type = COMMON_HEADER.HEADER_TYPE.LAYOUT.get(
        read(COMMON_HEADER.HEADER_TYPE.offset, COMMON_HEADER.HEADER_TYPE.width)
    )
    bridge = header_type == TYPE1.header_type
    for register, fields in HEADER + (BRIDGE_HEADER if bridge else ()):
        _mark(out, register.offset, size, register, fields)
    chains = walk(read, size)
    pcie_at = next((c.offset for c in chains.standard if c.ident == PCIE.id), None)
    pcie = None if pcie_at is None else read(pcie_at + PCIE.CAPS.offset, PCIE.CAPS.width)
    standard = _extents([c.offset for c in chains.standard], min(STD_END, size))
    for cap in chains.standard:
        end = standard[cap.offset]
        if cap.ident == PCIX.id:
            for register, fields in PCIX_OF_BRIDGE if bridge else PCIX_FUNCTION:
                _mark(out, cap.offset + register.offset, end, register, fields)
            continue
        for (register, fields), present in STANDARD.get(cap.ident, ()):
            if present(read, cap.offset, pcie):
                _mark(out, cap.offset + register.offset, end, register, fields)
    if size > EXT_START:
        extended = _extents([c.offset for c in chains.extended], min(EXT_END, size))
        for cap in chains.extended:
            for (register, fields), present in EXTENDED.get(cap.ident, ()):
                if present(read, cap.offset, pcie):
                    _mark(out, cap.offset + register.offset, extended[cap.offset], register, fields)
    return out
