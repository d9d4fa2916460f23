"""The per-lane equalization controls of Secondary PCIe (from +0x0C, 16 bits a lane) and of the
Physical Layer 16.0 and 32.0 GT/s capabilities (from +0x20, a byte a lane): one entry per lane
of the PCIe capability's Maximum Link Width, every one the host's in every mode.

No QEMU dump carries these capabilities (../shared/fixtures/qemu/MANIFEST.md), so each test
patches a real dump's bytes: the three capabilities are appended to its extended list (at
0x180, 0x1d0 and 0x210, which are zero in every dump used here) behind its last one. The link
widths are the dumps' own: QEMU's pcie-root-port reports x32, its e1000e x1, its xio3130
downstream port 0 (reserved), and its root-complex-integrated e1000e has a version-1 PCIe
capability without link registers; other widths patch the root port's link capabilities.
Offsets and masks are the specification's (PCIe 6.0 7.7.3.4, 7.7.5.9, 7.7.6.9), written here
independently of dsl/.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pciback.engine import ConfigSpace
from pciback.engine.registers import RegisterInstance
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

from .test_physical_reads import dump_named

ROOT_PORT = "pcie-root-port-1b36-000c"  # PCIe v2 root port, 16 GT/s x32
ENDPOINT = "e1000e-8086-10d3.bin"  # PCIe v1 endpoint, x1
NO_WIDTH = "xio3130-downstream-104c-8233"  # PCIe v2 switch downstream port, width 0
RCIEP = "e1000e-8086-10d3-rciep"  # PCIe v1 integrated endpoint: no link registers


@dataclass(frozen=True)
class Lanes:
    name: str
    ident: int
    at: int  # where the capability is put
    first: int  # the first entry's offset in it
    entry: int  # bytes an entry
    fixed: int  # bytes before the entries
    cached: int  # an entry's bits fixed at seize (the downstream port's presets)
    live: int  # an entry's bits read from the device every time (the upstream port's)


LANES = [
    Lanes("secpcie", 0x0019, 0x180, 0x0C, 2, 0x0C, cached=0x007F, live=0x7F00),
    Lanes("pl16", 0x0026, 0x1D0, 0x20, 1, 0x20, cached=0x0F, live=0xF0),
    Lanes("pl32", 0x002A, 0x210, 0x20, 1, 0x20, cached=0x0F, live=0xF0),
]
IDS = [lanes.name for lanes in LANES]


def patched(dump: str, width: int | None = None) -> SimDevice:
    """The dump with the three capabilities behind its last extended one, every entry byte
    0xFF (reserved bits set, to be read as 0) and, unless None, its link width patched."""
    config = bytearray(SimDevice("0000:03:00.0", dump_named(dump)).initial)
    last = 0x100
    while (nxt := int.from_bytes(config[last : last + 4], "little") >> 20) != 0:
        last = nxt
    config[last + 2 : last + 4] = (
        (int.from_bytes(config[last + 2 : last + 4], "little") & 0x000F) | LANES[0].at << 4
    ).to_bytes(2, "little")
    for lanes, following in zip(LANES, [*LANES[1:], None], strict=True):
        nxt = following.at if following else 0
        header = lanes.ident | 1 << 16 | nxt << 20
        config[lanes.at : lanes.at + 4] = header.to_bytes(4, "little")
        end = following.at if following else lanes.at + 0x40
        config[lanes.at + 4 : end] = b"\xff" * (end - lanes.at - 4)
    if width is not None:
        pcie = _pcie(config)
        linkcap = int.from_bytes(config[pcie + 0x0C : pcie + 0x10], "little")
        linkcap = (linkcap & ~0x3F0) | width << 4
        config[pcie + 0x0C : pcie + 0x10] = linkcap.to_bytes(4, "little")
    return SimDevice("0000:03:00.0", bytes(config))


def _pcie(config: bytearray) -> int:
    pos = config[0x34]
    while config[pos] != 0x10:
        pos = config[pos + 1]
    return pos


def entries(view: ConfigSpace, lanes: Lanes) -> list[str]:
    """The entries described, each checked to stand at its lane's offset."""
    names = []
    lane = 0
    while isinstance(
        slot := view.slot_at(lanes.at + lanes.first + lane * lanes.entry), RegisterInstance
    ):
        assert (
            slot.block == lanes.name and slot.offset == lanes.at + lanes.first + lane * lanes.entry
        )
        if not slot.reg.name.startswith("lane_equalization"):
            break
        names.append(slot.reg.name)
        lane += 1
    return names


@pytest.mark.parametrize("lanes", LANES, ids=IDS)
@pytest.mark.parametrize(
    ("dump", "width", "count"),
    [
        (ROOT_PORT, None, 32),  # the dump's own x32
        (ENDPOINT, None, 1),  # the dump's own x1
        (ROOT_PORT, 8, 8),
        (ROOT_PORT, 12, 12),
        (ROOT_PORT, 16, 16),
        (ROOT_PORT, 63, 32),  # reserved beyond x32: read as the widest link there is
        (NO_WIDTH, None, 0),  # the dump's own width 0 (reserved): no link, no lanes
        (RCIEP, None, 0),  # no link registers at all
    ],
    ids=["x32", "x1", "x8", "x12", "x16", "x63 read as x32", "width 0", "no link registers"],
)
def test_one_entry_per_lane_of_the_maximum_link_width(
    lanes: Lanes, dump: str, width: int | None, count: int
) -> None:
    view = build_config_space(patched(dump, width))
    assert entries(view, lanes) == [f"lane_equalization{i}" for i in range(count)]
    fixed = view.slot_at(lanes.at + lanes.fixed - 4)
    assert isinstance(fixed, RegisterInstance)  # the registers before the entries stand
    after = lanes.at + lanes.first + count * lanes.entry
    assert not isinstance(view.slot_at(after), RegisterInstance)  # nothing past the last lane
    assert not [p for p in view.problems if lanes.name in p]


@pytest.mark.parametrize("lanes", LANES, ids=IDS)
def test_a_hidden_pcie_capability_still_gives_the_width(lanes: Lanes) -> None:
    view = build_config_space(patched(ROOT_PORT), hide=[0x10])
    assert view.capability_offset(0x10) is None
    assert len(entries(view, lanes)) == 32


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("lanes", LANES, ids=IDS)
def test_no_guest_write_reaches_an_entry(lanes: Lanes, permissive: bool) -> None:
    sim = patched(ROOT_PORT)
    view = build_config_space(sim, permissive=permissive)
    before = bytes(sim.config)
    start, end = lanes.at + lanes.first, lanes.at + lanes.first + 32 * lanes.entry
    for size in (1, 2, 4):
        for offset in range(start, end, size):
            for value in (0, (1 << (8 * size)) - 1, 0x5A5A5A5A & ((1 << (8 * size)) - 1)):
                view.write(offset, size, value)
    assert sim.writes == []
    assert bytes(sim.config) == before


@pytest.mark.parametrize("lanes", LANES, ids=IDS)
def test_the_downstream_presets_are_read_once_the_upstream_ones_live(lanes: Lanes) -> None:
    sim = patched(ROOT_PORT)
    view = build_config_space(sim)
    size = lanes.entry
    for lane in (0, 17, 31):
        at = lanes.at + lanes.first + lane * size
        # every bit set on the device: the reserved ones read 0
        assert view.read(at, size) == lanes.cached | lanes.live
        sim.config[at : at + size] = bytes(size)  # the device's presets change
        assert view.read(at, size) == lanes.cached  # the upstream port's follow it
