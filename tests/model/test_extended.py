"""Extended config space: AER and SR-IOV described read-only, the undescribed rest read-only
unless permissive."""

from __future__ import annotations

import pytest

from pciback.engine import ConfigSpace
from pciback.generated.names import AER, DSN, SRIOV
from pciback.sim.device import SimDevice

from .builders import EXT_AER, EXT_DSN, EXT_SRIOV, endpoint, ext_chain


def extended_device(permissive: bool = False) -> tuple[ConfigSpace, SimDevice, int, int, int]:
    b = endpoint(size=4096)
    b.pm()
    b.pcie()
    aer = b.aer()
    dsn = b.ext_cap(EXT_DSN, bytes(range(8)))
    sriov = b.ext_cap(EXT_SRIOV, bytes(0x3C), version=1)
    space, dev = b.space(permissive=permissive)
    return space, dev, aer, dsn, sriov


def test_the_extended_chain_is_the_devices() -> None:
    space, _, aer, dsn, sriov = extended_device()
    assert ext_chain(space) == [(aer, EXT_AER), (dsn, EXT_DSN), (sriov, EXT_SRIOV)]
    assert not space.problems


def test_aer_reads_from_the_device() -> None:
    space, dev, aer, *_ = extended_device()
    status = aer + AER.UNCORRECTABLE_STATUS.offset
    severity, control = aer + AER.UNCORRECTABLE_SEVERITY.offset, aer + AER.CONTROL.offset
    dev.config[status : status + 4] = (0x00104010).to_bytes(4, "little")  # UR, poisoned, DLP
    assert space.read(status, 4) == 0x00104010
    assert space.read(severity, 4) == dev.read(severity, 4)
    assert space.read(control, 4) == dev.read(control, 4) & 0x1FFF


@pytest.mark.parametrize("permissive", [False, True])
def test_aer_never_takes_a_guest_write(permissive: bool) -> None:
    space, dev, aer, *_ = extended_device(permissive)
    status = aer + AER.UNCORRECTABLE_STATUS.offset
    dev.config[status : status + 4] = (0x00104010).to_bytes(4, "little")
    # from the uncorrectable status to the header log: an endpoint's registers
    for rel in range(AER.UNCORRECTABLE_STATUS.offset, AER.ROOT_ERROR_COMMAND.offset, 4):
        space.write(aer + rel, 4, 0xFFFFFFFF)  # clear status, unmask, make fatal, ECRC on
        space.write(aer + rel, 4, 0)
    assert dev.writes == []
    assert dev.read(status, 4) == 0x00104010  # the host still sees the errors


@pytest.mark.parametrize("permissive", [False, True])
def test_aer_root_registers_never_take_a_guest_write(permissive: bool) -> None:
    # A root port's or event collector's error interrupt enables (0x2c) and its
    # write-1-to-clear error status (0x30) are the host's AER service's.
    space, dev, aer, *_ = extended_device(permissive)
    root_status = aer + AER.ROOT_ERROR_STATUS.offset
    dev.config[root_status : root_status + 4] = (0x0000007F).to_bytes(4, "little")
    for reg in (AER.ROOT_ERROR_COMMAND, AER.ROOT_ERROR_STATUS, AER.ERROR_SOURCE_ID):
        space.write(aer + reg.offset, 4, 0xFFFFFFFF)
        space.write(aer + reg.offset, 4, 0)
    assert dev.writes == []
    assert dev.read(root_status, 4) == 0x0000007F


# An ID no table describes (none is assigned to it as of PCIe 6.0).
EXT_UNDESCRIBED = 0x0042


def test_undescribed_extended_capabilities_are_read_only_unless_permissive() -> None:
    for permissive in (False, True):
        b = endpoint(size=4096)
        b.pcie()
        pos = b.ext_cap(EXT_UNDESCRIBED, bytes(range(12)))
        space, dev = b.space(permissive=permissive)
        assert space.read(pos + 4, 4) == 0x03020100
        space.write(pos + 4, 2, 0x0001)
        if permissive:
            assert dev.writes == [(pos + 4, 2, 0x0001)]
        else:
            assert dev.writes == []
            assert space.warnings  # the drop is reported once


@pytest.mark.parametrize("permissive", [False, True])
def test_sriov_vf_enable_never_takes_a_guest_write(permissive: bool) -> None:
    # Linux leaves SR-IOV undescribed: in permissive mode a guest would create VFs in dom0.
    space, dev, _, dsn, sriov = extended_device(permissive)
    assert space.read(dsn + DSN.SERIAL_LOW.offset, DSN.SERIAL_LOW.width) == 0x03020100
    space.write(sriov + SRIOV.CONTROL.offset, SRIOV.CONTROL.width, 0x0001)  # VF enable
    space.write(sriov + SRIOV.NUM_VFS.offset, SRIOV.NUM_VFS.width, 0x0004)
    assert dev.writes == []


@pytest.mark.parametrize("permissive", [False, True])
def test_extended_headers_are_never_writable(permissive: bool) -> None:
    space, dev, aer, dsn, sriov = extended_device(permissive)
    for pos in (aer, dsn, sriov):
        space.write(pos, 4, 0)
        space.write(pos + 2, 2, 0xFFFF)
    assert dev.writes == []
    assert ext_chain(space) == [(aer, EXT_AER), (dsn, EXT_DSN), (sriov, EXT_SRIOV)]


def test_a_conventional_device_has_no_extended_space() -> None:
    b = endpoint()
    b.pm()
    space, _ = b.space()
    assert space.size == 256 and ext_chain(space) == []
