"""An op as the backend sees it: one private snapshot of the guest's `xen_pci_op`, and the few
fields written back.

The snapshot is taken with a single copy of the whole struct. Every decision is made on the
snapshot, never on the page, so a guest rewriting the page mid-op (XSA-155) changes nothing.
Only `err`, `value`, `info` (multi-MSI) and the first N MSI-X vectors go back to the page, N
being the count the backend validated, not whatever the page says by then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pciback.errors import XenPciError
from pciback.protocol.abi import OP_SIZE, SH_INFO_MAX_VEC, ffi
from pciback.protocol.transport import SharedPage


@dataclass(frozen=True, slots=True)
class OpRequest:
    """The guest's op, copied out once. Numbers are as the ABI types them (`offset` and `size`
    are signed)."""

    cmd: int
    domain: int
    bus: int
    devfn: int
    offset: int
    size: int
    value: int
    info: int
    private: Any = field(repr=False, compare=False)  # the copy; MSI-X entries are read from it

    def msix_entries(self, count: int) -> tuple[tuple[int, int], ...]:
        """(entry, vector) of the first `count` slots of the snapshot (at most SH_INFO_MAX_VEC)."""
        entries = self.private.msix_entries
        n = max(0, min(count, SH_INFO_MAX_VEC))
        return tuple((int(entries[i].entry), int(entries[i].vector)) for i in range(n))

    @classmethod
    def snapshot(cls, page: SharedPage) -> OpRequest:
        private: Any = ffi.new("struct xen_pci_op *")
        ffi.memmove(private, ffi.addressof(page.info, "op"), OP_SIZE)
        return cls(
            cmd=int(private.cmd),
            domain=int(private.domain),
            bus=int(private.bus),
            devfn=int(private.devfn),
            offset=int(private.offset),
            size=int(private.size),
            value=int(private.value),
            info=int(private.info),
            private=private,
        )


@dataclass(frozen=True, slots=True)
class OpResult:
    err: XenPciError
    value: int
    info: int | None = None  # written back only when set
    vectors: tuple[int, ...] = field(default=())  # MSI-X vectors, in request order

    def write_back(self, page: SharedPage) -> None:
        op = page.info.op
        op.err = int(self.err)
        op.value = self.value & 0xFFFFFFFF
        if self.info is not None:
            op.info = self.info & 0xFFFFFFFF
        for i, vector in enumerate(self.vectors[:SH_INFO_MAX_VEC]):
            op.msix_entries[i].vector = vector & 0xFFFF
