"""Walking a device's capability lists, bounded: the device is not trusted to end its lists.

A cyclic, overlapping or out-of-range list stops the walk where it goes wrong; what was found
before that point is kept and the problem is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pciback.generated.names import (
    CAPABILITY_HEADER,
    CAPABILITY_LISTS,
    COMMON_HEADER,
    EXTENDED_CAPABILITY_HEADER,
    TYPE0,
)

# Where the lists start: the status bit and the pointer (the same byte in a bridge's header).
STATUS = COMMON_HEADER.STATUS
POINTER = TYPE0.CAPABILITIES_POINTER
# Where each list may lie (the policy's layout `capability_lists`), under the short names every
# walker uses.
STD_START, STD_END = CAPABILITY_LISTS.STANDARD_START, CAPABILITY_LISTS.STANDARD_END
EXT_START, EXT_END = CAPABILITY_LISTS.EXTENDED_START, CAPABILITY_LISTS.EXTENDED_END
# The links of the lists, the runtime's and no block's (the compiler keeps every block off
# them), named by the policy's layouts: a capability's ID byte and next pointer, an extended
# capability's header dword.
CAP_ID, CAP_NEXT = CAPABILITY_HEADER.ID.offset, CAPABILITY_HEADER.NEXT.offset
STD_LINK = CAPABILITY_HEADER.length  # bytes of the ID and the pointer
EXT_ID = EXTENDED_CAPABILITY_HEADER.HEADER.ID
EXT_VERSION = EXTENDED_CAPABILITY_HEADER.HEADER.VERSION
EXT_NEXT = EXTENDED_CAPABILITY_HEADER.HEADER.NEXT
EXT_LINK = EXTENDED_CAPABILITY_HEADER.length  # bytes of the header
STD_TTL = (STD_END - STD_START) // 4  # 48: every dword once
EXT_TTL = (EXT_END - EXT_START) // 8  # 480, as the Linux PCI core bounds it

Reader = Callable[[int, int], int]


@dataclass(frozen=True, slots=True)
class FoundCapability:
    ident: int
    offset: int
    extended: bool
    version: int = 0


@dataclass(slots=True)
class Chains:
    standard: list[FoundCapability] = field(default_factory=list)
    extended: list[FoundCapability] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def walk(read: Reader, config_size: int) -> Chains:
    chains = Chains()
    if read(STATUS.offset, STATUS.width) & STATUS.CAPABILITIES_LIST.mask:
        _walk_standard(read, chains, config_size)
    if config_size > EXT_START:
        _walk_extended(read, chains)
    return chains


def walk_standard(read: Reader, config_size: int) -> list[FoundCapability]:
    """The standard list alone, for a caller that has checked the status register's
    capability-list bit itself."""
    chains = Chains()
    _walk_standard(read, chains, config_size)
    return chains.standard


def walk_extended(read: Reader) -> list[FoundCapability]:
    """The extended list alone, for a caller that knows the function has extended space."""
    chains = Chains()
    _walk_extended(read, chains)
    return chains.extended


def _walk_standard(read: Reader, chains: Chains, config_size: int) -> None:
    pos = read(POINTER.offset, POINTER.width) & ~3
    seen: set[int] = set()
    # One pass more than there are dwords: a list in every dword of 0x40..0xff ends on the
    # pass after its 48th capability; any longer list repeats an offset and is caught as a loop.
    for _ in range(STD_TTL + 1):
        if pos == 0:
            return
        if not STD_START <= pos < STD_END:
            chains.problems.append(
                f"capability pointer {pos:#04x} outside {STD_START:#x}..{STD_END - 1:#x}"
            )
            return
        if pos + STD_LINK > config_size:  # a 64-byte dump (lspci -x) names capabilities it lacks
            chains.problems.append(f"capability pointer {pos:#04x} beyond the {config_size} bytes")
            return
        if pos in seen:
            chains.problems.append(f"capability list loops back to {pos:#04x}")
            return
        seen.add(pos)
        ident = read(pos + CAP_ID, 1)
        if ident == 0xFF:  # a function that has gone away reads all ones
            chains.problems.append(f"capability at {pos:#04x} reads all ones")
            return
        chains.standard.append(FoundCapability(ident, pos, extended=False))
        pos = read(pos + CAP_NEXT, 1) & ~3
    chains.problems.append("capability list longer than config space allows")


def _walk_extended(read: Reader, chains: Chains) -> None:
    pos = EXT_START
    seen: set[int] = set()
    for _ in range(EXT_TTL):
        header = read(pos, EXT_LINK)
        if header in (0, 0xFFFFFFFF):
            return
        if pos in seen:
            chains.problems.append(f"extended capability list loops back to {pos:#05x}")
            return
        seen.add(pos)
        chains.extended.append(
            FoundCapability(EXT_ID.get(header), pos, extended=True, version=EXT_VERSION.get(header))
        )
        nxt = EXT_NEXT.get(header) & ~3
        if nxt == 0:
            return
        if not EXT_START <= nxt < EXT_END:
            chains.problems.append(
                f"extended capability pointer {nxt:#05x} outside {EXT_START:#x}..{EXT_END - 1:#x}"
            )
            return
        pos = nxt
    chains.problems.append("extended capability list longer than config space allows")
