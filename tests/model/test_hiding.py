"""Hidden capabilities: unlinked from the chain and unreachable by offset, standard and
extended, whether the operator, the policy or a failed seize check hid them."""

from __future__ import annotations

import pytest

from pciback.engine import Policy
from pciback.engine.chain import (
    CAP_NEXT,
    EXT_END,
    EXT_ID,
    EXT_LINK,
    EXT_NEXT,
    EXT_START,
    EXT_VERSION,
    STD_END,
    STD_LINK,
)
from pciback.generated import MODULES
from pciback.generated.names import COMMON_HEADER, DSN, MSI, MSIX, PCIE, PM, SRIOV, TYPE0
from pciback.policy import build_config_space, installed_hooks
from pciback.tables import Block, BlockKind, PolicyModule

from .builders import (
    CAP_MSI,
    CAP_MSIX,
    CAP_PCIE,
    CAP_PM,
    CAP_VENDOR,
    EXT_AER,
    EXT_DSN,
    EXT_SRIOV,
    ConfigBuilder,
    chain,
    endpoint,
    ext_chain,
)


def rich() -> tuple[ConfigBuilder, dict[int, int], dict[int, int]]:
    b = endpoint(size=4096)
    std = {CAP_PM: b.pm(), CAP_MSI: b.msi(addr64=True), CAP_MSIX: b.msix(), CAP_PCIE: b.pcie()}
    std[CAP_VENDOR] = b.vendor_cap()
    ext = {EXT_AER: b.aer(), EXT_DSN: b.ext_cap(EXT_DSN, bytes(8))}
    ext[EXT_SRIOV] = b.ext_cap(EXT_SRIOV, bytes(0x3C))
    return b, std, ext


STATUS, POINTER = COMMON_HEADER.STATUS, TYPE0.CAPABILITIES_POINTER
CAPABILITIES_LIST = STATUS.CAPABILITIES_LIST.mask
# the lengths of the capabilities rich() builds: a 64-bit MSI without masking, PCIe version 2
LENGTHS = {
    CAP_PM: PM.length,
    CAP_MSI: MSI.length(control_addr64=1, control_ext_data_capable=0, control_per_vector_masking=0),
    CAP_MSIX: MSIX.length,
    CAP_PCIE: PCIE.length(caps_port_type=0, caps_version=2),
}
EXT_LENGTHS = {EXT_DSN: DSN.length, EXT_SRIOV: SRIOV.length}


@pytest.mark.parametrize("hidden", [CAP_PM, CAP_MSI, CAP_PCIE, CAP_VENDOR])
def test_a_hidden_capability_is_skipped_by_the_chain(hidden: int) -> None:
    b, std, _ = rich()
    space, _ = b.space(hide=[hidden])
    expected = [(off, ident) for ident, off in sorted(std.items(), key=lambda i: i[1])]
    assert chain(space) == [e for e in expected if e[1] != hidden]
    assert space.capability_offset(hidden) is None
    assert space.read(STATUS.offset, STATUS.width) & CAPABILITIES_LIST


@pytest.mark.parametrize("permissive", [False, True])
@pytest.mark.parametrize("hidden", [CAP_PM, CAP_MSI, CAP_MSIX, CAP_PCIE, CAP_VENDOR])
def test_a_hidden_capability_is_unreachable_by_offset(hidden: int, permissive: bool) -> None:
    b, std, _ = rich()
    space, dev = b.space(hide=[hidden], permissive=permissive)
    start = std[hidden]
    # a capability the policy describes ends at its length; any other at the next one
    following = min([o for o in std.values() if o > start] + [STD_END])
    end = start + LENGTHS[hidden] if hidden in LENGTHS else following
    for off in range(start, end):
        assert space.read(off, 1) == 0
    for off in range(start, end & ~1, 2):
        assert space.read(off, 2) == 0
        space.write(off, 2, 0xFFFF)
        space.write(off, 2, 0x0000)
    assert [w for w in dev.writes if start <= w[0] < end] == []


def test_hiding_the_first_capability_moves_the_pointer() -> None:
    b, std, _ = rich()
    space, _ = b.space(hide=[CAP_PM])
    assert space.read(POINTER.offset, POINTER.width) == std[CAP_MSI]


def test_hiding_every_capability_clears_the_list_bit() -> None:
    b, std, _ = rich()
    space, dev = b.space(hide=list(std))
    assert space.read(POINTER.offset, POINTER.width) == 0
    assert not space.read(STATUS.offset, STATUS.width) & CAPABILITIES_LIST
    assert dev.read(STATUS.offset, STATUS.width) & CAPABILITIES_LIST  # the device is untouched
    assert chain(space) == []


def test_the_device_keeps_its_real_chain() -> None:
    b, std, _ = rich()
    space, dev = b.space(hide=[CAP_MSI, CAP_VENDOR])
    space.write(POINTER.offset, POINTER.width, 0)
    for off in std.values():
        space.write(off, 2, 0)
    assert dev.writes == []
    assert dev.read(POINTER.offset, POINTER.width) == std[CAP_PM]
    assert dev.read(std[CAP_PM] + CAP_NEXT, 1) == std[CAP_MSI]


def test_hiding_every_capability_of_an_id_hides_all_of_them() -> None:
    b = endpoint()
    first = b.vendor_cap()
    pm = b.pm()
    b.vendor_cap()
    space, _ = b.space(hide=[CAP_VENDOR])
    assert chain(space) == [(pm, CAP_PM)]
    assert space.read(POINTER.offset, POINTER.width) == pm and space.read(first, 4) == 0


@pytest.mark.parametrize("hidden", [EXT_AER, EXT_DSN, EXT_SRIOV])
def test_a_hidden_extended_capability_is_skipped_and_blocked(hidden: int) -> None:
    b, _, ext = rich()
    space, dev = b.space(hide_extended=[hidden], permissive=True)
    expected = [(off, ident) for ident, off in sorted(ext.items(), key=lambda i: i[1])]
    assert ext_chain(space) == [e for e in expected if e[1] != hidden]
    start = ext[hidden]
    # as above: a capability the policy describes ends at its length; any other at the next one
    following = min([o for o in ext.values() if o > start] + [EXT_END])
    end = start + EXT_LENGTHS[hidden] if hidden in EXT_LENGTHS else following
    if start != EXT_START:
        assert all(space.read(off, 4) == 0 for off in range(start, end, 4))
    for off in range(start, end, 4):
        space.write(off, 4, 0xFFFFFFFF)
    assert [w for w in dev.writes if start <= w[0] < end] == []
    assert space.extended_capability_offset(hidden) is None


def test_a_hidden_head_leaves_a_null_header_that_links_on() -> None:
    b, _, ext = rich()
    space, _ = b.space(hide_extended=[EXT_AER])
    head = space.read(EXT_START, EXT_LINK)
    assert head & (EXT_ID.mask | EXT_VERSION.mask) == 0  # no ID, no version
    assert EXT_NEXT.get(head) == ext[EXT_DSN]
    assert all(space.read(off, 4) == 0 for off in range(EXT_START + EXT_LINK, ext[EXT_DSN], 4))


def test_hiding_every_extended_capability_empties_0x100() -> None:
    b, _, ext = rich()
    space, _ = b.space(hide_extended=list(ext))
    assert space.read(EXT_START, EXT_LINK) == 0 and ext_chain(space) == []


def test_a_policy_can_hide_a_capability_for_every_device() -> None:
    hide_vendor = Block(
        kind=BlockKind.CAPABILITY,
        name="vendor",
        ident=CAP_VENDOR,
        registers=(),
        source="test",
        hidden=True,
        policy_reason="vendor registers may hide anything",
    )
    policy = Policy.from_modules(
        [*MODULES, PolicyModule("test", "", (hide_vendor,))], installed_hooks()
    )
    b, std, _ = rich()
    dev = b.sim()
    space = build_config_space(dev, policy=policy)
    assert CAP_VENDOR not in [i for _, i in chain(space)]
    assert space.read(std[CAP_VENDOR] + STD_LINK, 2) == 0  # the body after the link
