"""The PV PCI shared-page ABI (xen/include/public/io/pciif.h), declared once with cffi.

Every other module reaches the page through `ffi` and these constants, so the layout lives in
exactly one place; tests compare it with what a C compiler computes from an independent header.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from pciback.errors import XenPciError

SH_INFO_MAX_VEC = 128
PAGE_SIZE = 4096
XEN_PCI_MAGIC = "7"

CDEF = f"""
struct xen_msix_entry {{
    uint16_t vector;
    uint16_t entry;
}};

struct xen_pci_op {{
    uint32_t cmd;
    int32_t err;
    uint32_t domain;
    uint32_t bus;
    uint32_t devfn;
    int32_t offset;
    int32_t size;
    uint32_t value;
    uint32_t info;
    struct xen_msix_entry msix_entries[{SH_INFO_MAX_VEC}];
}};

struct xen_pcie_aer_op {{
    uint32_t cmd;
    int32_t err;
    uint32_t domain;
    uint32_t bus;
    uint32_t devfn;
}};

struct xen_pci_sharedinfo {{
    uint32_t flags;
    struct xen_pci_op op;
    struct xen_pcie_aer_op aer_op;
}};
"""


def _declare() -> Any:
    """The declarations as prepared at build time (abi_prepare.py): parsing them with cffi's
    pycparser at every start is most of the cost of starting. A source tree without the
    prepared module, or with one that no longer matches (the ABI check of `make test` fails
    then too), parses them here instead."""
    prepared_from: str | None = None
    try:
        from pciback.protocol.abi_prepared import CDEF as prepared_from
        from pciback.protocol.abi_prepared import ffi as prepared
    except ImportError:
        pass
    if prepared_from == CDEF:
        return prepared
    from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

    parsed = FFI()
    parsed.cdef(CDEF)
    return parsed


ffi = _declare()

SHAREDINFO_SIZE: int = ffi.sizeof("struct xen_pci_sharedinfo")
OP_SIZE: int = ffi.sizeof("struct xen_pci_op")
AER_OP_SIZE: int = ffi.sizeof("struct xen_pcie_aer_op")
OP_OFFSET: int = ffi.offsetof("struct xen_pci_sharedinfo", "op")
FLAGS_OFFSET: int = ffi.offsetof("struct xen_pci_sharedinfo", "flags")
FLAGS_SIZE: int = ffi.sizeof(dict(ffi.typeof("struct xen_pci_sharedinfo").fields)["flags"].type)
AER_OP_OFFSET: int = ffi.offsetof("struct xen_pci_sharedinfo", "aer_op")


class Flag(IntEnum):
    """Bit numbers in `xen_pci_sharedinfo.flags`."""

    PCIF_ACTIVE = 0  # frontend: an op awaits the backend
    PCIB_AERHANDLER = 1  # frontend: it can take AER requests
    PCIB_ACTIVE = 2  # backend: an AER request awaits the frontend


class Cmd(IntEnum):
    CONF_READ = 0
    CONF_WRITE = 1
    ENABLE_MSI = 2
    DISABLE_MSI = 3
    ENABLE_MSIX = 4
    DISABLE_MSIX = 5
    AER_DETECTED = 6
    AER_RESUME = 7
    AER_MMIO = 8
    AER_SLOTRESET = 9
    ENABLE_MULTI_MSI = 10


class ErsResult(IntEnum):
    """Linux's pci_ers_result_t: what a frontend's AER handler answers in `aer_op.err`."""

    NONE = 1
    CAN_RECOVER = 2
    NEED_RESET = 3
    DISCONNECT = 4
    RECOVERED = 5
    NO_AER_DRIVER = 6


class ChannelState(IntEnum):
    """Linux's pci_channel_state_t: what `aer_op.err` carries to the frontend."""

    IO_NORMAL = 1
    IO_FROZEN = 2
    IO_PERM_FAILURE = 3


__all__ = [
    "AER_OP_OFFSET",
    "AER_OP_SIZE",
    "CDEF",
    "FLAGS_OFFSET",
    "FLAGS_SIZE",
    "OP_OFFSET",
    "OP_SIZE",
    "PAGE_SIZE",
    "SHAREDINFO_SIZE",
    "SH_INFO_MAX_VEC",
    "XEN_PCI_MAGIC",
    "ChannelState",
    "Cmd",
    "ErsResult",
    "Flag",
    "XenPciError",
    "ffi",
]
