"""The engine against a deliberately simple reference model of the same semantics.

Random header layouts are written as policy source and compiled (so the compiler is exercised
too), laid over a memory device with random bytes and random rw1c bits, and driven by random
guest reads and writes of every size at aligned offsets, straddling registers and gaps. After
every step the guest's read value, the device's bytes and the bytes the device was written are
compared with the reference below.

The reference shares no code with the engine beyond the table enums: it works one bit of one
byte at a time, straight from DESIGN.md, and is meant to be read as the statement of the rules:

- the access of a field is its declared access, or its permissive access in permissive mode;
- a read of a described bit: 0 if its access is rsvdp/rsvdz, else by backing: hw, the device
  now; cached, the device when the view was built; shadow, the backend's value; const, the
  field's value. Undescribed bytes read the device;
- a write, per bit: rw takes the guest's bit (into the shadow, or for the device); rw1c clears
  on a 1 (in the shadow; for the device a 1 is written) and is never echoed: a hw bit declared
  rw1c that the guest does not clear is written as 0; ro/rsvdp keep the device's value (it is
  echoed); rsvdz writes 0. Bits that are not hw echo the device's value;
- a byte of the access reaches the device only if it holds a hw bit the guest may change: an
  rw or rsvdz bit, or an rw1c bit the guest writes 1 to (a 0 changes nothing, so there is
  nothing to write). Bytes of a register outside the access never do;
- undescribed bytes take the guest's byte in permissive mode and are never written otherwise.

Hooks are left out: they are pinned by example in test_straddling.py.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from pciback.engine import ConfigSpace, Policy
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import COMMON_HEADER
from pciback.tables import Access, Backing
from tests.engine.support import MemoryDevice, compile_policy

HEADER = 0x40  # the header block the layouts describe
DEVICE_SIZE = 0x100
SPAN = 0x50  # guest accesses reach past the header: undescribed bytes beyond it too
HEADER_TYPE = COMMON_HEADER.HEADER_TYPE.offset
STATUS = COMMON_HEADER.STATUS.offset
STATUS_CAP_LIST = COMMON_HEADER.STATUS.CAPABILITIES_LIST.mask

# What the compiler accepts: a cached or const field cannot take guest data.
ACCESSES: dict[Backing, tuple[Access, ...]] = {
    Backing.HW: tuple(Access),
    Backing.SHADOW: tuple(Access),
    Backing.CACHED: (Access.RO, Access.RSVDP, Access.RSVDZ),
    Backing.CONST: (Access.RO, Access.RSVDP, Access.RSVDZ),
}


PROPERTY = settings(
    deadline=None,
    derandomize=True,  # CI sees the same examples on every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


# -- the layouts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FieldSpec:
    lsb: int  # bit positions within the register
    msb: int
    backing: Backing
    access: Access
    permissive: Access | None
    init: int | None  # shadow's initial value (None: the device's) or const's value

    def access_in(self, permissive: bool) -> Access:
        return self.permissive if permissive and self.permissive else self.access

    def rw1c_anywhere(self) -> bool:
        return Access.RW1C in (self.access, self.permissive)

    def source(self, name: str) -> str:
        bits = f"[{self.msb}]" if self.msb == self.lsb else f"[{self.msb}:{self.lsb}]"
        if self.backing is Backing.SHADOW:
            backing = f"shadow({'hw' if self.init is None else self._spell(self.init)})"
        elif self.backing is Backing.CONST:
            backing = f"const({self._spell(self.init or 0)})"
        else:
            backing = self.backing.value
        line = f"{name} {bits} {backing} {self.access.value}"
        if self.permissive is not None:
            line += f" permissive {self.permissive.value}"
        return line

    def _spell(self, value: int) -> str:
        # Every spelling the grammar knows, chosen by position: no draw, so nothing to shrink.
        return (hex, str, bin)[self.lsb % 3](value)


@dataclass(frozen=True)
class RegSpec:
    offset: int
    width: int  # bytes
    fields: tuple[FieldSpec, ...]

    def source(self) -> str:
        kind = {1: "u8", 2: "u16", 4: "u32"}[self.width]
        lines = [f"    register r{self.offset:02x} @{self.offset:#04x} {kind} {{"]
        # Fields in either order (the compiler must not care), chosen by position, not drawn.
        order = self.fields[::-1] if (self.offset // self.width) % 2 else self.fields
        lines += [f"        {f.source(f'f{i}')}" for i, f in enumerate(order)]
        lines.append("    }")
        return "\n".join(lines)


Layout = tuple[RegSpec, ...]


def policy_source(layout: Layout) -> str:
    body = "\n".join(reg.source() for reg in layout)
    return f'header h type 0 "a random layout" {{\n{body}\n}}\n'


# -- strategies ------------------------------------------------------------------------------------
PATTERNS = ((4,), (2, 2), (2, 1, 1), (1, 1, 2), (1, 1, 1, 1))


@st.composite
def fields_for(draw: st.DrawFn, width: int) -> tuple[FieldSpec, ...]:
    bits = width * 8
    cuts = draw(st.sets(st.integers(1, bits - 1), max_size=min(bits - 1, 6)))
    edges = [0, *sorted(cuts), bits]
    fields = []
    for lsb, end in itertools.pairwise(edges):
        msb = end - 1
        backing = draw(st.sampled_from(tuple(Backing)))
        allowed = ACCESSES[backing]
        access = draw(st.sampled_from(allowed))
        others = tuple(a for a in allowed if a is not access)
        permissive = draw(st.none() | st.sampled_from(others)) if others else None
        init = None
        top = (1 << (msb - lsb + 1)) - 1
        if backing is Backing.CONST:
            init = draw(st.integers(0, top))
        elif backing is Backing.SHADOW:
            init = draw(st.none() | st.integers(0, top))
        fields.append(FieldSpec(lsb, msb, backing, access, permissive, init))
    return tuple(fields)


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    dwords = draw(st.lists(st.integers(0, HEADER // 4 - 1), unique=True, min_size=1, max_size=6))
    regs = []
    for dword in sorted(dwords):
        pattern = draw(st.sampled_from(PATTERNS))
        pos = dword * 4
        for width in pattern:
            if len(pattern) == 1 or draw(st.integers(0, 3)):  # a few holes between registers
                regs.append(RegSpec(pos, width, draw(fields_for(width))))
            pos += width
    return tuple(regs)


@dataclass(frozen=True)
class Op:
    write: bool
    offset: int
    size: int
    value: int

    def __repr__(self) -> str:
        if self.write:
            return f"write({self.offset:#04x}, {self.size}, {self.value:#x})"
        return f"read({self.offset:#04x}, {self.size})"


@st.composite
def ops_for(draw: st.DrawFn, layout: Layout) -> Op:
    size = draw(st.sampled_from((1, 2, 4)))
    described = [r.offset + b for r in layout for b in range(r.width)]
    anywhere = st.integers(0, SPAN - 1)
    near = st.sampled_from(described) if described else anywhere
    offset = draw(near | anywhere) // size * size
    write = draw(st.booleans())
    value = draw(st.integers(0, (1 << (8 * size)) - 1)) if write else 0
    return Op(write, offset, size, value)


@dataclass(frozen=True)
class Case:
    layout: Layout
    permissive: bool
    config: bytes
    rw1c: dict[int, int]  # device byte -> bits that clear on 1
    ops: tuple[Op, ...]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    permissive = draw(st.booleans())
    layout = draw(layouts())
    config = bytearray(draw(st.binary(min_size=SPAN, max_size=SPAN)))
    config += bytes(DEVICE_SIZE - SPAN)
    config[HEADER_TYPE] &= 0x80  # header type 0: the layout's block applies
    config[STATUS] &= ~STATUS_CAP_LIST & 0xFF  # no capability list: the header alone
    rw1c: dict[int, int] = {}
    for reg in layout:
        for fld in reg.fields:
            if fld.backing is not Backing.HW or not fld.rw1c_anywhere():
                continue
            width = fld.msb - fld.lsb + 1
            chosen = draw(st.integers(0, (1 << width) - 1)) << fld.lsb
            for byte in range(reg.width):
                bits = (chosen >> (8 * byte)) & 0xFF
                if bits:
                    rw1c[reg.offset + byte] = rw1c.get(reg.offset + byte, 0) | bits
    ops = draw(st.lists(ops_for(layout), min_size=1, max_size=25))
    return Case(layout, permissive, bytes(config), rw1c, tuple(ops))


# -- the reference ---------------------------------------------------------------------------------
class Reference:
    """A device and its guest view, one bit at a time."""

    def __init__(self, case: Case) -> None:
        self.permissive = case.permissive
        self.device = bytearray(case.config)
        self.built = bytes(case.config)  # what the device held when the view was built
        self.rw1c = case.rw1c
        self.field: dict[tuple[int, int], FieldSpec] = {}  # (byte, bit) -> its field
        self.register: dict[int, RegSpec] = {}  # byte -> its register
        self.shadow: dict[tuple[int, int], int] = {}  # (byte, bit) -> the backend's bit
        self.const: dict[tuple[int, int], int] = {}
        for reg in case.layout:
            for byte in range(reg.offset, reg.offset + reg.width):
                self.register[byte] = reg
            for fld in reg.fields:
                for bit in range(fld.lsb, fld.msb + 1):
                    where = (reg.offset + bit // 8, bit % 8)
                    self.field[where] = fld
                    if fld.backing is Backing.SHADOW and fld.init is None:
                        self.shadow[where] = self._bit(self.built, where)
                    elif fld.backing is Backing.SHADOW:
                        assert fld.init is not None
                        self.shadow[where] = (fld.init >> (bit - fld.lsb)) & 1
                    elif fld.backing is Backing.CONST:
                        self.const[where] = ((fld.init or 0) >> (bit - fld.lsb)) & 1

    @staticmethod
    def _bit(data: bytes | bytearray, where: tuple[int, int]) -> int:
        byte, bit = where
        return (data[byte] >> bit) & 1

    def read(self, offset: int, size: int) -> int:
        value = 0
        for i in range(size):
            value |= self._read_byte(offset + i) << (8 * i)
        return value

    def _read_byte(self, byte: int) -> int:
        if byte not in self.register:
            return self.device[byte]
        out = 0
        for bit in range(8):
            where = (byte, bit)
            fld = self.field[where]
            if fld.access_in(self.permissive) in (Access.RSVDP, Access.RSVDZ):
                continue
            if fld.backing is Backing.HW:
                value = self._bit(self.device, where)
            elif fld.backing is Backing.CACHED:
                value = self._bit(self.built, where)
            elif fld.backing is Backing.SHADOW:
                value = self.shadow[where]
            else:
                value = self.const[where]
            out |= value << bit
        return out

    def write(self, offset: int, size: int, value: int) -> list[tuple[int, int]]:
        """The guest's write; returns the (byte, value) pairs the device is written."""
        written: list[tuple[int, int]] = []
        for i in range(size):
            byte = offset + i
            guest = (value >> (8 * i)) & 0xFF
            if byte not in self.register:
                if self.permissive:
                    written.append((byte, guest))
                continue
            out, reaches = self._write_byte(byte, guest)
            if reaches:
                written.append((byte, out))
        for byte, out in written:  # the device, as MemoryDevice models one
            clear = self.rw1c.get(byte, 0)
            old = self.device[byte]
            self.device[byte] = (out & ~clear) | (old & clear & ~out)
        return written

    def _write_byte(self, byte: int, guest: int) -> tuple[int, bool]:
        out, reaches = 0, False
        for bit in range(8):
            where = (byte, bit)
            fld = self.field[where]
            access = fld.access_in(self.permissive)
            mine = (guest >> bit) & 1
            device = self._bit(self.device, where)
            if fld.backing is Backing.SHADOW:
                if access is Access.RW:
                    self.shadow[where] = mine
                elif access is Access.RW1C and mine:
                    self.shadow[where] = 0
            if fld.backing is not Backing.HW:
                out |= device << bit
            elif access is Access.RW:
                out |= mine << bit
                reaches = True
            elif access is Access.RW1C:
                out |= mine << bit
                reaches = reaches or bool(mine)
            elif access is Access.RSVDZ:
                reaches = True
            elif not fld.rw1c_anywhere():  # ro, rsvdp: the device's value, never an rw1c 1
                out |= device << bit
        return out, reaches


# -- driving both ----------------------------------------------------------------------------------
_COMPILED: dict[str, Policy] = {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reference")


def compile_cached(text: str, where: Path) -> Policy:
    policy = _COMPILED.get(text)
    if policy is None:
        name = "p" + hashlib.sha256(text.encode()).hexdigest()[:16]
        policy = _COMPILED[text] = compile_policy(text, where, name)
    return policy


def byte_writes(log: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """The device's write log as (byte, value) pairs; every access a valid config access."""
    pairs = []
    for offset, size, value in log:
        assert size in (1, 2, 4) and offset % size == 0, f"device access {offset:#x}/{size}"
        pairs += [(offset + i, (value >> (8 * i)) & 0xFF) for i in range(size)]
    bytes_written = [byte for byte, _ in pairs]
    assert len(set(bytes_written)) == len(bytes_written), f"a byte written twice: {log}"
    return sorted(pairs)


def run_case(case: Case, where: Path) -> None:
    text = policy_source(case.layout)
    note(f"{text}permissive={case.permissive}")
    note("device: " + " ".join(f"{i:02x}={b:02x}" for i, b in enumerate(case.config) if b))
    note("rw1c: " + " ".join(f"{i:02x}={b:02x}" for i, b in sorted(case.rw1c.items())))
    policy = compile_cached(text, where)
    device = MemoryDevice(DEVICE_SIZE, rw1c=dict(case.rw1c))
    device.config[:] = case.config
    view = ConfigSpace(device, policy, permissive=case.permissive)
    assert view.problems == []
    ref = Reference(case)
    assert device.writes == [], "building the view wrote the device"
    for step, op in enumerate(case.ops):
        where_ = f"step {step}: {op!r}"
        if op.write:
            before = len(device.writes)
            view.write(op.offset, op.size, op.value)
            expected = ref.write(op.offset, op.size, op.value)
            assert byte_writes(device.writes[before:]) == sorted(expected), where_
        else:
            got = view.read(op.offset, op.size)
            assert got == ref.read(op.offset, op.size), f"{where_}: read {got:#x}"
        assert bytes(device.config) == bytes(ref.device), where_
    for offset in range(0, SPAN, 4):  # the whole view at the end: shadows included
        assert view.read(offset, 4) == ref.read(offset, 4), f"final read at {offset:#x}"


@settings(PROPERTY, max_examples=400)
@given(case=cases())
def test_engine_matches_the_reference_model(case: Case, workdir: Path) -> None:
    run_case(case, workdir)


# -- refused accesses ------------------------------------------------------------------------------
@settings(PROPERTY, max_examples=100)
@given(
    layout=layouts(),
    size=st.sampled_from((64, 256, 4096)),
    offset=st.integers(-8, 4096 + 8),
    width=st.integers(-1, 9),
    permissive=st.booleans(),
)
def test_accesses_at_bad_offsets_or_sizes_are_refused(
    layout: Layout,
    size: int,
    offset: int,
    width: int,
    permissive: bool,
    workdir: Path,
) -> None:
    policy = compile_cached(policy_source(layout), workdir)
    device = MemoryDevice(size)
    view = ConfigSpace(device, policy, permissive=permissive)
    bad = width not in (1, 2, 4) or offset % width != 0 or offset < 0 or offset + width > size
    if not bad:
        assert 0 <= view.read(offset, width) < 1 << (8 * width)
        view.write(offset, width, 0)
        return
    with pytest.raises(PciOpError) as info:
        view.read(offset, width)
    assert info.value.err is XenPciError.INVALID_OFFSET
    with pytest.raises(PciOpError) as info:
        view.write(offset, width, 0xFFFFFFFF)
    assert info.value.err is XenPciError.INVALID_OFFSET
    assert device.writes == []


# -- the mode decides which bits read 0 ------------------------------------------------------------
MODE_DECIDES = """
header h type 0 {
    register opened @0x10 u8 { v [7:0] hw rsvdp permissive rw }
    register closed @0x11 u8 { v [7:0] hw ro permissive rsvdp }
}
"""


@pytest.mark.parametrize("offset", [0x10, 0x11])
def test_a_permissive_access_decides_whether_a_bit_reads_zero(offset: int, workdir: Path) -> None:
    device = MemoryDevice(DEVICE_SIZE)
    device.poke(0x10, 2, 0xABAB)
    view = ConfigSpace(device, compile_cached(MODE_DECIDES, workdir), permissive=True)
    if offset == 0x10:  # rsvdp, permissive rw: the guest's write lands and reads back
        view.write(0x10, 1, 0x5A)
        assert device.read(0x10, 1) == 0x5A
        assert view.read(0x10, 1) == 0x5A
        view.settings.permissive = False  # reserved again outside permissive mode
        assert view.read(0x10, 1) == 0
    else:  # ro, permissive rsvdp: reserved in permissive mode, so it reads 0
        assert view.read(0x11, 1) == 0
        view.settings.permissive = False
        assert view.read(0x11, 1) == 0xAB
