"""The bits hardware clears when software writes a 1 to them, for the simulated device.

Write-1-to-clear is a property of the device, not of the backend's policy: a status bit the
device sets (an error it detected, a PME it signalled, a slot event) stays set until software
writes a 1 to it, and a 0 leaves it alone. The simulated device needs to know which bits those
are to behave as hardware does. Which bits they are is typed here from the specifications (PCI
3.0 6.2.3 and 7.5.3, PCI PM 1.2 3.2.4, PCI-X 2.0a 7.2, PCIe 6.0 chapter 7, the SR-IOV, PRI and
DOE chapters), field by field, independently of the policy's rw1c decisions: a policy that got
one wrong then shows in what the device holds, instead of being mirrored by the simulation.
Where a register is, and where its fields are, comes from the policy's names (generated/), as
everywhere else.

A capability's registers are marked only within its extent (up to the next capability of its
list, by address, or the end of its space): a short structure (a PCIe capability of version 1,
an AER capability of a function that is no root port) does not lend its later offsets to the
capability that follows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pciback.engine.chain import EXT_END, EXT_START, STD_END, walk
from pciback.generated.names import (
    AER,
    COMMON_HEADER,
    DOE,
    DPC,
    PCIE,
    PCIX,
    PCIX_BRIDGE,
    PM,
    PRI,
    SECPCIE,
    SRIOV,
    TYPE1,
)
from pciback.tables import Bits

# (register, the names of its fields that clear on a 1)
Rw1cRegister = tuple[Any, tuple[str, ...]]
# Whether a capability at an offset has the register (a layout the capability's own bits
# choose), given a reader of the config space.
Present = Callable[[Callable[[int, int], int], int], bool]

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
)
_SPLIT = ("SPLIT_DISCARDED", "UNEXPECTED_SPLIT")
_BRIDGE_SPLIT = (*_SPLIT, "SPLIT_OVERRUN", "SPLIT_DELAYED")


def _always(read: Callable[[int, int], int], pos: int) -> bool:
    return True


def _dpc_rp_extensions(read: Callable[[int, int], int], pos: int) -> bool:
    return bool(read(pos + DPC.CAPS.offset, DPC.CAPS.width) & DPC.CAPS.RP_EXTENSIONS.mask)


def _every_field(register: Any) -> tuple[str, ...]:
    return tuple(name for name, value in vars(register).items() if isinstance(value, Bits))


# By capability ID: the registers with bits that clear on a 1, and when the capability has them.
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
        ((PCIE.LINKSTA, ("BW_MGMT_STATUS", "AUTONOMOUS_BW_STATUS")), _always),
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
            _always,
        ),
        ((PCIE.ROOTSTA, ("PME_STATUS",)), _always),
        ((PCIE.LINKSTA2, ("DRS_RECEIVED",)), _always),
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
            _always,
        ),
    ),
    DPC.id: (
        ((DPC.STATUS, ("TRIGGER_STATUS", "INTERRUPT_STATUS", "SIG_SFW_STATUS")), _always),
        ((DPC.RP_PIO_STATUS, _every_field(DPC.RP_PIO_STATUS)), _dpc_rp_extensions),
    ),
    SRIOV.id: (((SRIOV.STATUS, ("VF_MIGRATION_STATUS",)), _always),),
    SECPCIE.id: (((SECPCIE.LANE_ERROR_STATUS, ("LANES",)), _always),),
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


def hardware_rw1c(config: bytes, read: Callable[[int, int], int]) -> bytearray:
    """Per byte of `config`, the bits that a 1 written to them clears on the device."""
    out = bytearray(len(config))
    header_type = COMMON_HEADER.HEADER_TYPE.LAYOUT.get(
        read(COMMON_HEADER.HEADER_TYPE.offset, COMMON_HEADER.HEADER_TYPE.width)
    )
    bridge = header_type == TYPE1.header_type
    for register, fields in HEADER + (BRIDGE_HEADER if bridge else ()):
        _mark(out, register.offset, len(config), register, fields)
    chains = walk(read, len(config))
    standard = _extents([c.offset for c in chains.standard], min(STD_END, len(config)))
    for cap in chains.standard:
        end = standard[cap.offset]
        if cap.ident == PCIX.id:
            for register, fields in PCIX_OF_BRIDGE if bridge else PCIX_FUNCTION:
                _mark(out, cap.offset + register.offset, end, register, fields)
            continue
        for (register, fields), present in STANDARD.get(cap.ident, ()):
            if present(read, cap.offset):
                _mark(out, cap.offset + register.offset, end, register, fields)
    if len(config) > EXT_START:
        extended = _extents([c.offset for c in chains.extended], min(EXT_END, len(config)))
        for cap in chains.extended:
            for (register, fields), present in EXTENDED.get(cap.ident, ()):
                if present(read, cap.offset):
                    _mark(out, cap.offset + register.offset, extended[cap.offset], register, fields)
    return out
