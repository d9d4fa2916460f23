"""`struct` formats for fields of the shared page, derived from its cffi declarations.

cffi's attribute access costs a fraction of a microsecond per field, and the op path reads and
writes a dozen of them per op; one `struct.unpack_from` of a private copy costs about as much
as a single one. The formats are worked out here, once at import, from what cffi says of each
field (offset, size, signedness), so the layout still lives only in `abi.CDEF`: nothing here
restates an offset or a type.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from pciback.protocol.abi import ffi

_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
# cffi's fixed-width integer types, as the CDEF spells them: the only kinds the page holds.
_INTEGER_NAMES = frozenset(f"{sign}int{bits}_t" for sign in ("", "u") for bits in (8, 16, 32, 64))


def integer_code(ctype: Any) -> str:
    """struct's code for a C integer type: its size and signedness as cffi has them."""
    if ctype.kind != "primitive" or ctype.cname not in _INTEGER_NAMES:
        raise TypeError(f"{ctype.cname} is not an integer type")
    code = _CODES[ffi.sizeof(ctype)]
    return code if int(ffi.cast(ctype, -1)) < 0 else code.upper()


def fields_struct(ctype_name: str, names: Sequence[str]) -> struct.Struct:
    """A Struct over the named integer fields of `ctype_name`, given in address order, that
    starts at the first of them (unpack or pack at the struct's address plus that field's
    offset) and ends with the last. The bytes between two fields are pad bytes: skipped by an
    unpack, but zeroed by a pack, so a format written into the page names one field. Native
    byte order (the guest shares the CPU), standard sizes, no alignment: every offset comes
    from cffi."""
    ctype = ffi.typeof(ctype_name)
    fields = dict(ctype.fields)
    parts = ["="]
    position = fields[names[0]].offset
    for name in names:
        field = fields[name]
        if field.offset < position:
            raise ValueError(f"{ctype_name}.{name} is not after the field before it")
        if field.offset > position:
            parts.append(f"{field.offset - position}x")
        parts.append(integer_code(field.type))
        position = field.offset + ffi.sizeof(field.type)
    return struct.Struct("".join(parts))


def offset_of(ctype_name: str, *path: str | int) -> int:
    """Byte offset of a (nested) field or array item: ffi.offsetof, named here so callers need
    no ffi."""
    return int(ffi.offsetof(ctype_name, *path))


__all__ = ["fields_struct", "integer_code", "offset_of"]
