"""An op as the backend sees it: one private snapshot of the guest's `xen_pci_op`, and the few
fields written back.

The snapshot is taken with a single copy of the whole struct (`SharedPage.copy_op`); the header
fields are unpacked from that copy, and the MSI-X entries too, only when an op asks for them.
Every decision is made on the snapshot, never on the page, so a guest rewriting the page mid-op
(XSA-155) changes nothing. Only `err`, `value`, `info` (multi-MSI) and the first N MSI-X vectors
go back to the page, N being the count the backend validated, not whatever the page says by
then.

The snapshot goes through a `struct` format derived from the cffi declarations (pciback.protocol.
layout) and the answer through stores into the op's words (SharedPage.op_words), rather than
cffi attribute access: per op that is one copy, one unpack and two or three stores, instead of
a dozen cffi accesses and an allocation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NamedTuple

from pciback.errors import XenPciError
from pciback.protocol.abi import OP_OFFSET, OP_SIZE, SH_INFO_MAX_VEC
from pciback.protocol.layout import fields_struct, offset_of
from pciback.protocol.transport import SharedPage

_OP = "struct xen_pci_op"
_ENTRY = "struct xen_msix_entry"


class OpRequest(NamedTuple):
    """The guest's op, copied out once. Numbers are as the ABI types them (`offset` and `size`
    are signed). A tuple: built from the unpacked fields without a Python-level constructor."""

    cmd: int
    domain: int
    bus: int
    devfn: int
    offset: int
    size: int
    value: int
    info: int
    private: bytes  # the copy of the whole op; MSI-X entries are read from it

    def __repr__(self) -> str:  # the copy is 548 bytes of noise in a log line
        return (
            f"OpRequest(cmd={self.cmd}, domain={self.domain}, bus={self.bus}, "
            f"devfn={self.devfn}, offset={self.offset}, size={self.size}, value={self.value}, "
            f"info={self.info})"
        )

    def msix_entries(self, count: int) -> tuple[tuple[int, int], ...]:
        """(entry, vector) of the first `count` slots of the snapshot (at most SH_INFO_MAX_VEC)."""
        n = max(0, min(count, SH_INFO_MAX_VEC))
        raw = self.private[_ENTRIES_AT : _ENTRIES_AT + n * _ENTRY_SIZE]
        return tuple((entry, vector) for vector, entry in _ENTRY_FIELDS.iter_unpack(raw))

    @classmethod
    def snapshot(cls, page: SharedPage) -> OpRequest:
        return snapshot(page)


# The header fields in OpRequest's order, which must be the struct's address order for one
# unpack to fill the tuple; checked here, at import, rather than trusted.
_HEADER_NAMES = OpRequest._fields[:-1]
if sorted(_HEADER_NAMES, key=lambda name: offset_of(_OP, name)) != list(_HEADER_NAMES):
    raise ImportError("OpRequest's fields are not in struct xen_pci_op's order")
_HEADER = fields_struct(_OP, _HEADER_NAMES)
_HEADER_AT = offset_of(_OP, _HEADER_NAMES[0])
_ENTRY_FIELDS = fields_struct(_ENTRY, ("vector", "entry"))
_ENTRY_SIZE = _ENTRY_FIELDS.size
_ENTRIES_AT = offset_of(_OP, "msix_entries")
if (
    offset_of(_ENTRY, "vector") != 0
    or offset_of(_OP, "msix_entries", 1) - _ENTRIES_AT != _ENTRY_SIZE
):
    raise ImportError("struct xen_msix_entry has bytes the entry format does not cover")

_unpack_header = _HEADER.unpack_from
_new_request = tuple.__new__


def snapshot(page: SharedPage) -> OpRequest:
    """The op on `page`, copied once: nothing of it is read from the page again."""
    private = page.copy_op()
    return _new_request(OpRequest, (*_unpack_header(private, _HEADER_AT), private))


#: For a path that needs the header fields alone (pciback.daemon.config_ops), as plain C calls:
#: `unpack_header(page.buffer, HEADER_IN_PAGE)` copies OpRequest's fields but `private` out of
#: the page in one go (each field read once, as from a snapshot).
unpack_header: Callable[[Any, int], tuple[int, ...]] = _unpack_header
HEADER_IN_PAGE: Final = OP_OFFSET + _HEADER_AT


# Where each answered field sits in the page. err, value and info are whole words of the op,
# written as such (SharedPage.op_words): `words[ERR_WORD] = err & 0xFFFFFFFF` (`err` is signed,
# the words are not), the others cut to 32 bits likewise. A vector is half a word: packed.
ERR_WORD: Final = offset_of(_OP, "err") // 4
VALUE_WORD: Final = offset_of(_OP, "value") // 4
_INFO_WORD = offset_of(_OP, "info") // 4
for _name in ("err", "value", "info"):
    if offset_of(_OP, _name) % 4 or fields_struct(_OP, (_name,)).size != 4:
        raise ImportError(f"{_name} is not a whole word of struct xen_pci_op")
_VECTOR = fields_struct(_ENTRY, ("vector",))
_VECTORS_AT = OP_OFFSET + _ENTRIES_AT + offset_of(_ENTRY, "vector")
if _VECTORS_AT + SH_INFO_MAX_VEC * _ENTRY_SIZE > OP_OFFSET + OP_SIZE:
    raise ImportError("the MSI-X vectors would be written past struct xen_pci_op")


class OpResult(NamedTuple):
    err: XenPciError
    value: int
    info: int | None = None  # written back only when set
    vectors: tuple[int, ...] = ()  # MSI-X vectors, in request order

    def write_back(self, page: SharedPage) -> None:
        """Into the page's `err`, `value`, `info` (when set) and one `vector` per validated
        entry; nothing else of the page is written (pad bytes of a format would be)."""
        words = page.op_words
        words[ERR_WORD] = self.err & 0xFFFFFFFF
        words[VALUE_WORD] = self.value & 0xFFFFFFFF
        if self.info is not None:
            words[_INFO_WORD] = self.info & 0xFFFFFFFF
        if self.vectors:  # MSI-X only: a config op's answer ends above
            buffer = page.buffer
            for i, vector in enumerate(self.vectors[:SH_INFO_MAX_VEC]):
                _VECTOR.pack_into(buffer, _VECTORS_AT + i * _ENTRY_SIZE, vector & 0xFFFF)


__all__ = [
    "ERR_WORD",
    "HEADER_IN_PAGE",
    "VALUE_WORD",
    "OpRequest",
    "OpResult",
    "snapshot",
    "unpack_header",
]
