"""The engine's planned accesses give exactly what the plain splitter gives.

`Oracle` is the slow path the fast one must match: the access splitter walking the dispatch
map on every access, and the register merge as it was before plans (no value folded in, a
fresh hook context for every hook call, the device read again after any write hook). A fast
view and an oracle over twin devices take the same accesses, every offset and size, reads and
writes, and must agree on every value, refusal, device write and warning, and on the state
they leave behind.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pciback.engine import ConfigSpace
from pciback.engine.hookapi import HookContext
from pciback.engine.registers import RegisterInstance, natural_pieces
from pciback.engine.snapshot import export_state, import_state
from pciback.engine.space import NO_POLICY_FOR_HEADER, Blocked, ChainLink, Gap, HostOwned
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import COMMON_HEADER, VIRTIO_PCI_CAP
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice
from pciback.tables import Edge
from tests.model.builders import (
    ADDRESS,
    EXT_DSN,
    ConfigBuilder,
    allow_interrupt_control,
    endpoint,
    fixture_files,
)

Outcome = tuple[object, ...]


class Oracle:
    """Guest accesses to `space`, computed the slow way from its map and registers."""

    def __init__(self, space: ConfigSpace) -> None:
        self.space = space

    # -- the splitter ----------------------------------------------------------------------------
    def _check(self, offset: int, size: int) -> None:
        if size not in (1, 2, 4) or offset % size or not 0 <= offset <= self.space.size - size:
            raise PciOpError(
                XenPciError.INVALID_OFFSET, f"config access {offset:#x}/{size} refused"
            )

    def _run(self, pos: int, end: int, slot: object) -> int:
        run = 1
        while pos + run < end and self.space.slot_at(pos + run) is slot:
            run += 1
        return run

    def read(self, offset: int, size: int) -> int:
        self._check(offset, size)
        device = self.space.device
        result = 0
        pos, end = offset, offset + size
        while pos < end:
            slot = self.space.slot_at(pos)
            if isinstance(slot, Gap | Blocked):
                run = self._run(pos, end, slot)
                if isinstance(slot, Gap):
                    for start, length in natural_pieces(pos, run):
                        result |= device.read(start, length) << (8 * (start - offset))
                pos += run
                continue
            stop = min(slot.end, end)
            value = slot.raw if isinstance(slot, ChainLink) else self._value(slot)
            value >>= 8 * (pos - slot.offset)
            result |= (value & ((1 << (8 * (stop - pos))) - 1)) << (8 * (pos - offset))
            pos = stop
        return result

    def write(self, offset: int, size: int, value: int) -> None:
        self._check(offset, size)
        space = self.space
        value &= (1 << (8 * size)) - 1
        pos, end = offset, offset + size
        while pos < end:
            slot = space.slot_at(pos)
            data = value >> (8 * (pos - offset))
            if isinstance(slot, RegisterInstance):
                stop = min(slot.end, end)
                self._write(slot, pos, stop - pos, data & ((1 << (8 * (stop - pos))) - 1))
                pos = stop
            elif isinstance(slot, Gap):
                run = self._run(pos, end, slot)
                if isinstance(slot, HostOwned):
                    space.warn_permissive(f"undescribed bytes at {pos:#x}", NO_POLICY_FOR_HEADER)
                elif space.permissive:
                    for start, length in natural_pieces(pos, run):
                        chunk = (value >> (8 * (start - offset))) & ((1 << (8 * length)) - 1)
                        space.device.write(start, length, chunk)
                else:
                    space.warn_permissive(f"undescribed bytes at {pos:#x}")
                pos += run
            elif isinstance(slot, ChainLink):
                pos = min(slot.end, end)
            else:
                pos += self._run(pos, end, slot)

    # -- a register ------------------------------------------------------------------------------
    @staticmethod
    def _compose(inst: RegisterInstance, hw: int) -> int:
        visible = inst.masks[inst.space.permissive].visible
        return ((hw & inst.hw_mask) | inst.cached | inst.const | inst.shadow) & visible

    def _value(self, inst: RegisterInstance) -> int:
        hw = inst.space.device.read(inst.offset, inst.width) if inst.hw_mask else 0
        value = self._compose(inst, hw)
        if inst.read_hooks:
            ctx = HookContext(inst.space, inst, value, value)
            for mask, shift, read in inst.read_hooks:
                shown = read(ctx, (value & mask) >> shift)
                value = (value & ~mask) | ((shown << shift) & mask)
        return value

    def _write(self, inst: RegisterInstance, start: int, length: int, data: int) -> None:
        space = inst.space
        shift = (start - inst.offset) * 8
        bytes_mask = ((1 << (8 * length)) - 1) << shift
        wval = (data << shift) & bytes_mask
        device = space.device
        masks = inst.masks[space.permissive]
        touches_hw = (masks.rw | masks.rw1c | masks.rsvdz) & inst.hw_mask & bytes_mask
        hw = device.read(inst.offset, inst.width) if inst.hw_mask else 0
        old = self._compose(inst, hw) & ~(masks.rw1c | inst.hw_rw1c)
        new = (old & ~bytes_mask) | wval
        veto = 0
        implementations = space.policy.implementations
        hooks = [(f, implementations.write[f.on_write]) for f in inst.reg.fields if f.on_write]
        if hooks:
            ctx = HookContext(space, inst, old, new)
            for fld, hook in hooks:
                if not fld.mask & bytes_mask:
                    continue
                before = (old & fld.mask) >> fld.shift
                after = (new & fld.mask) >> fld.shift
                if fld.edge is Edge.RISING and not (before == 0 and after != 0):
                    continue
                if fld.edge is Edge.FALLING and not (before != 0 and after == 0):
                    continue
                if fld.edge is Edge.CHANGE and before == after:
                    continue
                if hook(ctx, before, after) is False:
                    veto |= fld.mask
            if touches_hw:
                hw = device.read(inst.offset, inst.width)
        writable = masks.rw & bytes_mask & ~veto
        clear = masks.rw1c & wval & ~veto
        if inst.shadow_mask:
            taken = writable & inst.shadow_mask
            inst.shadow = (inst.shadow & ~taken) | (new & taken)
            inst.shadow &= ~(clear & inst.shadow_mask)
        if not space.permissive and inst.permissive_only & (wval ^ old) & bytes_mask:
            space.warn_permissive(inst.reg.name)
        if not touches_hw:
            return
        hw_write = writable & inst.hw_mask
        hw_clear = clear & inst.hw_mask
        hw_zero = masks.rsvdz & bytes_mask & inst.hw_mask
        if not (hw_write | hw_clear | hw_zero):
            return
        out = hw & ~inst.hw_rw1c
        out = (out & ~hw_write) | (new & hw_write) | hw_clear
        out &= ~hw_zero
        changed = hw_write | hw_clear | hw_zero
        byte = 0
        while byte < inst.width:
            if not (changed >> (8 * byte)) & 0xFF:
                byte += 1
                continue
            run = 1
            while byte + run < inst.width and (changed >> (8 * (byte + run))) & 0xFF:
                run += 1
            for piece_start, piece_len in natural_pieces(inst.offset + byte, run):
                rel = piece_start - inst.offset
                chunk = (out >> (8 * rel)) & ((1 << (8 * piece_len)) - 1)
                device.write(piece_start, piece_len, chunk)
            byte += run


# -- twins -----------------------------------------------------------------------------------------
Maker = Callable[[], SimDevice]


class Twins:
    """A fast view and an oracle over two devices built alike, driven in lockstep."""

    def __init__(self, make: Maker, *, permissive: bool, interrupt_control: bool) -> None:
        self.fast_dev, self.slow_dev = make(), make()
        self.fast = build_config_space(self.fast_dev, permissive=permissive)
        slow_space = build_config_space(self.slow_dev, permissive=permissive)
        self.slow = Oracle(slow_space)
        for space in (self.fast, slow_space):
            if interrupt_control:
                allow_interrupt_control(space)

    @staticmethod
    def _outcome(access: Callable[[], object]) -> Outcome:
        try:
            return ("ok", access())
        except PciOpError as exc:
            return ("refused", exc.err, str(exc))

    def read(self, offset: int, size: int) -> None:
        fast = self._outcome(lambda: self.fast.read(offset, size))
        slow = self._outcome(lambda: self.slow.read(offset, size))
        assert fast == slow, f"read {offset:#x}/{size}"

    def write(self, offset: int, size: int, value: int) -> None:
        before = len(self.fast_dev.writes), len(self.slow_dev.writes)
        fast = self._outcome(lambda: self.fast.write(offset, size, value))
        slow = self._outcome(lambda: self.slow.write(offset, size, value))
        where = f"write {offset:#x}/{size} = {value:#x}"
        assert fast == slow, where
        assert self.fast_dev.writes[before[0] :] == self.slow_dev.writes[before[1] :], where
        self.read(offset, size)

    def assert_same_state(self) -> None:
        fast, slow = self.fast, self.slow.space
        assert self.fast_dev.config == self.slow_dev.config
        assert self.fast_dev.power_state == self.slow_dev.power_state
        assert fast.warnings == slow.warnings
        assert export_state(fast) == export_state(slow)
        for offset in range(0, fast.size, 4):
            self.read(offset, 4)


def accesses(size: int) -> Iterator[tuple[int, int]]:
    """Every access of every size, and some that must be refused."""
    for width in (1, 2, 4):
        for offset in range(0, size, width):
            yield offset, width
    yield from ((-4, 4), (size, 1), (size - 2, 4), (0x02, 4), (0x01, 2), (0x00, 3), (0x10, 8))


def drive(twins: Twins, seed: int) -> None:
    rng = random.Random(seed)
    size = twins.fast.size
    for offset, width in accesses(size):
        twins.read(offset, width)
        twins.read(offset, width)  # the second time from the kept plan
    for value in (0xFFFFFFFF, 0x00000000, rng.getrandbits(32)):
        for offset, width in accesses(size):
            twins.write(offset, width, value & ((1 << (8 * width)) - 1))
        twins.assert_same_state()


# -- the devices -----------------------------------------------------------------------------------
def rich() -> bytes:
    """Every described capability, with messages and a latched error (as in test_sweep)."""
    b = endpoint(size=4096, command=0x0406)
    b.pm()
    msi = b.msi(addr64=True, masking=True)
    b.msix()
    b.pcie()
    b.vpd()
    b.vendor_cap()
    aer = b.aer()
    b.ext_cap(EXT_DSN, bytes(range(8)))
    b.poke(msi + 4, 4, 0xFEE00000)
    b.poke(msi + 0x0C, 2, 0x4041)
    b.poke(aer + 4, 4, 0x00100000)
    return b.build()


def bridge() -> bytes:
    b = ConfigBuilder(header_type=1, class_code=0x060400, command=0x0407)
    b.bar(0, 0xFE100000, size=0x1000)
    b.poke(0x1C, 4, 0xF800E0D0)
    b.pm()
    b.msi()
    b.pcie(port_type=4)
    return b.build()


def unknown_header() -> bytes:
    b = ConfigBuilder(header_type=0x7F)
    b.pm()
    return b.build()


def random_device(seed: int) -> bytes:
    rng = random.Random(seed)
    cfg = bytearray(rng.randbytes(256))
    cfg[0x0E] = rng.choice((0x00, 0x01))
    cfg[0x06] |= 0x10
    return bytes(cfg)


def _maker(config: bytes | Path, bar_sizes: dict[int, int] | None = None) -> Maker:
    return lambda: SimDevice(ADDRESS, config, bar_sizes=bar_sizes)


DEVICES: list[tuple[str, Maker]] = [
    ("rich", _maker(rich(), {0: 0x4000})),
    ("bridge", _maker(bridge(), {0: 0x1000})),
    ("unknown-header", _maker(unknown_header())),
    *((f"random-{seed}", _maker(random_device(seed))) for seed in range(3)),
    *((path.name, _maker(path)) for path in fixture_files()),
]


@pytest.mark.parametrize("make", [m for _, m in DEVICES], ids=[name for name, _ in DEVICES])
@pytest.mark.parametrize(
    ("permissive", "interrupt_control"), [(False, False), (True, True)], ids=["strict", "loose"]
)
def test_planned_accesses_match_the_splitter(
    make: Maker, permissive: bool, interrupt_control: bool
) -> None:
    twins = Twins(make, permissive=permissive, interrupt_control=interrupt_control)
    drive(twins, seed=len(twins.fast.registers))


def test_permissive_changed_after_a_plan_is_kept() -> None:
    """A kept plan that writes a gap asks for permissive mode when it runs, not when planned."""
    twins = Twins(_maker(rich(), {0: 0x4000}), permissive=False, interrupt_control=False)
    vendor = twins.fast.capability_offset(VIRTIO_PCI_CAP.id)  # the vendor-specific ID
    assert vendor is not None
    # a chain link and an undescribed body (the header's reserved bytes are described)
    for offset in (vendor,):
        assert isinstance(twins.fast.slot_at(offset + 3), Gap)
        for on in (False, True, False, True):
            twins.fast.settings.permissive = twins.slow.space.settings.permissive = on
            twins.write(offset, 4, 0x12345678 + on)
    assert twins.fast_dev.writes  # permissive mode did reach the device
    twins.assert_same_state()


def test_a_restored_shadow_shows_through_a_kept_plan() -> None:
    dev = SimDevice(ADDRESS, rich(), bar_sizes={0: 0x4000})
    space = build_config_space(dev)
    command = COMMON_HEADER.COMMAND.offset  # a byte of it, and the dword with status
    parity = COMMON_HEADER.COMMAND.PARITY_RESPONSE.mask  # a shadow bit
    space.write(command, 1, space.read(command, 1) | parity)
    saved = export_state(space)
    space.write(command, 1, space.read(command, 1) & ~parity)
    assert not space.read(command, 1) & parity and not space.read(command, 4) & parity
    assert import_state(space, saved) == []
    assert space.read(command, 1) & parity and space.read(command, 4) & parity


def test_a_kept_plan_reads_through_whatever_answers_the_device_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plans hold the view, not the device's read method: swapping it (as a test of op
    rewriting does) is seen by register and gap reads alike."""
    dev = SimDevice(ADDRESS, rich(), bar_sizes={0: 0x4000})
    space = build_config_space(dev)
    vendor = space.capability_offset(
        VIRTIO_PCI_CAP.id
    )  # a chain link, then a body no table describes
    assert vendor is not None and isinstance(space.slot_at(vendor + 2), Gap)
    command = COMMON_HEADER.COMMAND.offset  # and status, in one dword
    first = space.read(command, 4), space.read(vendor, 4)  # both plans kept from here on
    seen: list[tuple[int, int]] = []
    real = dev.read

    def spy(offset: int, size: int) -> int:
        seen.append((offset, size))
        return real(offset, size)

    monkeypatch.setattr(dev, "read", spy)
    assert (space.read(command, 4), space.read(vendor, 4)) == first
    # Command and status come from one read of the dword (coalesced), the gap from its own.
    assert seen == [(command, 4), (vendor + 2, 2)]
