"""Power Management: PME support hidden, PME enable never taken, D-states through the port."""

from __future__ import annotations

import pytest

from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import PM
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

from .builders import ADDRESS, CAP_PM, CapView, endpoint

PMC, PMCSR, BSE, DATA = PM.PMC.offset, PM.PMCSR.offset, PM.BRIDGE_EXT.offset, PM.DATA.offset
PME_SUPPORT = PM.PMC.PME_SUPPORT.mask
D1, D2 = PM.PMC.D1_SUPPORT.mask, PM.PMC.D2_SUPPORT.mask


def pm_device(pmc: int = 0xF803 | D1 | D2, pmcsr: int = 0x0008) -> CapView:
    b = endpoint()
    pos = b.pm(pmc=pmc, pmcsr=pmcsr)
    space, dev = b.space()
    return space, dev, pos


def test_pme_support_is_hidden_and_the_rest_of_pmc_shown() -> None:
    space, dev, pos = pm_device()
    assert dev.read(pos + PMC, 2) & PME_SUPPORT == PME_SUPPORT
    assert space.read(pos + PMC, 2) == dev.read(pos + PMC, 2) & ~PME_SUPPORT
    assert space.read(pos, 4) >> 16 == dev.read(pos + PMC, 2) & ~PME_SUPPORT


def test_pmc_writes_never_reach_the_device() -> None:
    space, dev, pos = pm_device()
    space.write(pos + PMC, 2, 0xFFFF)
    space.write(pos, 4, 0xFFFFFFFF)  # ID, next and PMC in one access
    assert dev.writes == []
    assert space.read(pos, 1) == CAP_PM


def test_a_d_state_change_goes_through_the_port() -> None:
    space, dev, pos = pm_device()
    space.write(pos + PMCSR, 2, 0x0003)
    assert dev.power_state == 3
    assert space.read(pos + PMCSR, 2) & 3 == 3
    space.write(pos + PMCSR, 2, 0x0000)
    assert dev.power_state == 0 and space.read(pos + PMCSR, 2) & 3 == 0


def test_writing_the_current_state_does_nothing() -> None:
    space, dev, pos = pm_device()
    space.write(pos + PMCSR, 1, 0x00)
    assert dev.writes == [] and dev.power_state == 0


@pytest.mark.parametrize(("state", "pmc"), [(1, 0x0003 | D2), (2, 0x0003 | D1)])
def test_an_unsupported_d_state_is_refused(state: int, pmc: int) -> None:
    space, dev, pos = pm_device(pmc=pmc)
    with pytest.raises(PciOpError) as info:
        space.write(pos + PMCSR, 2, state)
    assert info.value.err is XenPciError.ACCESS_DENIED
    assert dev.power_state == 0 and dev.writes == []


def test_pme_enable_is_never_taken() -> None:
    space, dev, pos = pm_device()
    space.write(pos + PMCSR, 2, 0x0100)
    assert not dev.read(pos + PMCSR, 2) & 0x0100
    assert not space.read(pos + PMCSR, 2) & 0x0100


def test_data_select_reaches_the_device() -> None:
    space, dev, pos = pm_device()
    space.write(pos + PMCSR, 2, 0x1E00)
    assert (dev.read(pos + PMCSR, 2) >> 9) & 0xF == 0xF


def test_pme_status_is_write_one_to_clear_and_never_echoed() -> None:
    space, dev, pos = pm_device(pmcsr=0x8008)  # a PME is pending
    space.write(pos + PMCSR, 2, 0x0200)  # data select 1, PME status written 0
    assert dev.writes[-1] == (pos + PMCSR + 1, 1, 0x02)  # the pending 1 is not written back
    space.write(pos + PMCSR, 2, 0x8000)  # acknowledging writes the 1
    assert dev.writes[-1] == (pos + PMCSR + 1, 1, 0x80)


def test_bridge_extensions_and_data_are_read_only() -> None:
    space, dev, pos = pm_device()
    dev.config[pos + DATA] = 0x5A
    dev.config[pos + BSE] = 0xC5
    space.write(pos + BSE, 2, 0xFFFF)
    assert dev.writes == []
    assert space.read(pos + DATA, 1) == 0x5A
    assert space.read(pos + BSE, 1) == 0xC5  # the whole byte is the device's, as Linux reads it


def test_permissive_mode_does_not_open_pme() -> None:
    b = endpoint()
    pos = b.pm()
    space, dev = b.space(permissive=True)
    space.write(pos + PMCSR, 2, 0x0100)
    space.write(pos + PMC, 2, 0xFFFF)
    assert not dev.read(pos + PMCSR, 2) & 0x0100
    assert all(off not in (pos + PMC, pos + PMC + 1) for off, _, _ in dev.writes)


@pytest.mark.parametrize("hidden", [False, True])
def test_pme_enable_is_turned_off_when_the_view_is_built(hidden: bool) -> None:
    b = endpoint()
    pos = b.pm(pmcsr=0x8108)  # PME enabled, a PME pending
    space, dev = b.space(hide=[CAP_PM] if hidden else [])
    assert dev.writes == [(pos + PMCSR, 2, 0x0008)]  # enable off; the pending 1 not written
    assert not dev.read(pos + PMCSR, 2) & 0x0100
    if not hidden:
        assert space.read(pos + PMCSR, 2) & 0x0100 == 0


def test_a_device_without_pme_enabled_is_not_written_at_seize() -> None:
    _, dev, _ = pm_device(pmcsr=0x0008)
    assert dev.writes == []


def test_a_pm_capability_at_the_end_of_standard_space_is_not_written_in_extended_space() -> None:
    # A device's capability pointer may put PM at 0xfc: its PMCSR would then be 0x100, the
    # first extended header, which the seize-time PME clean-up must not write.
    b = endpoint(size=4096)
    b.poke(0x100, 4, 0x0101)  # an extended header whose low word has bit 8 (PME enable) set
    b.cfg[0x06] |= 0x10
    b.poke(0x34, 1, 0xFC)
    b.poke(0xFC, 4, (0x0003 << 16) | CAP_PM)
    _, dev = b.space()
    assert dev.writes == []


def test_a_second_pm_capability_cannot_move_the_function() -> None:
    # The port moves the function through the first PM capability of the chain, whatever the
    # guest wrote to. A device listing two (the first one at 0xfc, its PMCSR out of standard
    # space) must not have a write to the second reach the port.
    b = endpoint()
    pos = b.pm()
    b.cfg[0x06] |= 0x10
    b.poke(0xFC, 4, (0x0603 << 16) | (pos << 8) | CAP_PM)
    cfg = bytearray(b.build())
    cfg[0x34] = 0xFC
    dev = SimDevice(ADDRESS, bytes(cfg))
    space = build_config_space(dev)
    with pytest.raises(PciOpError) as info:
        space.write(pos + PMCSR, 2, 0x0003)
    assert info.value.err is XenPciError.ACCESS_DENIED
    assert dev.power_state == 0
