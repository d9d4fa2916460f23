"""PCI Express: registers by capability version and port type, and what a guest may change."""

from __future__ import annotations

import pytest

from pciback.engine import ConfigSpace
from pciback.engine.registers import RegisterInstance
from pciback.generated.names import CONST, PCIE

from .builders import CapView, endpoint

DEVCTL, DEVSTA, LINKCTL = PCIE.DEVCTL.offset, PCIE.DEVSTA.offset, PCIE.LINKCTL.offset
SLOTCTL, ROOTCTL = PCIE.SLOTCTL.offset, PCIE.ROOTCTL.offset
DEVCTL2, LINKCTL2 = PCIE.DEVCTL2.offset, PCIE.LINKCTL2.offset
ENDPOINT = 0  # the port types the tests build; the policy names those its conditions use
ROOT_PORT, DOWNSTREAM = CONST.PCIE_ROOT_PORT, CONST.PCIE_DOWNSTREAM_PORT
RC_ENDPOINT, EVENT_COLLECTOR = CONST.PCIE_RC_INTEGRATED_ENDPOINT, CONST.PCIE_RC_EVENT_COLLECTOR
MRRS, RELAXED = PCIE.DEVCTL.MAX_READ_REQUEST.mask, PCIE.DEVCTL.RELAXED_ORDERING.mask
NO_SNOOP, MPS = PCIE.DEVCTL.NO_SNOOP.mask, PCIE.DEVCTL.MAX_PAYLOAD.mask
FLR = PCIE.DEVCTL.FLR.mask


def pcie_device(version: int = 2, port_type: int = ENDPOINT, permissive: bool = False) -> CapView:
    b = endpoint()
    b.pm()
    pos = b.pcie(version=version, port_type=port_type)
    if version < 2:
        # a version-1 structure is as long as its port type makes it; give it the room
        room = {RC_ENDPOINT: 0x0C, DOWNSTREAM: 0x1C, ROOT_PORT: 0x24, EVENT_COLLECTOR: 0x24}
        b.cap(0x09, b"\x05\x00\x00", at=pos + room.get(port_type, 0x14))
    space, dev = b.space(permissive=permissive)
    return space, dev, pos


def names(space: ConfigSpace, pos: int) -> set[str]:
    return {
        slot.reg.name
        for off in range(pos, pos + 0x3C)
        if isinstance(slot := space.slot_at(off), RegisterInstance)
    }


DEVICE = {"caps", "devcap", "devctl", "devsta"}
LINK = {"linkcap", "linkctl", "linksta"}
SLOT = {"slotcap", "slotctl", "slotsta"}
ROOT = {"rootctl", "rootcap", "rootsta"}
V2 = {"devcap2", "devctl2", "devsta2", "linkcap2", "linkctl2", "linksta2"}
V2 |= {"slotcap2", "slotctl2", "slotsta2"}


@pytest.mark.parametrize(
    ("version", "port_type", "expected"),
    [
        (1, ENDPOINT, DEVICE | LINK),
        (1, RC_ENDPOINT, DEVICE),
        (1, DOWNSTREAM, DEVICE | LINK | SLOT),
        (1, ROOT_PORT, DEVICE | LINK | SLOT | ROOT),
        (1, EVENT_COLLECTOR, DEVICE | LINK | SLOT | ROOT),
        (2, ENDPOINT, DEVICE | LINK | SLOT | ROOT | V2),
        (2, RC_ENDPOINT, DEVICE | LINK | SLOT | ROOT | V2),
    ],
)
def test_registers_by_version_and_port_type(
    version: int, port_type: int, expected: set[str]
) -> None:
    space, _, pos = pcie_device(version, port_type)
    assert names(space, pos) == expected
    assert not space.problems


def test_max_read_request_reaches_the_device_and_nothing_else_of_devctl() -> None:
    space, dev, pos = pcie_device()
    before = dev.read(pos + DEVCTL, 2)
    flipped = RELAXED | NO_SNOOP | MPS | FLR | 0xF
    space.write(pos + DEVCTL, 2, ((before & ~MRRS) | 0x5000) ^ flipped)
    assert dev.read(pos + DEVCTL, 2) == (before & ~MRRS) | 0x5000
    assert space.warnings  # relaxed ordering and no-snoop would need permissive mode


def test_permissive_mode_opens_only_the_function_local_bits() -> None:
    space, dev, pos = pcie_device(permissive=True)
    before = dev.read(pos + DEVCTL, 2)
    space.write(pos + DEVCTL, 2, before ^ (RELAXED | NO_SNOOP | MPS | FLR | 0xF))
    assert dev.read(pos + DEVCTL, 2) == before ^ (RELAXED | NO_SNOOP)


def test_device_status_errors_are_write_one_to_clear() -> None:
    space, dev, pos = pcie_device()
    dev.config[pos + DEVSTA] = 0x2B  # correctable, non-fatal and UR detected; transactions pending
    space.write(pos + DEVSTA, 2, 0x0001)
    [(offset, size, value)] = dev.writes
    assert (offset, size) == (pos + DEVSTA, 2)
    assert value & 0x0F == 0x01  # only the acknowledged 1: the other errors are not echoed
    assert value & 0xFF80 == 0  # reserved bits written 0


def test_devctl_and_devsta_in_one_dword_never_echo_status() -> None:
    space, dev, pos = pcie_device()
    dev.config[pos + DEVSTA] = 0x0F
    devctl = dev.read(pos + DEVCTL, 2)
    space.write(pos + DEVCTL, 4, devctl)  # read-modify-write of devctl as a dword, status 0
    status = [v for off, size, v in dev.writes if off == pos + DEVSTA]
    assert all(v & 0x0F == 0 for v in status)  # zeros written: nothing cleared


@pytest.mark.parametrize("permissive", [False, True])
@pytest.mark.parametrize("reg", [LINKCTL, SLOTCTL, ROOTCTL, LINKCTL2])
def test_link_slot_and_root_control_never_take_a_guest_write(permissive: bool, reg: int) -> None:
    space, dev, pos = pcie_device(permissive=permissive)
    space.write(pos + reg, 2, 0xFFFF)  # link disable, retrain, slot power off, ...
    space.write(pos + reg, 2, 0x0000)
    assert dev.writes == []


def test_devctl2_function_local_bits_follow_permissive_mode() -> None:
    space, dev, pos = pcie_device()
    space.write(pos + DEVCTL2, 2, 0x0050)  # completion timeout value 0, atomics, ...
    assert dev.writes == []
    space, dev, pos = pcie_device(permissive=True)
    space.write(pos + DEVCTL2, 2, 0x0445)  # timeout value 5, atomic requester, LTR
    assert dev.read(pos + DEVCTL2, 2) == 0x0045  # LTR is platform policy


def test_capability_registers_read_from_the_device() -> None:
    space, dev, pos = pcie_device()
    for rel in range(0, 0x3C, 4):
        if rel == 0:
            assert space.read(pos, 4) >> 16 == dev.read(pos + PCIE.CAPS.offset, PCIE.CAPS.width)
            continue
        hw = dev.read(pos + rel, 4)
        seen = space.read(pos + rel, 4)
        assert seen & ~hw == 0  # reserved bits may read 0, nothing is invented
    devcap = pos + PCIE.DEVCAP.offset
    assert space.read(devcap, 4) == dev.read(devcap, 4) & 0x7FFF8FFF
