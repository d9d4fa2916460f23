"""Bits of a write's value above its size change nothing: a write plan cuts the value to the
bytes each slot takes (ConfigSpace.write hands it over uncut), as the access splitter did.

The fast-path twins (test_fast_paths) give every write its size's bits only; here a view given
the same writes with garbage above them must end where a view given the cut values ends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pciback.engine.snapshot import export_state
from pciback.errors import PciOpError
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice
from tests.model.builders import ADDRESS, fixture_files

# Put just above an access: every bit (a BAR byte written 0xFF must not become a sizing write),
# and a bit in every byte of a dword.
GARBAGE = (0xFFFF_FFFF, 0xA5C3_3C5A)


def outcome(write: Callable[[int, int, int], None], *access: int) -> tuple[object, ...]:
    try:
        write(*access)
        return ("ok",)
    except PciOpError as exc:  # a hook's refusal, the same for both
        return ("refused", exc.err, str(exc))


def accesses(size: int) -> list[tuple[int, int]]:
    return [(o, w) for w in (1, 2, 4) for o in range(0, size, w)]


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: Path(p).stem)
def test_bits_above_a_writes_size_change_nothing(path: Path, permissive: bool) -> None:
    cut_dev, wide_dev = SimDevice(ADDRESS, path), SimDevice(ADDRESS, path)
    cut = build_config_space(cut_dev, permissive=permissive)
    wide = build_config_space(wide_dev, permissive=permissive)
    for value, garbage in [(v, g) for v in (0xFFFFFFFF, 0x00000000, 0x5A5A5A5A) for g in GARBAGE]:
        for offset, width in accesses(cut.size):
            data = value & ((1 << (8 * width)) - 1)
            where = f"write {offset:#x}/{width} = {data:#x}"
            done = outcome(cut.write, offset, width, data)
            assert outcome(wide.write, offset, width, data | garbage << 8 * width) == done, where
            assert wide_dev.writes == cut_dev.writes, where
            assert wide.read(offset, width) == cut.read(offset, width), where
    assert wide_dev.config == cut_dev.config
    assert wide.warnings == cut.warnings
    assert export_state(wide) == export_state(cut)
