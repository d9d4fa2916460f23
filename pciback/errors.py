"""Error codes of the PV PCI protocol (xen/include/public/io/pciif.h) and the exception that
carries one from deep in the backend to the op's `err` field."""

from __future__ import annotations

from enum import IntEnum


class XenPciError(IntEnum):
    SUCCESS = 0
    DEV_NOT_FOUND = -1
    INVALID_OFFSET = -2
    ACCESS_DENIED = -3
    NOT_IMPLEMENTED = -4
    OP_FAILED = -5


class PciOpError(Exception):
    """An op failed; `err` is the XEN_PCI_ERR_* value the guest receives."""

    def __init__(self, err: XenPciError, message: str = "") -> None:
        super().__init__(message or err.name.lower())
        self.err = err
