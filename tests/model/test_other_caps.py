"""Standard capabilities without a table: readable, written only in permissive mode, as Linux."""

from __future__ import annotations

import pytest

from pciback.engine.chain import CAP_NEXT

from .builders import CAP_PM, chain, endpoint

# CompactPCI hot swap, vendor-specific, an unknown ID
OTHER_IDS = [0x06, 0x09, 0x30]


@pytest.mark.parametrize("ident", OTHER_IDS)
def test_an_undescribed_capability_reads_from_the_device(ident: int) -> None:
    b = endpoint()
    pm = b.pm()
    pos = b.cap(ident, bytes(range(2, 16)))
    space, dev = b.space()
    assert chain(space) == [(pm, CAP_PM), (pos, ident)]
    assert space.read(pos + 4, 4) == dev.read(pos + 4, 4) == 0x07060504
    space.write(pos + 4, 4, 0)
    assert dev.writes == [] and len(space.warnings) == 1


@pytest.mark.parametrize("ident", OTHER_IDS)
def test_an_undescribed_capability_is_written_in_permissive_mode(ident: int) -> None:
    b = endpoint()
    b.pm()
    pos = b.cap(ident, bytes(14))
    space, dev = b.space(permissive=True)
    space.write(pos + 4, 4, 0xA5A5A5A5)
    space.write(pos, 4, 0xFFFFFFFF)  # the ID and next pointer stay the backend's
    assert dev.writes == [(pos + 4, 4, 0xA5A5A5A5), (pos + 2, 2, 0xFFFF)]
    assert space.read(pos, 1) == ident and space.read(pos + CAP_NEXT, 1) == 0
