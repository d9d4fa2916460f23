"""Atomic bit operations on the shared page's flags word, through libatomic.

The flags word is written by the guest on another CPU with locked instructions (Linux pcifront
uses set_bit/test_bit, pciback test_and_set_bit/clear_bit). A Python read-modify-write
(`flags = flags | bit`) is not atomic against that CPU: a bit the guest changes between the read
and the write is lost, and a lost _XEN_PCIB_active or _XEN_PCIF_active hangs one side. No part
of Python or cffi's ABI mode does an atomic read-modify-write on foreign memory, and an API-mode
extension would need a compiler on every dom0. libatomic (GCC's runtime, Debian: libatomic1)
exports the out-of-line atomics as ordinary symbols (`__atomic_fetch_or_4`, ...); for an aligned
4-byte word they are lock-free on x86-64 and Arm64 (a locked instruction, LL/SC or LSE), so they
interoperate with the guest's own atomics. Without libatomic the Xen backend refuses to start
rather than fall back to a racy update.

Every flags access of the Xen backend goes through `bit_op`, and it only ever clears
_XEN_PCIF_active and sets/clears _XEN_PCIB_active (the bits the backend owns in the protocol);
reads use a sequentially consistent load, so the op fields read after seeing _XEN_PCIF_active
are not read early on a weakly ordered CPU, and the clear that hands the op back orders the
written result before it (Linux pairs a wmb with it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum
from functools import partial
from typing import Any

from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

from pciback.xen._loader import load

# GCC's memory-model argument of the __atomic builtins (__ATOMIC_SEQ_CST).
SEQ_CST = 5

DECLS = (
    # The narrower loads read a function's ECAM page (pciback.xen.ecam): one load each.
    "uint8_t __atomic_load_1(const volatile void *mem, int model);",
    "uint16_t __atomic_load_2(const volatile void *mem, int model);",
    "uint32_t __atomic_load_4(const volatile void *mem, int model);",
    "uint32_t __atomic_fetch_or_4(volatile void *mem, uint32_t val, int model);",
    "uint32_t __atomic_fetch_and_4(volatile void *mem, uint32_t val, int model);",
)

ffi = FFI()
ffi.cdef("\n".join(DECLS))

_lib: Any = None
_lib_lock = threading.Lock()


class BitAction(Enum):
    TEST = "test"
    SET = "set"  # test_and_set_bit
    CLEAR = "clear"  # test_and_clear_bit


def library() -> Any:
    """libatomic, loaded once; XenUnavailable when it is not installed."""
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = load(ffi, "atomic", ("libatomic.so.1",), "libatomic1")
        return _lib


def word_of(buffer: Any) -> Any:
    """The first 32-bit word of a writable buffer (the flags of struct xen_pci_sharedinfo)."""
    word = ffi.from_buffer("uint32_t[]", buffer, require_writable=True)
    if len(word) < 1 or int(ffi.cast("uintptr_t", word)) % 4:
        raise ValueError("the flags word must be 4 bytes, 4-byte aligned")
    return word


class AtomicWord:
    """The atomic bit operations on one word, libatomic's functions looked up once: the op path
    tests and clears a bit of the flags word several times per op, and `bit_op` pays a lock
    (`library`) and three look-ups each time."""

    __slots__ = ("_fetch_and", "_fetch_or", "_load", "word")

    def __init__(self, buffer: Any) -> None:
        lib = library()
        self.word = word_of(buffer)
        # getattr: in a class body, `lib.__atomic_load_4` would be name-mangled.
        self._load = getattr(lib, "__atomic_load_4")
        self._fetch_or = getattr(lib, "__atomic_fetch_or_4")
        self._fetch_and = getattr(lib, "__atomic_fetch_and_4")

    # The bit is checked in line: a call to a checking helper would cost more than the atomic.
    def test(self, bit: int) -> bool:
        """The bit, read with a sequentially consistent load."""
        if not 0 <= bit < 32:
            raise ValueError(f"bit {bit} outside a 32-bit word")
        return bool(self._load(self.word, SEQ_CST) >> bit & 1)

    def set(self, bit: int) -> bool:
        """test_and_set_bit: set `bit`, return whether it was set before."""
        if not 0 <= bit < 32:
            raise ValueError(f"bit {bit} outside a 32-bit word")
        return bool(self._fetch_or(self.word, 1 << bit, SEQ_CST) >> bit & 1)

    def loader(self) -> Callable[[], int]:
        """`test`'s load as a callable that runs no Python frame: the whole word, for a loop
        that looks at it often (the service loop's look for the next op)."""
        return partial(self._load, self.word, SEQ_CST)

    def clearer(self, bit: int) -> Callable[[], int]:
        """`clear(bit)` as a callable that runs no Python frame; it returns the word before."""
        if not 0 <= bit < 32:
            raise ValueError(f"bit {bit} outside a 32-bit word")
        return partial(self._fetch_and, self.word, ~(1 << bit) & 0xFFFFFFFF, SEQ_CST)

    def clear(self, bit: int) -> bool:
        """test_and_clear_bit: clear `bit`, return whether it was set before."""
        if not 0 <= bit < 32:
            raise ValueError(f"bit {bit} outside a 32-bit word")
        return bool(self._fetch_and(self.word, ~(1 << bit) & 0xFFFFFFFF, SEQ_CST) >> bit & 1)


def bit_op(word: Any, bit: int, action: BitAction) -> bool:
    """Apply `action` to `bit` of the word atomically; return the bit's value before."""
    if not 0 <= bit < 32:
        raise ValueError(f"bit {bit} outside a 32-bit word")
    lib = library()
    mask = 1 << bit
    if action is BitAction.TEST:
        old = lib.__atomic_load_4(word, SEQ_CST)
    elif action is BitAction.SET:
        old = lib.__atomic_fetch_or_4(word, mask, SEQ_CST)
    else:
        old = lib.__atomic_fetch_and_4(word, ~mask & 0xFFFFFFFF, SEQ_CST)
    return bool(int(old) & mask)
