"""The simulated device latches a write as hardware does, on every real dump: a word or a dword
lands as its bytes would one by one (byte enables), read-only bits keep their value, and a 1
written to a status bit that clears on a 1 clears it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pciback.engine.chain import STD_START
from pciback.generated.names import COMMON_HEADER
from pciback.sim.device import SimDevice

from ..audit.support import qemu_dumps
from .builders import ADDRESS, fixture_files

DUMPS = fixture_files() + qemu_dumps()
pytestmark = pytest.mark.skipif(not DUMPS, reason="../shared/fixtures is absent")
H = COMMON_HEADER
STATUS = H.STATUS
CLEARED_BY_ONE = (
    STATUS.MASTER_DATA_PARITY_ERROR,
    STATUS.SIGNALED_TARGET_ABORT,
    STATUS.RECEIVED_TARGET_ABORT,
    STATUS.RECEIVED_MASTER_ABORT,
    STATUS.SIGNALED_SYSTEM_ERROR,
    STATUS.DETECTED_PARITY_ERROR,
)
RW1C = sum(f.mask for f in CLEARED_BY_ONE)


@pytest.mark.parametrize("path", DUMPS, ids=[f"{p.parent.name}/{p.name}" for p in DUMPS])
def test_an_access_lands_as_its_bytes_one_by_one(path: Path) -> None:
    whole, by_byte = SimDevice(ADDRESS, path), SimDevice(ADDRESS, path)
    rng = random.Random(path.name)
    for _ in range(400):
        size = rng.choice((1, 2, 4))
        # Most writes in the header, where the read-only and clear-on-one bits are.
        top = STD_START if rng.random() < 0.7 else whole.config_size
        offset = rng.randrange(0, top - size + 1) // size * size
        value = rng.getrandbits(8 * size)
        whole.write(offset, size, value)
        for i in range(size):
            by_byte.write(offset + i, 1, (value >> (8 * i)) & 0xFF)
        assert whole.config == by_byte.config, f"write {value:#x} at {offset:#x}/{size}"


@pytest.mark.parametrize("path", DUMPS, ids=[f"{p.parent.name}/{p.name}" for p in DUMPS])
def test_status_bits_clear_on_one_and_the_ids_never_change(path: Path) -> None:
    dev = SimDevice(ADDRESS, path)
    ids = dev.read(H.VENDOR_ID.offset, 4)
    # Every clear-on-one bit set, as a device that saw every error would show them.
    dev.config[STATUS.offset : STATUS.offset + STATUS.width] = (
        dev.read(STATUS.offset, STATUS.width) | RW1C
    ).to_bytes(STATUS.width, "little")
    status = dev.read(STATUS.offset, STATUS.width)
    command = dev.read(H.COMMAND.offset, H.COMMAND.width)
    # A dword over command and status: the command as it was, a 1 to one error bit only.
    one = STATUS.RECEIVED_MASTER_ABORT.mask
    dev.write(H.COMMAND.offset, 4, command | one << 8 * STATUS.offset - 8 * H.COMMAND.offset)
    assert dev.read(STATUS.offset, STATUS.width) == status & ~one
    assert dev.read(H.COMMAND.offset, H.COMMAND.width) == command
    # Ones everywhere else: the other error bits clear, the read-only bits stay.
    dev.write(STATUS.offset, STATUS.width, 0xFFFF)
    assert dev.read(STATUS.offset, STATUS.width) == status & ~RW1C
    dev.write(H.VENDOR_ID.offset, 4, 0)
    assert dev.read(H.VENDOR_ID.offset, 4) == ids
    # Byte by byte: each byte's own error bits clear, and only those.
    for byte in range(STATUS.width):
        dev.config[STATUS.offset : STATUS.offset + STATUS.width] = status.to_bytes(
            STATUS.width, "little"
        )
        dev.write(STATUS.offset + byte, 1, 0xFF)
        cleared = RW1C & 0xFF << 8 * byte
        assert dev.read(STATUS.offset, STATUS.width) == status & ~cleared


@pytest.mark.parametrize("path", DUMPS[:1], ids=[p.name for p in DUMPS[:1]])
def test_an_access_the_bus_cannot_make_is_refused(path: Path) -> None:
    dev = SimDevice(ADDRESS, path)
    end = dev.config_size
    for offset, size in ((0, 3), (0, 8), (0, 0), (-1, 1), (end - 1, 2), (end - 2, 4), (end, 1)):
        with pytest.raises(ValueError, match="bad config access"):
            dev.read(offset, size)
        with pytest.raises(ValueError, match="bad config access"):
            dev.write(offset, size, 0)
    for width in (1, 2, 4):  # the last access of each size is still made
        assert dev.read(end - width, width) == int.from_bytes(dev.config[end - width :], "little")
    assert not dev.history
