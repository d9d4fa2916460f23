"""HyperTransport (ID 0x08) on real hardware: an AMD RD890 host bridge (an MSI mapping with a
fixed address, a slave link, retry mode, unit ID clumping, a Gen3 capability) and an AMD
Family 15h processor's function 0 (four host links), from pciutils' test data
(tests/fixtures/pciutils/README.md).

The type of each capability is decoded here the HyperTransport specification's way (3.10,
7.3: the command's top three bits for the link configurations, its top five for the others),
with the bits the policy names, and checked against what the hardware is; what dsl/ht.pci
describes for each type is then held to the dump.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.dumps import load_config
from pciback.engine import ConfigSpace
from pciback.engine.chain import STD_END, walk
from pciback.engine.space import HostOwned
from pciback.generated.names import HT, MSI
from pciback.sim.device import SimDevice

from .builders import PCIUTILS, aligned_accesses, dump_view

RD890 = PCIUTILS / "amd-rd890-1002-5a13-ht.lspci.txt"
FAM15H = PCIUTILS / "amd-fam15h-1022-1600-ht.lspci.txt"
COMMAND = HT.COMMAND

# The specification's types (as Linux pci_regs.h's HT_CAPTYPE_* give them, shifted down to the
# type's bits): two link configurations by three bits, the others by five.
LINK_TYPES = {0b000: "slave", 0b001: "host"}
OTHER_TYPES = {
    0b10010: "unit_id_clumping",
    0b10101: "msi_mapping",
    0b11000: "retry_mode",
    0b11010: "gen3",
}
MAPPING_FIXED = 1 << 1  # an MSI mapping's command, bit 1: the address is 0xFEE00000, no registers
MAPPING_ENABLE = 1 << 0

# Each function's HyperTransport capabilities in the order of its list, as the hardware has them.
KINDS = {
    RD890: ["msi_mapping", "slave", "retry_mode", "unit_id_clumping", "gen3"],
    FAM15H: ["host"] * 4,
}
DUMPS = list(KINDS)
IDS = [p.name.removesuffix(".lspci.txt") for p in DUMPS]

# What dsl/ht.pci describes past the command, by type: the link configurations as dwords, an MSI
# mapping's address unless it is fixed, nothing else.
BODIES: dict[str, list[tuple[int, str]]] = {
    "slave": [
        (HT.SLAVE_LINK0.offset, "slave_link0"),
        (HT.SLAVE_LINK1.offset, "slave_link1"),
        (HT.SLAVE_LINK2.offset, "slave_link2"),
        (HT.SLAVE_LINK3.offset, "slave_link3"),
        (HT.SLAVE_LINK4.offset, "slave_link4"),
        (HT.SLAVE_LINK5.offset, "slave_link5"),
    ],
    "host": [
        (HT.HOST_LINK0.offset, "host_link0"),
        (HT.HOST_LINK1.offset, "host_link1"),
        (HT.HOST_LINK2.offset, "host_link2"),
        (HT.HOST_LINK3.offset, "host_link3"),
        (HT.HOST_LINK4.offset, "host_link4"),
    ],
}


def view_of(path: Path, *, permissive: bool = False) -> tuple[ConfigSpace, SimDevice]:
    return dump_view(path, permissive=permissive)


def kind(command: int) -> str:
    three = COMMAND.TYPE.get(command)
    five = three << COMMAND.TYPE_LOW.width | COMMAND.TYPE_LOW.get(command)
    return LINK_TYPES.get(three) or OTHER_TYPES.get(five, f"{five:#07b}")


def ht_capabilities(sim: SimDevice) -> list[int]:
    """The offsets of the function's HyperTransport capabilities, in list order."""
    return [c.offset for c in walk(sim.read, sim.config_size).standard if c.ident == HT.id]


def extents(sim: SimDevice) -> dict[int, int]:
    """Each HyperTransport capability's offset and where its bytes end: the next capability in
    config space, or the end of the standard space (dsl/ht.pci gives no length)."""
    starts = sorted(c.offset for c in walk(sim.read, sim.config_size).standard)
    ends = dict(zip(starts, [*starts[1:], STD_END], strict=True))
    return {pos: ends[pos] for pos in ht_capabilities(sim)}


def described(view: ConfigSpace, pos: int) -> list[tuple[int, str]]:
    return sorted(
        (r.offset - pos, r.reg.name)
        for r in view.registers
        if r.block == "ht" and r.block_base == pos
    )


@pytest.mark.parametrize(
    ("path", "address", "ids"),
    [(RD890, "0000:00:00.0", [HT.id] * 5 + [MSI.id]), (FAM15H, "0000:00:18.0", [HT.id] * 4)],
    ids=IDS,
)
def test_the_dump_loads_as_the_function_with_its_list(
    path: Path, address: str, ids: list[int]
) -> None:
    dump = load_config(path)
    assert (dump.address, len(dump.config)) == (address, 256)
    chains = walk(SimDevice(address, dump.config).read, len(dump.config))
    assert [c.ident for c in chains.standard] == ids
    assert not chains.extended and not chains.problems


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", DUMPS, ids=IDS)
def test_the_view_builds_without_problems(path: Path, permissive: bool) -> None:
    view, sim = view_of(path, permissive=permissive)
    assert view.problems == [] and view.warnings == []
    assert sim.history == []  # seizing wrote nothing
    # every capability stays in the guest's list, where the device has it
    guest, device = walk(view.read, view.size), walk(sim.read, sim.config_size)
    assert guest.standard == device.standard and not guest.problems


@pytest.mark.parametrize("path", DUMPS, ids=IDS)
def test_each_capability_is_of_the_type_the_hardware_has(path: Path) -> None:
    _, sim = view_of(path)
    commands = [sim.read(pos + COMMAND.offset, COMMAND.width) for pos in ht_capabilities(sim)]
    assert [kind(c) for c in commands] == KINDS[path]


def test_the_rd890s_msi_mapping_is_enabled_at_a_fixed_address() -> None:
    _, sim = view_of(RD890)
    pos = ht_capabilities(sim)[KINDS[RD890].index("msi_mapping")]
    control = COMMAND.CONTROL.get(sim.read(pos + COMMAND.offset, COMMAND.width))
    assert control & MAPPING_FIXED and control & MAPPING_ENABLE


@pytest.mark.parametrize("path", DUMPS, ids=IDS)
def test_each_type_has_the_registers_dsl_ht_gives_it(path: Path) -> None:
    # The fixed MSI mapping has no address registers (msi_address_lo and _hi absent); retry
    # mode, unit ID clumping and Gen3 have no table past the command.
    view, sim = view_of(path)
    for pos, what in zip(ht_capabilities(sim), KINDS[path], strict=True):
        expect = [(COMMAND.offset, "command"), *BODIES.get(what, [])]
        assert described(view, pos) == expect, f"{what} at {pos:#x}"


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", DUMPS, ids=IDS)
def test_every_byte_reads_as_the_device_has_it(path: Path, permissive: bool) -> None:
    view, sim = view_of(path, permissive=permissive)
    for pos, end in extents(sim).items():
        for off, size in aligned_accesses(pos, end):
            assert view.read(off, size) == sim.read(off, size), f"{off:#x}/{size}"


def _write_everything(view: ConfigSpace, start: int, stop: int) -> None:
    for off, size in aligned_accesses(start, stop):
        ones = (1 << 8 * size) - 1
        for value in (0, ones, ~view.read(off, size) & ones):
            view.write(off, size, value)


@pytest.mark.parametrize("permissive", [False, True], ids=["normal", "permissive"])
@pytest.mark.parametrize("path", DUMPS, ids=IDS)
def test_no_guest_write_to_any_hypertransport_byte_reaches_the_device(
    path: Path, permissive: bool
) -> None:
    # The link, the command, the link configurations, and up to the next capability the rest
    # of every type's body: the host's fabric, in every mode.
    view, sim = view_of(path, permissive=permissive)
    before = bytes(sim.config)
    for pos, end in extents(sim).items():
        seen = [view.read(off, 1) for off in range(pos, end)]
        _write_everything(view, pos, end)
        assert [view.read(off, 1) for off in range(pos, end)] == seen
    assert sim.writes == [] and sim.history == []
    assert bytes(sim.config) == before


@pytest.mark.parametrize("path", DUMPS, ids=IDS)
def test_the_bytes_past_the_registers_are_the_hosts(path: Path) -> None:
    # The bodies of the types dsl/ht.pci gives no registers (here retry mode, unit ID clumping,
    # Gen3 and the fixed MSI mapping), and whatever follows a link configuration up to the
    # next capability, configure the host's fabric (`rest ro`): read from the device, never
    # written (the test above), in permissive mode too.
    view, sim = view_of(path, permissive=True)
    rest: set[int] = set()
    for pos, end in extents(sim).items():
        last = max(r.end for r in view.registers if r.block == "ht" and r.block_base == pos)
        for off in range(last, end):
            slot = view.slot_at(off)
            assert type(slot) is HostOwned, f"{off:#x}: {slot}"
        rest.update(range(last, end))
        assert [view.read(off, 1) for off in range(last, end)] == list(sim.config[last:end])
    assert rest  # both functions have such bytes
