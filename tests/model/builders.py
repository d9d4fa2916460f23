"""Config spaces built byte by byte, so each test knows its device's layout exactly.

    b = ConfigBuilder()
    pm = b.pm()
    msi = b.msi(addr64=True, masking=True)
    space, dev = b.space()          # the guest view over a SimDevice of these bytes

Capabilities are placed one after another from 0x40 (extended ones from 0x100) unless `at` is
given, and linked in the order they were added; `build()` writes the chain.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

from pciback.dumps import load_config
from pciback.engine import ConfigSpace
from pciback.engine.chain import CAP_NEXT, EXT_START, EXT_TTL, STD_TTL
from pciback.engine.space import Gap
from pciback.generated.names import (
    AER,
    COMMON_HEADER,
    DSN,
    MSI,
    MSIX,
    PCIE,
    PM,
    SRIOV,
    TYPE0,
    VIRTIO_PCI_CAP,
    VPD,
)
from pciback.policy import build_config_space
from pciback.protocol.interrupts import InterruptControl
from pciback.sim.device import SimDevice
from pciback.sim.hypervisor import SimHypervisor
from pciback.tables import Bits, Register

ADDRESS = "0000:03:00.0"

View = tuple[ConfigSpace, SimDevice]
CapView = tuple[ConfigSpace, SimDevice, int]  # ... and the capability's offset
FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
# Real hardware's config spaces from pciutils' test data, kept in the repository
# (tests/fixtures/pciutils/README.md): present in every checkout, unlike FIXTURES.
PCIUTILS = Path(__file__).resolve().parents[1] / "fixtures" / "pciutils"
# ... and from a jailhouse-dev mail's archive of sysfs config files (tests/fixtures/jailhouse).
JAILHOUSE = Path(__file__).resolve().parents[1] / "fixtures" / "jailhouse"

CAP_PM = PM.id
CAP_VPD = VPD.id
CAP_MSI = MSI.id
CAP_VENDOR = VIRTIO_PCI_CAP.id  # the vendor-specific ID, which virtio's capabilities carry
CAP_PCIE = PCIE.id
CAP_MSIX = MSIX.id
EXT_AER = AER.id
EXT_DSN = DSN.id
EXT_SRIOV = SRIOV.id


def fixture_files() -> list[Path]:
    """Every raw dump in ../shared/fixtures (empty when the directory is absent)."""
    if not FIXTURES.is_dir():
        return []
    return sorted(FIXTURES.glob("*.bin"))


def pciutils_dumps() -> list[Path]:
    """Every dump of tests/fixtures/pciutils, one device each."""
    return sorted(PCIUTILS.glob("*.lspci.txt"))


def jailhouse_dumps() -> list[Path]:
    """Every dump of tests/fixtures/jailhouse, one device each."""
    return sorted(JAILHOUSE.glob("*.lspci.txt"))


def dump_view(path: Path, *, permissive: bool = False) -> View:
    """The view of a one-device lspci dump (tests/fixtures/pciutils, lkml), at its address."""
    dump = load_config(path)
    assert dump.address is not None
    sim = SimDevice(dump.address, path)
    return build_config_space(sim, permissive=permissive), sim


def aligned_accesses(start: int, stop: int) -> list[tuple[int, int]]:
    """Every naturally aligned 1-, 2- and 4-byte access from `start` up to `stop`."""
    return [(off, size) for size in (1, 2, 4) for off in range(start, stop) if off % size == 0]


def field_accesses(at: int, width: int, mask: int) -> Iterator[tuple[int, int, int]]:
    """Each aligned access within the register at `at` that holds bits of the field, as
    (offset, size, the field's bits in the access's positions)."""
    for off, size in aligned_accesses(at, at + width):
        if off + size > at + width:
            continue
        bits = (mask >> (8 * (off - at))) & ((1 << (8 * size)) - 1)
        if bits:
            yield off, size, bits


def assert_engine_default(
    view: ConfigSpace, sim: SimDevice, start: int, stop: int, *, permissive: bool
) -> None:
    """The bytes from `start` to `stop` are described by no table: the engine's default, read
    from the device and written there in permissive mode only. The write of the first dword
    reaching the device in permissive mode shows a test's write checks can see one."""
    assert start < stop
    for off in range(start, stop):
        assert type(view.slot_at(off)) is Gap, f"{off:#x}"
    before = sim.read(start, 4)
    view.write(start, 4, ~before & 0xFFFFFFFF)
    expect = [(start, 4, ~before & 0xFFFFFFFF)] if permissive else []
    assert sim.writes == expect


D = TypeVar("D", bound=Enum)


@dataclass(frozen=True)
class DecidedRegister(Generic[D]):
    """A register of generated/names.py with the decision a test expects of each of its named
    fields (the test's own enum of decisions, typed independently of dsl/)."""

    name: str  # the register's name in the policy
    offset: int  # from the capability's start
    width: int
    fields: dict[str, tuple[Bits, D]]


def decided(name: str, names: Any, decisions: dict[str, D]) -> DecidedRegister[D]:
    """`names`' register with `decisions`: every field the policy names must have one."""
    bits = {n: v for n, v in vars(names).items() if isinstance(v, Bits)}
    assert set(bits) == set(decisions), f"{name}: {sorted(set(bits) ^ set(decisions))}"
    return DecidedRegister(
        name, names.offset, names.width, {n: (bits[n], decisions[n]) for n in bits}
    )


@dataclass
class ConfigBuilder:
    vendor: int = 0x8086
    device: int = 0x1234
    header_type: int = 0
    size: int = 256
    class_code: int = 0x020000
    command: int = 0x0006
    subsystem: tuple[int, int] = (0x8086, 0x0001)
    bar_sizes: dict[int, int] = field(default_factory=dict)
    cfg: bytearray = field(init=False)
    _caps: list[int] = field(default_factory=list, init=False)
    _ext: list[int] = field(default_factory=list, init=False)
    _next_std: int = field(default=0x40, init=False)
    _next_ext: int = field(default=0x100, init=False)

    def __post_init__(self) -> None:
        self.cfg = bytearray(self.size)
        self.poke(0x00, 2, self.vendor)
        self.poke(0x02, 2, self.device)
        self.poke(0x04, 2, self.command)
        self.poke(0x08, 4, self.class_code << 8 | 0x01)
        self.cfg[0x0E] = self.header_type
        if self.header_type == 0:
            self.poke(0x2C, 2, self.subsystem[0])
            self.poke(0x2E, 2, self.subsystem[1])
        self.cfg[0x3C], self.cfg[0x3D] = 11, 1

    # -- raw access ------------------------------------------------------------------------------
    def poke(self, offset: int, size: int, value: int) -> None:
        self.cfg[offset : offset + size] = value.to_bytes(size, "little")

    def peek(self, offset: int, size: int) -> int:
        return int.from_bytes(self.cfg[offset : offset + size], "little")

    def bar(self, index: int, value: int, size: int | None = None) -> None:
        self.poke(0x10 + 4 * index, 4, value)
        if size is not None:
            self.bar_sizes[index] = size

    # -- capabilities ----------------------------------------------------------------------------
    def cap(self, ident: int, body: bytes = b"", at: int | None = None) -> int:
        """A standard capability: ID, next (filled in by build) and `body` from offset 2."""
        pos = self._next_std if at is None else at
        length = 2 + len(body)
        assert pos >= 0x40 and pos + length <= 0x100, f"capability at {pos:#x} does not fit"
        self.cfg[pos] = ident
        self.cfg[pos + 2 : pos + length] = body
        self._caps.append(pos)
        self._next_std = max(self._next_std, (pos + length + 3) & ~3)
        return pos

    def ext_cap(
        self, ident: int, body: bytes = b"", version: int = 1, at: int | None = None
    ) -> int:
        """An extended capability: header (next filled in by build) and `body` from offset 4."""
        assert self.size == 4096, "extended capabilities need a 4 KiB config space"
        pos = self._next_ext if at is None else at
        self.poke(pos, 4, ident | version << 16)
        self.cfg[pos + 4 : pos + 4 + len(body)] = body
        self._ext.append(pos)
        self._next_ext = max(self._next_ext, (pos + 4 + len(body) + 7) & ~7)
        return pos

    def pm(self, *, pmc: int = 0x0003 | 0x0600, pmcsr: int = 0x0008) -> int:
        """PM 1.2; D1 and D2 supported by default; PMCSR with No_Soft_Reset."""
        return self.cap(CAP_PM, struct.pack("<HHBB", pmc, pmcsr, 0, 0))

    def vpd(self) -> int:
        return self.cap(CAP_VPD, struct.pack("<HI", 0, 0))

    def msi(self, *, addr64: bool = False, masking: bool = False, mmc: int = 0) -> int:
        control = (mmc << 1) | (0x80 if addr64 else 0) | (0x100 if masking else 0)
        length = 10 + 4 * addr64 + 10 * masking
        body = bytearray(length - 2)
        struct.pack_into("<H", body, 0, control)
        return self.cap(CAP_MSI, bytes(body))

    def msix(
        self,
        *,
        entries: int = 8,
        table: tuple[int, int] = (0, 0x2000),
        pba: tuple[int, int] = (0, 0x3000),
        control: int = 0,
    ) -> int:
        """(BIR, offset) of the table and the PBA."""
        return self.cap(
            CAP_MSIX,
            struct.pack("<HII", control | (entries - 1), table[1] | table[0], pba[1] | pba[0]),
        )

    def pcie(self, *, version: int = 2, port_type: int = 0, devctl: int = 0x2810) -> int:
        length = 0x3C if version >= 2 else 0x14
        body = bytearray(length - 2)
        struct.pack_into("<H", body, 0, version | port_type << 4)
        struct.pack_into("<I", body, 2, 0x10008FC2)  # MPS 512, FLR, ...
        struct.pack_into("<H", body, 6, devctl)
        struct.pack_into("<I", body, 0x0A, 0x00437D13)  # 8 GT/s x1, ASPM L0s/L1
        struct.pack_into("<H", body, 0x0E, 0x0040)  # common clock
        struct.pack_into("<H", body, 0x10, 0x1013)  # 8 GT/s x1, slot clock
        return self.cap(CAP_PCIE, bytes(body))

    def vendor_cap(self, payload: bytes = b"\x00" * 6) -> int:
        return self.cap(CAP_VENDOR, bytes([2 + len(payload) + 1]) + payload)

    def aer(self) -> int:
        body = bytearray(0x44)
        struct.pack_into("<IIIII", body, 0, 0, 0, 0x00462030, 0, 0x00002000)
        struct.pack_into("<I", body, 0x14, 0x000000A0)  # ECRC generation/check capable
        return self.ext_cap(EXT_AER, bytes(body), version=2)

    # -- output ----------------------------------------------------------------------------------
    def build(self) -> bytes:
        cfg = bytearray(self.cfg)
        if self._caps:
            cfg[0x06] |= 0x10
            cfg[0x34] = self._caps[0]
            for pos, nxt in zip(self._caps, [*self._caps[1:], 0], strict=True):
                cfg[pos + 1] = nxt
        for pos, nxt in zip(self._ext, [*self._ext[1:], 0][: len(self._ext)], strict=True):
            header = int.from_bytes(cfg[pos : pos + 4], "little") & 0xFFFFF
            cfg[pos : pos + 4] = (header | nxt << 20).to_bytes(4, "little")
        return bytes(cfg)

    def sim(self, address: str = ADDRESS) -> SimDevice:
        return SimDevice(address, self.build(), bar_sizes=self.bar_sizes)

    def space(
        self,
        *,
        permissive: bool = False,
        hide: Iterable[int] = (),
        hide_extended: Iterable[int] = (),
        extra_registers: Iterable[Register] = (),
    ) -> View:
        dev = self.sim()
        space = build_config_space(
            dev,
            permissive=permissive,
            hide=hide,
            hide_extended=hide_extended,
            extra_registers=extra_registers,
        )
        return space, dev


def endpoint(
    *, vendor: int = 0x8086, device: int = 0x1234, size: int = 256, command: int = 0x0006
) -> ConfigBuilder:
    """A type-0 function with a 16 KiB 32-bit memory BAR0, the usual home of an MSI-X table."""
    b = ConfigBuilder(vendor=vendor, device=device, size=size, command=command)
    b.bar(0, 0xFE000000, size=0x4000)
    return b


def view_of(
    config: bytes, *, bar_sizes: Mapping[int, int] | None = None, hide: Iterable[int] = ()
) -> View:
    dev = SimDevice(ADDRESS, config, bar_sizes=bar_sizes)
    return build_config_space(dev, hide=hide), dev


def guest_bytes(space: ConfigSpace) -> bytes:
    """The whole config space as the guest reads it, dword by dword."""
    return b"".join(space.read(off, 4).to_bytes(4, "little") for off in range(0, space.size, 4))


def chain(space: ConfigSpace) -> list[tuple[int, int]]:
    """(offset, ID) of the standard capabilities as a guest walks them through the view."""
    out: list[tuple[int, int]] = []
    status, pointer = COMMON_HEADER.STATUS, TYPE0.CAPABILITIES_POINTER
    if not space.read(status.offset, status.width) & status.CAPABILITIES_LIST.mask:
        return out
    pos = space.read(pointer.offset, pointer.width) & ~3
    for _ in range(STD_TTL):
        if not pos:
            break
        out.append((pos, space.read(pos, 1)))
        pos = space.read(pos + CAP_NEXT, 1) & ~3
    return out


def ext_chain(space: ConfigSpace) -> list[tuple[int, int]]:
    """(offset, ID) of the extended capabilities as a guest walks them (ID 0 at 0x100 = none)."""
    out: list[tuple[int, int]] = []
    if space.size <= EXT_START:
        return out
    pos = EXT_START
    for _ in range(EXT_TTL):
        header = space.read(pos, 4)
        if header in (0, 0xFFFFFFFF):
            break
        if header & 0xFFFF:
            out.append((pos, header & 0xFFFF))
        pos = (header >> 20) & 0xFFC
        if pos < EXT_START:
            break
    return out


def allow_interrupt_control(space: ConfigSpace) -> None:
    """The operator's allow_interrupt_control, on a view served as the daemon serves one: with
    an interrupt owner attached, the only writer of the MSI/MSI-X control bits."""
    space.settings.interrupt_control = True
    space.interrupts = InterruptControl(1, space.device, SimHypervisor(), space)
