"""The `xen-pciback.hide` syntax and the slot / quirk strings of the driver's sysfs attributes.

Accepted forms, as the Linux driver accepts them (hex numbers, domain 0 when omitted):

    hide list   (DDDD:BB:DD.F)(BB:DD.F)(DDDD:BB:DD.*)(BB:*.*) ...   whitespace between groups
    slot        DDDD:BB:DD.F | BB:DD.F, with the same `*` wildcards  (new_slot, remove_slot, ...)
    quirk       DDDD:BB:DD.F-REG:SIZE:MASK | BB:DD.F-REG:SIZE:MASK   (quirks)

A wildcard function (`DD.*`) covers functions 0..7; a wildcard slot (`*.*`) covers every slot of
the bus. Where this parser is stricter than the kernel's sscanf it is on purpose: no sign and no
`0x` prefix (sscanf turns `.-1` into an accidental wildcard), at most 8 digits per number, and a
quirk field must be 1, 2 or 4 bytes wide and naturally aligned.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

MAX_TEXT = 64 * 1024
MAX_PATTERNS = 4096
_MAX_DIGITS = 8
_HEX = frozenset("0123456789abcdefABCDEF")
_WS = frozenset(" \t\n\r\f\v")
_ADDRESS = re.compile(r"([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")

HIDE_FORM = "(DDDD:BB:DD.F) or (BB:DD.F), F may be *, DD.F may be *.*"
SLOT_FORM = "DDDD:BB:DD.F or BB:DD.F, F may be *, DD.F may be *.*"
QUIRK_FORM = "DDDD:BB:DD.F-REG:SIZE:MASK or BB:DD.F-REG:SIZE:MASK"


class HideSyntaxError(ValueError):
    """A hide list, slot or quirk string that does not parse; `column` is 1-based."""

    def __init__(self, column: int, problem: str, form: str) -> None:
        super().__init__(f"column {column}: {problem} (expected {form})")
        self.column = column
        self.problem = problem
        self.form = form


def parse_address(address: str) -> tuple[int, int, int, int]:
    """`DDDD:BB:DD.F` as (domain, bus, slot, function); ValueError for anything else."""
    m = _ADDRESS.fullmatch(address) if len(address) == 12 else None
    if m is None:
        raise ValueError(f"not a PCI address DDDD:BB:DD.F: {address[:40]!r}")
    slot = int(m.group(3), 16)
    if slot > 0x1F:
        raise ValueError(f"device number {slot:#x} above 0x1f in {address!r}")
    return int(m.group(1), 16), int(m.group(2), 16), slot, int(m.group(4), 16)


def format_address(domain: int, bus: int, slot: int, function: int) -> str:
    return f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"


@dataclass(frozen=True, slots=True)
class HidePattern:
    """One group of a hide list; `slot` / `function` None mean the `*` wildcard."""

    domain: int
    bus: int
    slot: int | None
    function: int | None

    def matches(self, address: str) -> bool:
        try:
            domain, bus, slot, function = parse_address(address)
        except ValueError:
            return False
        return (
            domain == self.domain
            and bus == self.bus
            and (self.slot is None or slot == self.slot)
            and (self.function is None or function == self.function)
        )

    def addresses(self) -> Iterator[str]:
        """Every concrete address the pattern covers (at most 256), in bus order."""
        slots = range(32) if self.slot is None else (self.slot,)
        functions = range(8) if self.function is None else (self.function,)
        for slot in slots:
            for function in functions:
                yield format_address(self.domain, self.bus, slot, function)

    def __str__(self) -> str:
        slot = "*" if self.slot is None else f"{self.slot:02x}"
        function = "*" if self.function is None else f"{self.function:x}"
        return f"{self.domain:04x}:{self.bus:02x}:{slot}.{function}"


@dataclass(frozen=True, slots=True)
class QuirkSpec:
    """A field the operator adds to a device's config-space policy (the `quirks` attribute):
    guest writes to the bits of `mask` in the `size`-byte register at `offset` reach hardware."""

    address: str
    offset: int
    size: int
    mask: int


class _Cursor:
    """A read position over bounded text; every error names a 1-based column."""

    def __init__(self, text: str, form: str) -> None:
        if len(text) > MAX_TEXT:
            raise HideSyntaxError(MAX_TEXT + 1, f"text longer than {MAX_TEXT} characters", form)
        self.text = text
        self.pos = 0
        self.form = form

    def error(self, problem: str, at: int | None = None) -> HideSyntaxError:
        return HideSyntaxError((self.pos if at is None else at) + 1, problem, self.form)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def found(self) -> str:
        ch = self.peek()
        return f"found {ch!r}" if ch else "found end of text"

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def expect(self, ch: str, what: str) -> None:
        if self.peek() != ch:
            raise self.error(f"expected {what} {ch!r}, {self.found()}")
        self.pos += 1

    def accept(self, ch: str) -> bool:
        if self.peek() == ch:
            self.pos += 1
            return True
        return False

    def hex(self, what: str, limit: int) -> int:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _HEX:
            self.pos += 1
            if self.pos - start > _MAX_DIGITS:
                raise self.error(f"{what} has more than {_MAX_DIGITS} digits", start)
        if self.pos == start:
            raise self.error(f"expected {what} (hex), {self.found()}")
        value = int(self.text[start : self.pos], 16)
        if value > limit:
            raise self.error(f"{what} {value:#x} out of range 0..{limit:#x}", start)
        return value

    def slot_function(self) -> tuple[int | None, int | None]:
        """`DD.F`, `DD.*` or `*.*` (the cursor is just after the bus's colon)."""
        if self.accept("*"):
            self.expect(".", "'.' after the wildcard slot")
            if not self.accept("*"):
                raise self.error(f"expected '*' after '*.' (a wildcard slot), {self.found()}")
            return None, None
        slot = self.hex("device", 0x1F)
        self.expect(".", "'.' between device and function")
        if self.accept("*"):
            return slot, None
        return slot, self.hex("function", 7)

    def address(self, wildcards: bool) -> HidePattern:
        """`DDDD:BB:` + slot/function or `BB:` + slot/function."""
        start = self.pos
        first = self.hex("domain or bus", 0xFFFF)
        self.expect(":", "':' after the domain or bus")
        if self.peek() != "*":
            mark = self.pos
            second = self.hex("bus or device", 0xFFFF)
            if self.accept(":"):
                if second > 0xFF:
                    raise self.error(f"bus {second:#x} out of range 0..0xff", mark)
                slot, function = self.slot_function()
                pattern = HidePattern(first, second, slot, function)
            else:
                self.pos = mark
                pattern = self._short(first, start)
        else:
            pattern = self._short(first, start)
        if not wildcards and (pattern.slot is None or pattern.function is None):
            raise self.error("wildcards are not allowed here", start)
        return pattern

    def _short(self, bus: int, start: int) -> HidePattern:
        if bus > 0xFF:
            raise self.error(f"bus {bus:#x} out of range 0..0xff", start)
        slot, function = self.slot_function()
        return HidePattern(0, bus, slot, function)


def parse_hide(text: str) -> list[HidePattern]:
    """Every group of a `xen-pciback.hide` value, in order; an empty value hides nothing."""
    cur = _Cursor(text, HIDE_FORM)
    patterns: list[HidePattern] = []
    cur.skip_ws()
    while cur.peek():
        if len(patterns) >= MAX_PATTERNS:
            raise cur.error(f"more than {MAX_PATTERNS} groups")
        cur.expect("(", "group opening")
        cur.skip_ws()
        patterns.append(cur.address(wildcards=True))
        cur.expect(")", "group closing")
        cur.skip_ws()
    return patterns


def parse_slot(text: str) -> HidePattern:
    """One slot as written to the driver's new_slot / remove_slot / permissive attributes."""
    cur = _Cursor(text, SLOT_FORM)
    cur.skip_ws()
    pattern = cur.address(wildcards=True)
    cur.skip_ws()
    if cur.peek():
        raise cur.error(f"unexpected text after the slot, {cur.found()}")
    return pattern


def parse_device(text: str) -> str:
    """One concrete device (no wildcards) in slot syntax, returned as `DDDD:BB:DD.F`."""
    cur = _Cursor(text, "DDDD:BB:DD.F or BB:DD.F")
    cur.skip_ws()
    p = cur.address(wildcards=False)
    cur.skip_ws()
    if cur.peek():
        raise cur.error(f"unexpected text after the device, {cur.found()}")
    assert p.slot is not None and p.function is not None
    return format_address(p.domain, p.bus, p.slot, p.function)


def parse_quirk(text: str) -> QuirkSpec:
    """A `quirks` attribute line: a device, then the register offset, size and writable mask."""
    cur = _Cursor(text, QUIRK_FORM)
    cur.skip_ws()
    p = cur.address(wildcards=False)
    assert p.slot is not None and p.function is not None
    cur.expect("-", "'-' between the device and the register")
    at = cur.pos
    offset = cur.hex("register", 0xFFF)
    cur.expect(":", "':' after the register")
    size_at = cur.pos
    size = cur.hex("size", 4)
    if size not in (1, 2, 4):
        raise cur.error(f"size {size} is not 1, 2 or 4", size_at)
    if offset % size or offset + size > 0x1000:
        raise cur.error(f"register {offset:#x} is not aligned to its size {size}", at)
    cur.expect(":", "':' after the size")
    mask_at = cur.pos
    mask = cur.hex("mask", 0xFFFFFFFF)
    if mask >> (8 * size):
        raise cur.error(f"mask {mask:#x} wider than {size} byte(s)", mask_at)
    cur.skip_ws()
    if cur.peek():
        raise cur.error(f"unexpected text after the quirk, {cur.found()}")
    address = format_address(p.domain, p.bus, p.slot, p.function)
    return QuirkSpec(address, offset, size, mask)


def hides(patterns: list[HidePattern], address: str) -> bool:
    return any(p.matches(address) for p in patterns)
