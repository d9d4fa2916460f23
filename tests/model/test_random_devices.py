"""Devices made of random bytes (seeded, so every run sees the same ones): whatever a device
claims, building its view, reading all of it and writing all of it never fails other than with
an op error, and never writes outside the config space."""

from __future__ import annotations

import contextlib
import random

import pytest

from pciback.errors import PciOpError
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

from .builders import ADDRESS, chain, ext_chain


def random_config(rng: random.Random, size: int) -> bytes:
    cfg = bytearray(rng.randbytes(size))
    cfg[0x0E] = rng.choice((0x00, 0x01, 0x80, 0x81))  # the header types with a table
    cfg[0x06] |= 0x10  # a capability list, so that there is something to walk
    if size > 0x100 and rng.random() < 0.5:
        cfg[0x100:0x104] = (0x0001 | 2 << 16 | rng.randrange(0x100, 0x1000) << 20).to_bytes(
            4, "little"
        )
    return bytes(cfg)


@pytest.mark.parametrize("seed", range(64))
def test_a_random_device_never_breaks_the_view(seed: int) -> None:
    rng = random.Random(seed)
    size = 4096 if seed % 3 == 0 else 256
    dev = SimDevice(ADDRESS, random_config(rng, size))
    permissive = seed % 2 == 1
    space = build_config_space(dev, permissive=permissive, hide=[rng.randrange(256)])
    offsets = [o for o, _ in chain(space)]
    assert len(offsets) == len(set(offsets)) <= 48
    ext = [o for o, _ in ext_chain(space)]
    assert len(ext) == len(set(ext))
    for off in range(0, space.size, 4):
        space.read(off, 4)
    step = 4 if size == 256 else 16
    for off in range(0, space.size, step):
        for value in (0xFFFFFFFF, 0, rng.getrandbits(32)):
            width = rng.choice((1, 2, 4))
            with contextlib.suppress(PciOpError):
                space.write(off + rng.randrange(0, 4, width), width, value & ((1 << 8 * width) - 1))
    assert all(o >= 0 and o + n <= size for o, n, _ in dev.writes)
