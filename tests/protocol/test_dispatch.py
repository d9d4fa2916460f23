"""Op dispatch through the page: every XEN_PCI_ERR_* answer, as Linux's pciback gives it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from pciback.errors import PciOpError, XenPciError
from pciback.protocol.abi import Cmd, Flag
from pciback.protocol.connection import OPS_PER_WAKEUP, BackendConnection
from pciback.protocol.dispatch import ExportedDevice
from pciback.protocol.ops import OpResult
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim.device import SimDevice
from pciback.sim.hypervisor import SimHypervisor

from .simconfig import FIXTURES, OneDevice, PassView, export, nic, post_op

DEVFN = 0  # the device sits at 0000:03:00.0


class Rig:
    def __init__(self, device: SimDevice | None = None) -> None:
        self.device = device or nic()
        self.page = SharedPage()
        self.channel = EventChannel()
        self.devices, self.view = export(self.device, SimHypervisor())
        self.conn = BackendConnection(1, self.page, self.channel.backend, self.devices)

    def op(self, **fields: int) -> tuple[int, int]:
        post_op(self.page, **{"bus": 3, "devfn": DEVFN, **fields})
        assert self.conn.process_pending() == 1
        assert not self.page.test_bit(Flag.PCIF_ACTIVE)
        assert self.channel.frontend.wait(0), "the frontend was not notified"
        return int(self.page.info.op.err), int(self.page.info.op.value)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.channel.close()


def test_conf_read_answers_through_the_page(rig: Rig) -> None:
    assert rig.op(cmd=Cmd.CONF_READ, offset=0, size=4) == (0, 0x10D38086)
    assert rig.op(cmd=Cmd.CONF_READ, offset=2, size=2) == (0, 0x10D3)
    assert rig.op(cmd=Cmd.CONF_READ, offset=0x3D, size=1) == (0, 1)
    assert rig.conn.ops_served == 3


def test_conf_write_reaches_the_view_cut_to_its_size(rig: Rig) -> None:
    assert rig.op(cmd=Cmd.CONF_WRITE, offset=0x3C, size=1, value=0xABCD12)[0] == 0
    assert rig.device.writes == [(0x3C, 1, 0x12)]


@pytest.mark.parametrize(
    ("domain", "bus", "devfn"),
    [(0, 3, 8), (0, 4, 0), (1, 3, 0), (0x10000, 3, 0), (0, 0x103, 0), (0, 3, 0x100)],
)
def test_an_address_without_a_device_is_dev_not_found(
    rig: Rig, domain: int, bus: int, devfn: int
) -> None:
    err, _ = rig.op(cmd=Cmd.CONF_READ, domain=domain, bus=bus, devfn=devfn, size=4)
    assert err == XenPciError.DEV_NOT_FOUND
    assert rig.view.reads == []


@pytest.mark.parametrize("cmd", [11, 0xFFFFFFFF, *range(Cmd.AER_DETECTED, Cmd.AER_SLOTRESET + 1)])
def test_an_unknown_command_is_not_implemented(rig: Rig, cmd: int) -> None:
    assert rig.op(cmd=cmd, size=4)[0] == XenPciError.NOT_IMPLEMENTED


def test_the_device_is_checked_before_the_command(rig: Rig) -> None:
    assert rig.op(cmd=99, devfn=1)[0] == XenPciError.DEV_NOT_FOUND


@pytest.mark.parametrize(
    ("offset", "size"),
    [(0, 0), (0, 3), (0, 8), (0, -1), (1, 2), (2, 4), (-4, 4), (0x100, 1), (0xFE, 4), (-1, 1)],
)
@pytest.mark.parametrize("cmd", [Cmd.CONF_READ, Cmd.CONF_WRITE])
def test_bad_size_alignment_or_offset_is_invalid_offset(
    rig: Rig, cmd: Cmd, offset: int, size: int
) -> None:
    err, value = rig.op(cmd=cmd, offset=offset, size=size, value=0x55)
    assert err == XenPciError.INVALID_OFFSET
    assert value == 0
    assert rig.view.reads == [] and rig.device.writes == []


def test_extended_config_space_is_reachable_only_where_it_exists() -> None:
    big = Rig(SimDevice("0000:03:00.0", f"{FIXTURES}/intel-0d57-host-bridge.bin"))
    try:
        assert big.op(cmd=Cmd.CONF_READ, offset=0xFFC, size=4)[0] == 0
        assert big.op(cmd=Cmd.CONF_READ, offset=0x1000, size=4)[0] == XenPciError.INVALID_OFFSET
    finally:
        big.channel.close()


class DenyingView(PassView):
    def write(self, offset: int, size: int, value: int) -> None:
        raise PciOpError(XenPciError.ACCESS_DENIED)

    def read(self, offset: int, size: int) -> int:
        if offset == 0x40:
            raise RuntimeError("a bug in a hook")
        return super().read(offset, size)


def test_the_views_errors_reach_the_guest_and_bugs_become_op_failed(rig: Rig) -> None:
    view = DenyingView(rig.device)
    rig.devices.exported.view = view
    assert rig.op(cmd=Cmd.CONF_WRITE, offset=4, size=2, value=0)[0] == XenPciError.ACCESS_DENIED
    assert rig.op(cmd=Cmd.CONF_READ, offset=0x40, size=1) == (XenPciError.OP_FAILED, 0)
    assert rig.op(cmd=Cmd.CONF_READ, offset=0, size=2) == (0, 0x8086)  # still serving


def test_a_backend_failure_is_logged_against_its_guests_own_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug hit by one guest's op is counted on that guest's limit: a guest hitting it in a
    loop does not silence the same line for another guest."""
    flooding, quiet = Rig(), Rig()
    try:
        for rig in (flooding, quiet):
            rig.devices.exported.view = DenyingView(rig.device)
        assert flooding.devices.exported.log_limit is not quiet.devices.exported.log_limit
        caplog.set_level(logging.ERROR, logger="pciback.protocol.dispatch")
        burst = flooding.devices.exported.log_limit.burst
        for _ in range(burst * 3):
            assert flooding.op(cmd=Cmd.CONF_READ, offset=0x40, size=1)[0] == XenPciError.OP_FAILED
        assert len(caplog.records) == burst  # the rest suppressed (interval: 5 s)
        assert quiet.op(cmd=Cmd.CONF_READ, offset=0x40, size=1)[0] == XenPciError.OP_FAILED
        assert len(caplog.records) == burst + 1
        assert "failed inside the backend" in caplog.records[-1].getMessage()
    finally:
        flooding.channel.close()
        quiet.channel.close()


def test_nothing_is_done_without_the_active_flag(rig: Rig) -> None:
    rig.page.info.op.cmd = Cmd.CONF_WRITE
    rig.page.info.op.size = 1
    assert rig.conn.process_pending() == 0
    assert rig.device.writes == []


def test_a_guest_that_keeps_the_flag_up_is_served_in_bounded_batches(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    finish = rig.page.finish_op

    def guest_raises_it_again() -> object:
        was = finish()
        rig.page.set_bit(Flag.PCIF_ACTIVE)
        return was

    monkeypatch.setattr(rig.page, "finish_op", guest_raises_it_again)
    rig.conn.handler = lambda req: OpResult(XenPciError.SUCCESS, 0)
    rig.page.set_bit(Flag.PCIF_ACTIVE)
    assert rig.conn.process_pending() == OPS_PER_WAKEUP
    assert rig.channel.backend.wait(0), "the backend must come back for the rest"


def test_a_device_lookup_sees_exactly_what_the_page_said(rig: Rig) -> None:
    seen: list[tuple[int, int, int]] = []
    real = rig.devices

    class Spy(OneDevice):
        def lookup(self, domain: int, bus: int, devfn: int) -> ExportedDevice | None:
            seen.append((domain, bus, devfn))
            return real.lookup(domain, bus, devfn)

    rig.conn.devices = Spy(real.exported, 0, 3, 0)
    rig.op(cmd=Cmd.CONF_READ, domain=0, bus=3, devfn=0x1F, size=1)
    assert seen == [(0, 3, 0x1F)]
