"""Power Management on a real dump (QEMU's e1000e, PM at 0xc8), where Linux's backend is the
reference: D-state changes are what pci_set_power_state accepts, and the bridge extensions
byte is read from the device. QEMU's function supports neither D1 nor D2, so the tests that
need them patch the support bits in; the byte at PM+6 is 0 in the dump and patched likewise."""

from __future__ import annotations

import pytest

from pciback.engine import ConfigSpace
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import PM as PM_NAMES
from pciback.policy import build_config_space
from pciback.sim import SimHost
from pciback.sim.device import SimDevice

from .builders import ADDRESS, CAP_PM, FIXTURES

DUMP = FIXTURES / "qemu" / "e1000e-8086-10d3.bin"
pytestmark = pytest.mark.skipif(not DUMP.is_file(), reason=f"{DUMP} is absent")
PM = 0xC8
PMC, PMCSR, BSE = (
    PM + PM_NAMES.PMC.offset,
    PM + PM_NAMES.PMCSR.offset,
    PM + PM_NAMES.BRIDGE_EXT.offset,
)
D1_SUPPORT, D2_SUPPORT = PM_NAMES.PMC.D1_SUPPORT.mask, PM_NAMES.PMC.D2_SUPPORT.mask


def config(*, d1_d2: bool = True, bse: int = 0) -> bytes:
    cfg = bytearray(DUMP.read_bytes())
    assert cfg[PM] == CAP_PM and cfg[BSE] == 0
    if d1_d2:
        pmc = int.from_bytes(cfg[PMC : PMC + 2], "little") | D1_SUPPORT | D2_SUPPORT
        cfg[PMC : PMC + 2] = pmc.to_bytes(2, "little")
    cfg[BSE] = bse
    return bytes(cfg)


def view(**kwargs: bool | int) -> tuple[ConfigSpace, SimDevice]:
    d1_d2 = bool(kwargs.get("d1_d2", True))
    dev = SimDevice(ADDRESS, config(d1_d2=d1_d2, bse=int(kwargs.get("bse", 0))))
    return build_config_space(dev), dev


def state(space: ConfigSpace) -> int:
    return space.read(PMCSR, 2) & 3


def test_from_d3hot_only_d0_is_accepted() -> None:
    space, dev = view()
    space.write(PMCSR, 2, 3)
    assert dev.power_state == 3 and state(space) == 3
    for shallower in (1, 2):
        writes = len(dev.writes)
        with pytest.raises(PciOpError) as info:
            space.write(PMCSR, 2, shallower)
        assert info.value.err is XenPciError.ACCESS_DENIED
        assert dev.power_state == 3 and state(space) == 3  # no effect
        assert dev.writes[writes:] == []
    space.write(PMCSR, 2, 0)
    assert dev.power_state == 0 and state(space) == 0
    space.write(PMCSR, 2, 1)  # from D0, D1 is fine again
    assert dev.power_state == 1


@pytest.mark.parametrize(
    ("start", "target", "taken"),
    [(1, 2, True), (1, 3, True), (2, 3, True), (2, 1, False), (1, 0, True), (2, 0, True)],
)
def test_a_low_power_state_goes_deeper_or_to_d0(start: int, target: int, taken: bool) -> None:
    space, dev = view()
    space.write(PMCSR, 2, start)
    assert dev.power_state == start
    if taken:
        space.write(PMCSR, 2, target)
        assert dev.power_state == target == state(space)
    else:
        with pytest.raises(PciOpError):
            space.write(PMCSR, 2, target)
        assert dev.power_state == start == state(space)


def test_the_guest_is_refused_d1_after_d3hot_through_the_page() -> None:
    host = SimHost()
    try:
        host.add_device(ADDRESS, config())
        guest = host.attach(domid=1, devices=[ADDRESS])
        (addr,) = guest.devices
        guest.conf_write(addr, PMCSR, 2, 3)
        assert host.physical(ADDRESS).power_state == 3
        with pytest.raises(PciOpError) as info:
            guest.conf_write(addr, PMCSR, 2, 1)
        assert info.value.err is XenPciError.ACCESS_DENIED
        assert host.physical(ADDRESS).power_state == 3
        assert guest.conf_read(addr, PMCSR, 2) & 3 == 3
    finally:
        host.close()


@pytest.mark.parametrize("bse", [0xC0, 0x3F, 0xFF, 0x00])
def test_the_bridge_extensions_byte_is_the_devices(bse: int) -> None:
    space, dev = view(bse=bse)
    assert space.read(BSE, 1) == bse
    assert (space.read(PMCSR, 4) >> 16) & 0xFF == bse  # in a wider access too
    space.write(BSE, 1, bse ^ 0xFF)
    assert dev.writes == [] and dev.read(BSE, 1) == bse  # read-only
    permissive = build_config_space(dev, permissive=True)
    permissive.write(BSE, 1, bse ^ 0xFF)
    assert dev.writes == [] and permissive.read(BSE, 1) == bse
