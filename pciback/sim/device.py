"""A simulated PCI function built from a config-space dump.

It behaves like hardware where the backend's correctness depends on it: read-only IDs, BARs that
answer a sizing write with their size mask, write-1-to-clear status bits, power states, reset to
the dump's contents. Every write the backend makes is recorded in `writes` (since the last
hand-over to a guest) and in `history` (all of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pciback.dumps import load_config
from pciback.engine.chain import walk
from pciback.ports.bus import BarKind, BarResource

COMMAND = 0x04
STATUS = 0x06
CAP_MSI = 0x05
CAP_MSIX = 0x11
_INTX_DISABLE = 0x400
_COMMAND_IO = 0x1
_COMMAND_MEMORY = 0x2
MSI_ADDRESS = 0xFEE00000  # the x86 interrupt window the host programs
BAR0 = 0x10
INTERRUPT_LINE = 0x3C
ROM_TYPE0 = 0x30
ROM_TYPE1 = 0x38
_STATUS_RW1C = 0xF900  # detected parity .. master data parity error (PCI 3.0 6.2.3)
# A dump holds addresses, not sizes: a size guessed from an address's alignment is capped so
# that a BAR placed high in a 64-bit window is not taken for hundreds of GiB.
_MAX_BAR = 1 << 24


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
        self._bars = _infer_bars(self.initial, dict(bar_sizes or {}))
        # The IRQ dom0 routed for INTx; a real host's may differ from the firmware's byte.
        self.irq = self.initial[INTERRUPT_LINE] if len(self.initial) > INTERRUPT_LINE else 0
        self._writable = self._writable_bits()

    # -- the PhysicalDevice port -------------------------------------------------------------
    @property
    def address(self) -> str:
        return self._address

    @property
    def config_size(self) -> int:
        return len(self.config)

    def read(self, offset: int, size: int) -> int:
        self._check(offset, size)
        return int.from_bytes(self.config[offset : offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        self._check(offset, size)
        self.writes.append((offset, size, value))
        self.history.append((offset, size, value))
        for i in range(size):
            self._write_byte(offset + i, (value >> (8 * i)) & 0xFF)

    def bars(self) -> tuple[BarResource, ...]:
        return self._bars

    def host_irq(self) -> int:
        return self.irq

    def enable(self) -> None:
        decode = 0
        for bar in self._bars:
            if bar.kind is BarKind.IO:
                decode |= _COMMAND_IO
            elif bar.kind in (BarKind.MEM32, BarKind.MEM64, BarKind.ROM):
                decode |= _COMMAND_MEMORY
        command = self.read(COMMAND, 2)
        if command | decode != command:
            self.write(COMMAND, 2, command | decode)
        self.enabled = True

    def set_power_state(self, state: int) -> None:
        if not 0 <= state <= 3:
            raise ValueError(f"no power state D{state}")
        self.power_state = state
        pm = self.find_capability(0x01)
        if pm is not None:
            pmcsr = pm + 4
            self.config[pmcsr] = (self.config[pmcsr] & ~0x3) | state

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
        cap = self._require(CAP_MSI, "MSI")
        control = self.read(cap + 2, 2)
        capable = 1 << ((control >> 1) & 7)
        if vectors < 1 or vectors & (vectors - 1) or vectors > capable:
            raise ValueError(f"{self._address}: MSI cannot take {vectors} vectors")
        is64 = bool(control & 0x80)
        self.write(cap + 4, 4, MSI_ADDRESS)
        if is64:
            self.write(cap + 8, 4, 0)
        self.write(cap + (0xC if is64 else 8), 2, 0)
        mme = (vectors.bit_length() - 1) << 4
        self.write(cap + 2, 2, (control & ~0x71) | mme | 1)
        self.write(COMMAND, 2, self.read(COMMAND, 2) | _INTX_DISABLE)
        self.msi_vectors = vectors

    def disable_msi(self) -> None:
        cap = self._require(CAP_MSI, "MSI")
        self.write(cap + 2, 2, self.read(cap + 2, 2) & ~0x71)
        self.write(COMMAND, 2, self.read(COMMAND, 2) & ~_INTX_DISABLE)
        self.msi_vectors = 0

    def enable_msix(self, entries: tuple[int, ...]) -> None:
        cap = self._require(CAP_MSIX, "MSI-X")
        control = self.read(cap + 2, 2)
        table_size = (control & 0x7FF) + 1
        if not entries or any(not 0 <= e < table_size for e in entries):
            raise ValueError(f"{self._address}: MSI-X table has {table_size} entries")
        self.write(cap + 2, 2, (control | 0x8000) & ~0x4000)
        self.write(COMMAND, 2, self.read(COMMAND, 2) | _INTX_DISABLE)
        self.msix_entries = tuple(entries)

    def disable_msix(self) -> None:
        cap = self._require(CAP_MSIX, "MSI-X")
        self.write(cap + 2, 2, self.read(cap + 2, 2) & ~0xC000)
        self.write(COMMAND, 2, self.read(COMMAND, 2) & ~_INTX_DISABLE)
        self.msix_entries = None

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

    def _write_byte(self, offset: int, byte: int) -> None:
        mask = self._writable[offset]
        old = self.config[offset]
        new = (old & ~mask) | (byte & mask)
        if offset in (STATUS, STATUS + 1):
            rw1c = (_STATUS_RW1C >> (8 * (offset - STATUS))) & 0xFF
            new = (new & ~rw1c) | (old & rw1c & ~byte)
        self.config[offset] = new

    def _writable_bits(self) -> bytearray:
        """Per byte, the bits a write changes (status rw1c bits are handled apart)."""
        size = len(self.config)
        w = bytearray(b"\xff" * size)
        header_type = self.config[0x0E] & 0x7F
        for off in (0x00, 0x01, 0x02, 0x03, 0x08, 0x09, 0x0A, 0x0B, 0x0E, 0x34, 0x3D):
            w[off] = 0
        w[STATUS] = w[STATUS + 1] = 0
        w[0x05] = 0x07  # command bits 8..10; bits 11..15 reserved
        if header_type == 0:
            for off in range(0x28, 0x30):  # CardBus CIS, subsystem IDs
                w[off] = 0
        for bar in self._bars:
            reg = _bar_offset(bar.index, header_type)
            if reg is None:
                continue
            mask = _bar_write_mask(bar)
            for i in range(4):
                w[reg + i] = (mask >> (8 * i)) & 0xFF
        self._protect_chain(w)
        return w

    def _protect_chain(self, w: bytearray) -> None:
        pos = self.config[0x34] & ~3 if self.config[STATUS] & 0x10 else 0
        for _ in range(48):
            if pos < 0x40 or pos + 2 > len(self.config):  # a 64-byte dump has no list
                break
            w[pos] = w[pos + 1] = 0
            pos = self.config[pos + 1] & ~3
        if len(self.config) > 256:
            pos = 0x100
            for _ in range((4096 - 256) // 4):
                header = int.from_bytes(self.config[pos : pos + 4], "little")
                for i in range(4):
                    w[pos + i] = 0
                nxt = (header >> 20) & 0xFFC
                if header in (0, 0xFFFFFFFF) or nxt < 0x100:
                    break
                pos = nxt


def _bar_offset(index: int, header_type: int) -> int | None:
    if index == 6:
        return ROM_TYPE1 if header_type == 1 else ROM_TYPE0
    limit = 2 if header_type == 1 else 6
    return BAR0 + 4 * index if index < limit else None


def _bar_write_mask(bar: BarResource) -> int:
    if bar.kind is BarKind.UNUSED or bar.size == 0:
        return 0
    if bar.kind is BarKind.MEM64_UPPER:
        return (~(bar.size - 1) >> 32) & 0xFFFFFFFF
    if bar.kind is BarKind.ROM:
        return (~(bar.size - 1) & 0xFFFFF800) | 0x1
    if bar.kind is BarKind.IO:
        return ~(bar.size - 1) & 0xFFFFFFFC
    return ~(bar.size - 1) & 0xFFFFFFF0


def _infer_bars(config: bytes, sizes: dict[int, int]) -> tuple[BarResource, ...]:
    """BAR kinds from the dump's flag bits; sizes from `sizes`, else from address alignment."""
    header_type = config[0x0E] & 0x7F
    count = 2 if header_type == 1 else 6 if header_type == 0 else 0
    bars: list[BarResource] = []
    index = 0
    while index < 6:
        if index >= count:
            bars.append(BarResource(index, BarKind.UNUSED, 0))
            index += 1
            continue
        off = BAR0 + 4 * index
        value = int.from_bytes(config[off : off + 4], "little")
        if value & 1:
            addr = value & ~0x3
            size = sizes.get(index) or min(_lowest_set_bit(addr) or 32, 256)
            bars.append(BarResource(index, BarKind.IO, max(size, 4), start=addr))
        elif (value >> 1) & 3 == 2 and index + 1 < count:
            hi = int.from_bytes(config[off + 4 : off + 8], "little")
            addr = (hi << 32) | (value & ~0xF)
            size = sizes.get(index) or min(_lowest_set_bit(addr) or 4096, _MAX_BAR)
            pref = bool(value & 0x8)
            bars.append(BarResource(index, BarKind.MEM64, max(size, 16), pref, start=addr))
            bars.append(BarResource(index + 1, BarKind.MEM64_UPPER, max(size, 16), pref))
            index += 2
            continue
        elif value == 0 and index not in sizes:
            bars.append(BarResource(index, BarKind.UNUSED, 0))
        else:
            addr = value & ~0xF
            size = sizes.get(index) or min(_lowest_set_bit(addr) or 4096, _MAX_BAR)
            bars.append(
                BarResource(index, BarKind.MEM32, max(size, 16), bool(value & 0x8), start=addr)
            )
        index += 1
    rom_off = ROM_TYPE1 if header_type == 1 else ROM_TYPE0
    rom = int.from_bytes(config[rom_off : rom_off + 4], "little") & ~0x7FF
    if rom or 6 in sizes:
        size = sizes.get(6) or max(_lowest_set_bit(rom), 2048)
        bars.append(BarResource(6, BarKind.ROM, size, start=rom))
    else:
        bars.append(BarResource(6, BarKind.UNUSED, 0))
    return tuple(bars)
