"""A simulated PCI function built from a config-space dump.

It behaves like hardware where the backend's correctness depends on it: read-only IDs, BARs that
answer a sizing write with their size mask, write-1-to-clear status bits, power states, reset to
the dump's contents. Every write the backend makes is recorded in `writes` (since the last
hand-over to a guest) and in `history` (all of them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from struct import Struct

from pciback.dumps import load_config
from pciback.dumps.rw1c import hardware_rw1c
from pciback.engine.chain import (
    EXT_LINK,
    EXT_START,
    POINTER,
    STD_END,
    STD_LINK,
    walk,
)
from pciback.generated.names import (
    COMMON_HEADER,
    EA,
    EA_BRIDGE,
    EA_ENTRY,
    EXPANSION_ROM,
    IO_BAR,
    MEMORY_BAR,
    MSI,
    MSIX,
    PM,
    TYPE0,
    TYPE1,
)
from pciback.ports.bus import BarKind, BarResource

H = COMMON_HEADER
COMMAND, STATUS, HEADER_TYPE = H.COMMAND, H.STATUS, H.HEADER_TYPE
_INTX_DISABLE = COMMAND.INTX_DISABLE.mask
MSI_ADDRESS = 0xFEE00000  # the x86 interrupt window the host programs
INTERRUPT_LINE = TYPE0.INTERRUPT_LINE.offset  # at the same offset in a bridge's header
# Written by nothing: identity, class, layout, the list's head and the interrupt pin.
_READ_ONLY = (
    (H.VENDOR_ID.offset, H.VENDOR_ID.width),
    (H.DEVICE_ID.offset, H.DEVICE_ID.width),
    (H.REVISION_ID.offset, H.REVISION_ID.width),
    (H.PROG_IF.offset, H.PROG_IF.width),
    (H.CLASS_DEVICE.offset, H.CLASS_DEVICE.width),
    (H.HEADER_TYPE.offset, H.HEADER_TYPE.width),
    (POINTER.offset, POINTER.width),
    (TYPE0.INTERRUPT_PIN.offset, TYPE0.INTERRUPT_PIN.width),
)
# An endpoint's CardBus CIS pointer and subsystem IDs.
_READ_ONLY_TYPE0 = (
    (TYPE0.CARDBUS_CIS.offset, TYPE0.CARDBUS_CIS.width),
    (TYPE0.SUBSYSTEM_VENDOR_ID.offset, TYPE0.SUBSYSTEM_VENDOR_ID.width),
    (TYPE0.SUBSYSTEM_ID.offset, TYPE0.SUBSYSTEM_ID.width),
)
# The command register's bits up to INTx disable are writable; 11..15 are reserved.
_COMMAND_WRITABLE = (COMMAND.INTX_DISABLE.mask << 1) - 1
# A dump holds addresses, not sizes: a size guessed from an address's alignment is capped so
# that a BAR placed high in a 64-bit window is not taken for hundreds of GiB.
_MAX_BAR = 1 << 24


# Per access size, the little-endian unpacker of one register: unpacking in place costs half of
# what slicing the bytearray and converting the copy does, and every device read the engine makes
# (a command or BAR write reads the device first) is one of these.
_UNPACK: dict[int, Callable[[bytearray, int], tuple[int, ...]]] = {
    size: Struct(fmt).unpack_from for size, fmt in ((1, "<B"), (2, "<H"), (4, "<I"))
}


def _lowest_set_bit(value: int) -> int:
    return value & -value


class SimDevice:
    """A PCI function backed by a bytearray; `bar_sizes` overrides sizes guessed from the dump."""

    def __init__(
        self,
        address: str,
        config: bytes | str | Path,
        bar_sizes: Mapping[int, int] | None = None,
    ) -> None:
        self._address = address
        self.initial = load_config(config).config
        self.config = bytearray(self.initial)
        # `writes`: what reached the device since it was last handed to a guest (the log tests
        # of guest behaviour read); `history`: every write since the device was built,
        # seizing, resets and restores included.
        self.writes: list[tuple[int, int, int]] = []
        self.history: list[tuple[int, int, int]] = []
        self.resets = 0
        self.power_state = 0
        self.msi_vectors = 0  # 0: MSI off
        self.msix_entries: tuple[int, ...] | None = None  # None: MSI-X off
        self.enabled = False  # the host's pci_enable_device was done
        sizes = dict(bar_sizes or {})
        # The resources Enhanced Allocation fixes, as a dom0 lists them (a test's explicit size
        # still wins): their header BARs are hardwired to 0.
        placed = ea_resources(self.initial)
        self._ea_placed = {index: bar for index, bar in placed.items() if index not in sizes}
        self._bars = _infer_bars(self.initial, sizes, self._ea_placed)
        # The IRQ dom0 routed for INTx; a real host's may differ from the firmware's byte.
        self.irq = self.initial[INTERRUPT_LINE] if len(self.initial) > INTERRUPT_LINE else 0
        self._writable = self._writable_bits()
        # The bits a 1 clears, as the hardware has them (pciback.dumps.rw1c), and per dword
        # whether it has any: most writes find none with one look.
        self._rw1c = hardware_rw1c(_reader(self.initial), len(self.initial))
        self._rw1c_dwords = [any(self._rw1c[i : i + 4]) for i in range(0, len(self._rw1c), 4)]
        # Per access size, the last offset it may start at (the config never changes length):
        # one lookup checks a read.
        self._last_start = {size: len(self.config) - size for size in (1, 2, 4)}

    # -- the PhysicalDevice port -------------------------------------------------------------
    @property
    def address(self) -> str:
        return self._address

    @property
    def config_size(self) -> int:
        return len(self.config)

    def read(self, offset: int, size: int) -> int:
        if not 0 <= offset <= self._last_start.get(size, -1):
            self._check(offset, size)  # raises: the check in line, as the guest's reads come here
        return _UNPACK[size](self.config, offset)[0]  # the check leaves only sizes 1, 2 and 4

    def write(self, offset: int, size: int, value: int) -> None:
        if not 0 <= offset <= self._last_start.get(size, -1):
            self._check(offset, size)  # raises
        self.writes.append((offset, size, value))
        self.history.append((offset, size, value))
        # The access merged whole, as hardware latches it: the read-only bits keep their
        # value, and a 1 written to a status bit that clears on a 1 clears it.
        end = offset + size
        config = self.config
        mask = int.from_bytes(self._writable[offset:end], "little")
        old = int.from_bytes(config[offset:end], "little")
        new = (old & ~mask) | (value & mask)
        dwords = self._rw1c_dwords
        if dwords[offset >> 2] or dwords[(end - 1) >> 2]:
            rw1c = int.from_bytes(self._rw1c[offset:end], "little")
            new = (new & ~rw1c) | (old & rw1c & ~value)
        config[offset:end] = new.to_bytes(size, "little")

    def bars(self) -> tuple[BarResource, ...]:
        return self._bars

    def host_irq(self) -> int:
        return self.irq

    def enable(self) -> None:
        decode = 0
        for bar in self._bars:
            if bar.kind is BarKind.IO:
                decode |= COMMAND.IO_SPACE.mask
            elif bar.kind in (BarKind.MEM32, BarKind.MEM64, BarKind.ROM):
                decode |= COMMAND.MEMORY_SPACE.mask
        command = self.read(COMMAND.offset, COMMAND.width)
        if command | decode != command:
            self.write(COMMAND.offset, COMMAND.width, command | decode)
        self.enabled = True

    def set_power_state(self, state: int) -> None:
        if not 0 <= state <= 3:
            raise ValueError(f"no power state D{state}")
        self.power_state = state
        pm = self.find_capability(PM.id)
        if pm is not None:
            pmcsr = pm + PM.PMCSR.offset  # the state is in the register's low byte
            self.config[pmcsr] = PM.PMCSR.POWER_STATE.put(self.config[pmcsr], state)

    def hand_over(self) -> None:
        """A guest gets the device now: `writes` starts afresh (`history` keeps everything)."""
        self.writes.clear()

    def reset(self) -> None:
        self.resets += 1
        self.power_state = 0
        self.msi_vectors = 0
        self.msix_entries = None
        self.config[:] = self.initial

    def enable_msi(self, vectors: int) -> None:
        cap = self._require(MSI.id, "MSI")
        ctl = MSI.CONTROL
        control = self.read(cap + ctl.offset, ctl.width)
        capable = 1 << ctl.MULTIPLE_MESSAGE_CAPABLE.get(control)
        if vectors < 1 or vectors & (vectors - 1) or vectors > capable:
            raise ValueError(f"{self._address}: MSI cannot take {vectors} vectors")
        addr64 = ctl.ADDR64.get(control)
        self.write(cap + MSI.ADDRESS.offset, MSI.ADDRESS.width, MSI_ADDRESS)
        if addr64:
            self.write(cap + MSI.ADDRESS_UPPER.offset, MSI.ADDRESS_UPPER.width, 0)
        self.write(cap + MSI.DATA.offset(control_addr64=addr64), MSI.DATA.width, 0)
        control = ctl.MULTIPLE_MESSAGE_ENABLE.put(control, vectors.bit_length() - 1)
        self.write(cap + ctl.offset, ctl.width, ctl.ENABLE.put(control, 1))
        self._command(_INTX_DISABLE, True)
        self.msi_vectors = vectors

    def disable_msi(self) -> None:
        cap = self._require(MSI.id, "MSI")
        ctl = MSI.CONTROL
        off = ctl.MULTIPLE_MESSAGE_ENABLE.mask | ctl.ENABLE.mask
        self.write(cap + ctl.offset, ctl.width, self.read(cap + ctl.offset, ctl.width) & ~off)
        self._command(_INTX_DISABLE, False)
        self.msi_vectors = 0

    def enable_msix(self, entries: tuple[int, ...]) -> None:
        cap = self._require(MSIX.id, "MSI-X")
        ctl = MSIX.CONTROL
        control = self.read(cap + ctl.offset, ctl.width)
        table_size = ctl.TABLE_SIZE.get(control) + 1
        if not entries or any(not 0 <= e < table_size for e in entries):
            raise ValueError(f"{self._address}: MSI-X table has {table_size} entries")
        control = (control | ctl.ENABLE.mask) & ~ctl.FUNCTION_MASK.mask
        self.write(cap + ctl.offset, ctl.width, control)
        self._command(_INTX_DISABLE, True)
        self.msix_entries = tuple(entries)

    def disable_msix(self) -> None:
        cap = self._require(MSIX.id, "MSI-X")
        ctl = MSIX.CONTROL
        off = ctl.ENABLE.mask | ctl.FUNCTION_MASK.mask
        self.write(cap + ctl.offset, ctl.width, self.read(cap + ctl.offset, ctl.width) & ~off)
        self._command(_INTX_DISABLE, False)
        self.msix_entries = None

    def _command(self, bits: int, on: bool) -> None:
        command = self.read(COMMAND.offset, COMMAND.width)
        self.write(COMMAND.offset, COMMAND.width, command | bits if on else command & ~bits)

    # -- helpers for tests and the simulated host ---------------------------------------------
    def find_capability(self, cap_id: int) -> int | None:
        chains = walk(self.read, len(self.config))
        return next((c.offset for c in chains.standard if c.ident == cap_id), None)

    def _require(self, cap_id: int, name: str) -> int:
        pos = self.find_capability(cap_id)
        if pos is None:
            raise ValueError(f"{self._address} has no {name} capability")
        return pos

    def _check(self, offset: int, size: int) -> None:
        if size not in (1, 2, 4) or offset < 0 or offset + size > len(self.config):
            raise ValueError(f"bad config access {offset:#x}/{size} on {self._address}")

    def _writable_bits(self) -> bytearray:
        """Per byte, the bits a write changes (status rw1c bits are handled apart)."""
        size = len(self.config)
        w = bytearray(b"\xff" * size)
        header_type = HEADER_TYPE.LAYOUT.get(self.config[HEADER_TYPE.offset])
        read_only: tuple[tuple[int, int], ...] = (*_READ_ONLY, (STATUS.offset, STATUS.width))
        if header_type == TYPE0.header_type:
            read_only += _READ_ONLY_TYPE0
        for start, width in read_only:
            w[start : start + width] = bytes(width)
        for i in range(COMMAND.width):
            w[COMMAND.offset + i] = (_COMMAND_WRITABLE >> (8 * i)) & 0xFF
        for bar in self._bars:
            reg = _bar_offset(bar.index, header_type)
            if reg is None:
                continue
            # A BAR Enhanced Allocation stands for is hardwired to 0: read-only.
            mask = 0 if bar.index in self._ea_placed else _bar_write_mask(bar)
            for i in range(4):
                w[reg + i] = (mask >> (8 * i)) & 0xFF
        self._protect_chain(w)
        return w

    def _protect_chain(self, w: bytearray) -> None:
        """The lists' links are read-only, as in hardware: those the engine's walk finds (a
        64-byte dump has none), and the extended list's root even when the list is empty."""
        config = self.config
        chains = walk(_reader(config), len(config))
        for cap in chains.standard:
            w[cap.offset : cap.offset + STD_LINK] = bytes(STD_LINK)
        if len(config) > EXT_START:
            w[EXT_START : EXT_START + EXT_LINK] = bytes(EXT_LINK)
        for cap in chains.extended:
            w[cap.offset : cap.offset + EXT_LINK] = bytes(EXT_LINK)


def _bar_offset(index: int, header_type: int) -> int | None:
    bridge = header_type == TYPE1.header_type
    if index == 6:
        return TYPE1.ROM.offset if bridge else TYPE0.ROM.offset
    limit = 2 if bridge else 6
    return TYPE0.BAR0.offset + TYPE0.BAR0.width * index if index < limit else None


def _bar_write_mask(bar: BarResource) -> int:
    if bar.kind is BarKind.UNUSED or bar.size == 0:
        return 0
    if bar.kind is BarKind.MEM64_UPPER:
        return (~(bar.size - 1) >> 32) & 0xFFFFFFFF
    if bar.kind is BarKind.ROM:
        rom = EXPANSION_ROM.BAR
        return (~(bar.size - 1) & rom.ADDRESS.mask) | rom.ENABLE.mask
    if bar.kind is BarKind.IO:
        return ~(bar.size - 1) & IO_BAR.BAR.ADDRESS.mask
    return ~(bar.size - 1) & MEMORY_BAR.LOWER.ADDRESS.mask


def _reader(config: bytes | bytearray) -> Callable[[int, int], int]:
    """Reads of `config` as the engine's walk takes them (offset, size: a little-endian int)."""

    def read(at: int, size: int) -> int:
        return int.from_bytes(config[at : at + size], "little")

    return read


def _infer_bars(
    config: bytes, sizes: dict[int, int], placed: Mapping[int, BarResource]
) -> tuple[BarResource, ...]:
    """BAR kinds from the dump's flag bits; sizes from `sizes`, else from address alignment;
    the resources Enhanced Allocation `placed` in place of their indices'."""
    header_type = HEADER_TYPE.LAYOUT.get(config[HEADER_TYPE.offset])
    count = 2 if header_type == TYPE1.header_type else 6 if header_type == TYPE0.header_type else 0
    bars: list[BarResource] = []
    memory = MEMORY_BAR.LOWER
    index = 0
    while index < 6:
        if index >= count:
            bars.append(BarResource(index, BarKind.UNUSED, 0))
            index += 1
            continue
        off = TYPE0.BAR0.offset + TYPE0.BAR0.width * index
        value = int.from_bytes(config[off : off + 4], "little")
        if value & IO_BAR.BAR.IO_SPACE.mask:
            addr = value & IO_BAR.BAR.ADDRESS.mask
            size = sizes.get(index) or min(_lowest_set_bit(addr) or 32, 256)
            bars.append(BarResource(index, BarKind.IO, max(size, 4), start=addr))
        elif memory.TYPE.get(value) == MEMORY_BAR.TYPE_64 and index + 1 < count:
            hi = int.from_bytes(config[off + 4 : off + 8], "little")
            addr = (hi << 32) | (value & memory.ADDRESS.mask)
            size = sizes.get(index) or min(_lowest_set_bit(addr) or 4096, _MAX_BAR)
            pref = bool(value & memory.PREFETCHABLE.mask)
            bars.append(BarResource(index, BarKind.MEM64, max(size, 16), pref, start=addr))
            bars.append(BarResource(index + 1, BarKind.MEM64_UPPER, max(size, 16), pref))
            index += 2
            continue
        elif value == 0 and index not in sizes:
            bars.append(BarResource(index, BarKind.UNUSED, 0))
        else:
            addr = value & memory.ADDRESS.mask
            size = sizes.get(index) or min(_lowest_set_bit(addr) or 4096, _MAX_BAR)
            pref = bool(value & memory.PREFETCHABLE.mask)
            bars.append(BarResource(index, BarKind.MEM32, max(size, 16), pref, start=addr))
        index += 1
    rom_off = TYPE1.ROM.offset if header_type == TYPE1.header_type else TYPE0.ROM.offset
    rom = int.from_bytes(config[rom_off : rom_off + 4], "little") & EXPANSION_ROM.BAR.ADDRESS.mask
    if rom or 6 in sizes:
        size = sizes.get(6) or max(_lowest_set_bit(rom), 2048)
        bars.append(BarResource(6, BarKind.ROM, size, start=rom))
    else:
        bars.append(BarResource(6, BarKind.UNUSED, 0))
    for fixed in placed.values():
        _place(bars, fixed)
    return tuple(bars)


def _place(bars: list[BarResource], fixed: BarResource) -> None:
    """`fixed` in place of what the header gave its index (the header's BAR of a resource
    Enhanced Allocation places is hardwired to 0, so at most an upper half is displaced)."""
    index = fixed.index
    if bars[index].kind is BarKind.MEM64 and index + 1 < len(bars):
        bars[index + 1] = BarResource(index + 1, BarKind.UNUSED, 0)
    bars[index] = fixed


# Enhanced Allocation (PCI ECN, 2014): what an entry stands for and what space it is in. The
# BAR-equivalent values 0-5 are the function's BARs; the properties 0-2 its memory,
# prefetchable memory and I/O space (the others: virtual functions', a bridge's windows,
# reserved ranges, or 0xFF: see the secondary properties).
_EA_ROM = 8
_EA_BAR_INDEX = {**{bei: bei for bei in range(6)}, _EA_ROM: 6}
_EA_MEMORY, _EA_PREFETCHABLE, _EA_IO = 0x00, 0x01, 0x02
_EA_FUNCTION_SPACES = (_EA_MEMORY, _EA_PREFETCHABLE, _EA_IO)
# The primary properties past the last defined one (a bridge's I/O window) and before the
# reserved-resource ones: the secondary properties stand in for them, as Linux reads them.
_EA_BRIDGE_IO, _EA_MEMORY_RESERVED = 0x07, 0xFD
_DWORD = 0xFFFFFFFF
_WRAP = 1 << 64  # a resource ending at or past it wraps the 64-bit space: Linux drops it
_EA_MAX_ENTRIES = (1 << EA.ENTRIES.COUNT.width) - 1


def ea_resources(config: bytes) -> dict[int, BarResource]:
    """The resources a function's Enhanced Allocation capability fixes, by BAR index (6: the
    expansion ROM), as a Linux dom0 lists them in sysfs `resource` (it reads the entries at
    probe and keeps what they place): each enabled entry standing for one of the function's
    BARs or its ROM, in memory or I/O space. Their flags carry no 64-bit mark, so a memory
    one is MEM32 to the sysfs port whatever its width: the same here. A bridge's entries
    follow its fixed bus numbers; Linux places a BAR entry of a bridge at that BAR's index
    whatever the header has there, and leaves its windows' entries to the bus below. As Linux,
    an entry is left out whose size field disagrees with the dwords its Is64 bits give it, or
    whose end wraps past the 64-bit space."""
    header_type = HEADER_TYPE.LAYOUT.get(config[HEADER_TYPE.offset])
    bridge = header_type == TYPE1.header_type
    if not bridge and header_type != TYPE0.header_type:
        return {}
    read = _reader(config)
    found = [c for c in walk(read, len(config)).standard if c.ident == EA.id]
    if not found:
        return {}
    pos = found[0].offset
    count = EA.ENTRIES.COUNT.get(read(pos + EA.ENTRIES.offset, EA.ENTRIES.width))
    # The first entry follows the count's dword (and a bridge's fixed buses after it).
    first = EA_BRIDGE.FIXED_BUSES if bridge else EA.RESERVED
    at = pos + first.offset + first.width
    resources: dict[int, BarResource] = {}
    HEAD, BASE, MAX = EA_ENTRY.HEADER, EA_ENTRY.BASE, EA_ENTRY.MAX_OFFSET
    for _ in range(min(count, _EA_MAX_ENTRIES)):  # the count is the device's: bounded
        if at + MAX.offset + MAX.width > STD_END:
            break  # an entry past the standard space: none of the device's to trust
        header = read(at + HEAD.offset, HEAD.width)
        base, top = read(at + BASE.offset, BASE.width), read(at + MAX.offset, MAX.width)
        uppers = BASE.IS64.get(base) + MAX.IS64.get(top)
        if at + EA_ENTRY.BASE_UPPER.offset + uppers * EA_ENTRY.BASE_UPPER.width > STD_END:
            break
        start, last = base & BASE.ADDRESS.mask, top | ~MAX.OFFSET.mask & _DWORD
        upper = at + EA_ENTRY.BASE_UPPER.offset
        if BASE.IS64.get(base):
            start |= read(upper, EA_ENTRY.BASE_UPPER.width) << 32
            upper += EA_ENTRY.BASE_UPPER.width
        if MAX.IS64.get(top):
            last |= read(upper, EA_ENTRY.MAX_OFFSET_UPPER.width) << 32
        prop = HEAD.PRIMARY_PROPERTIES.get(header)
        if _EA_BRIDGE_IO < prop < _EA_MEMORY_RESERVED:
            prop = HEAD.SECONDARY_PROPERTIES.get(header)
        index = _EA_BAR_INDEX.get(HEAD.BAR_EQUIVALENT.get(header))
        whole = HEAD.ENTRY_SIZE.get(header) == (BASE.width + MAX.width) // HEAD.width + uppers
        if (
            HEAD.ENABLE.get(header)
            and index is not None
            and prop in _EA_FUNCTION_SPACES
            and whole
            and start + last < _WRAP
        ):
            kind = BarKind.ROM if index == 6 else BarKind.IO if prop == _EA_IO else BarKind.MEM32
            resources[index] = BarResource(index, kind, last + 1, prop == _EA_PREFETCHABLE, start)
        at += HEAD.width * (1 + HEAD.ENTRY_SIZE.get(header))  # the ECN's rule, as Linux walks them
    return resources
