"""A guest view's virtual state as plain data, so that a daemon restart keeps what a guest sees.

Only what the backend invented is saved: shadow register values, hook state (a BAR's sizing
latch, the device-enabled flag), the permissive and interrupt-control settings. Hardware and
cached bits are read again from the device. Loading validates everything: the saved state comes
from disk, and a device may have changed underneath (then the mismatching entries are skipped
and reported, never applied to another register).
"""

from __future__ import annotations

from typing import Any

from pciback.engine.registers import RegisterInstance
from pciback.engine.space import ConfigSpace

VERSION = 1
Scalar = bool | int | str
# Hooks keep a handful of flags per register; anything larger did not come from them.
MAX_HOOK_KEYS = 8
MAX_TEXT = 64


class SnapshotError(ValueError):
    """A saved state that cannot be applied at all (wrong shape or version)."""


def export_state(space: ConfigSpace) -> dict[str, Any]:
    registers: list[dict[str, Any]] = []
    for inst in sorted(space.registers, key=lambda r: r.offset):
        state = {k: v for k, v in inst.state.items() if isinstance(v, bool | int | str)}
        if not inst.shadow_mask and not state:
            continue
        registers.append(
            {"offset": inst.offset, "name": inst.reg.name, "shadow": inst.shadow, "state": state}
        )
    return {
        "version": VERSION,
        "permissive": space.permissive,
        "allow_interrupt_control": space.allow_interrupt_control,
        "registers": registers,
    }


def import_state(space: ConfigSpace, data: object, *, settings: bool = True) -> list[str]:
    """Apply a saved state; returns what had to be skipped (empty when everything applied).
    `settings` False: the record's permissive and interrupt-control flags are checked but not
    adopted, for a view whose settings an operator owns (the daemon's: the stub pool's)."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise SnapshotError("not a pciback view state of version 1")
    entries = data.get("registers")
    if not isinstance(entries, list) or len(entries) > space.size:
        raise SnapshotError("view state: 'registers' must be a list no longer than config space")
    for key in ("permissive", "allow_interrupt_control"):
        if not isinstance(data.get(key), bool):
            raise SnapshotError(f"view state: '{key}' must be true or false")
    skipped: list[str] = []
    by_offset = {inst.offset: inst for inst in space.registers}
    for entry in entries:
        problem = _apply(by_offset, entry)
        if problem:
            skipped.append(problem)
    if settings:
        # The record holds the mode the view applied; a view of its own has no pool-wide one.
        space.settings.permissive = bool(data["permissive"])
        space.settings.interrupt_control = bool(data["allow_interrupt_control"])
    return skipped


def _small_scalar(value: object) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_TEXT
    if isinstance(value, bool):
        return True
    return isinstance(value, int) and -(1 << 64) < value < (1 << 64)


def _apply(by_offset: dict[int, RegisterInstance], entry: object) -> str | None:
    if not isinstance(entry, dict):
        return "an entry that is not a mapping"
    offset, name, shadow, state = (entry.get(k) for k in ("offset", "name", "shadow", "state"))
    if not isinstance(offset, int) or isinstance(offset, bool):
        return "an entry without an integer offset"
    inst = by_offset.get(offset)
    if inst is None or inst.reg.name != name:
        return f"{name!r} at {offset:#x}: the device's layout changed; left as the device has it"
    if not isinstance(shadow, int) or isinstance(shadow, bool) or not isinstance(state, dict):
        return f"{name!r} at {offset:#x}: malformed"
    if len(state) > MAX_HOOK_KEYS or not all(
        isinstance(k, str) and len(k) <= MAX_TEXT and _small_scalar(v) for k, v in state.items()
    ):
        return f"{name!r} at {offset:#x}: malformed hook state"
    inst.shadow = shadow & inst.shadow_mask
    inst.state.update(state)
    return None
