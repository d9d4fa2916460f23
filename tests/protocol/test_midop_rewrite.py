"""A guest rewriting the shared page while the backend handles its op changes nothing: the
backend acts on, and answers for, the op as it was when the active bit was raised."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pciback.errors import XenPciError
from pciback.generated.names import COMMON_HEADER
from pciback.ports.hypervisor import IrqKind
from pciback.protocol.abi import SH_INFO_MAX_VEC, Cmd, Flag
from pciback.protocol.connection import BackendConnection
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim import SimHost
from pciback.sim.device import SimDevice
from pciback.sim.hypervisor import SimHypervisor

from .simconfig import PassView, export, nic, nic_config, post_op

ADDR = "0000:03:00.0"


def scribble(page: SharedPage) -> None:
    """Everything a hostile frontend could change in `op` mid-flight."""
    op = page.info.op
    op.cmd = Cmd.CONF_WRITE
    op.domain, op.bus, op.devfn = 0xFFFF, 0xFF, 0xFF
    op.offset, op.size = 0x10, 4
    op.value = SH_INFO_MAX_VEC
    op.info = 32
    for i in range(SH_INFO_MAX_VEC):
        op.msix_entries[i].entry = i
        op.msix_entries[i].vector = 0xBEEF


class RewritingView(PassView):
    """A device access during which the guest scribbles over its op."""

    def __init__(self, device: SimDevice, page: SharedPage) -> None:
        super().__init__(device)
        self.page = page

    def read(self, offset: int, size: int) -> int:
        scribble(self.page)
        return super().read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        scribble(self.page)
        super().write(offset, size, value)


class Rig:
    def __init__(self) -> None:
        self.device = nic()
        self.page = SharedPage()
        self.channel = EventChannel()
        self.devices, _ = export(self.device, SimHypervisor())
        self.devices.exported.view = RewritingView(self.device, self.page)
        self.conn = BackendConnection(1, self.page, self.channel.backend, self.devices)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.channel.close()


def test_a_read_answers_for_the_op_as_posted(rig: Rig) -> None:
    post_op(rig.page, cmd=Cmd.CONF_READ, bus=3, offset=0x2C, size=2)
    rig.conn.process_pending()
    assert int(rig.page.info.op.cmd) == Cmd.CONF_WRITE  # the scribble did happen
    assert int(rig.page.info.op.err) == 0
    assert int(rig.page.info.op.value) == 0x8086  # subsystem vendor, not BAR0 nor a dword
    assert rig.device.writes == []  # the rewritten cmd was a write; none happened
    assert not rig.page.test_bit(Flag.PCIF_ACTIVE)


def test_a_write_goes_where_and_as_wide_as_posted(rig: Rig) -> None:
    post_op(rig.page, cmd=Cmd.CONF_WRITE, bus=3, offset=0x3C, size=1, value=0x5A)
    rig.conn.process_pending()
    assert int(rig.page.info.op.err) == 0
    assert rig.device.writes == [(0x3C, 1, 0x5A)]


def test_msix_vectors_written_back_are_only_those_validated(host: SimHost) -> None:
    host.add_device(ADDR, nic_config(), bar_sizes={0: 0x4000})
    guest = host.attach(1, [ADDR])
    host.hypervisor.calls.clear()  # the pool's seizing is not the guest's doing
    page = guest.page
    real_map = host.hypervisor.map_pirq

    def map_and_scribble(domid: int, address: str, kind: IrqKind, index: int, count: int) -> int:
        scribble(page)
        return real_map(domid, address, kind, index, count)

    host.hypervisor.map_pirq = map_and_scribble  # type: ignore[method-assign]
    vectors = guest.enable_msix(ADDR, [5, 6])
    assert [call[4] for call in host.hypervisor.calls] == [5, 6]
    assert host.physical(ADDR).msix_entries == (5, 6)
    assert len(vectors) == 2 and 0xBEEF not in vectors
    # The slots past the request keep the guest's own scribbles: the backend wrote none.
    assert int(page.info.op.msix_entries[2].vector) == 0xBEEF
    assert int(page.info.op.err) == XenPciError.SUCCESS


def test_multi_msi_uses_the_count_as_posted(host: SimHost) -> None:
    host.add_device(ADDR, nic_config(), bar_sizes={0: 0x4000})
    guest = host.attach(1, [ADDR])
    host.hypervisor.calls.clear()  # the pool's seizing is not the guest's doing
    real_map = host.hypervisor.map_pirq

    def map_and_scribble(domid: int, address: str, kind: IrqKind, index: int, count: int) -> int:
        scribble(guest.page)
        return real_map(domid, address, kind, index, count)

    host.hypervisor.map_pirq = map_and_scribble  # type: ignore[method-assign]
    guest.enable_multi_msi(ADDR, 2)
    assert host.hypervisor.calls == [("map_pirq", 1, ADDR, "msi", 0, 2)]
    assert host.physical(ADDR).msi_vectors == 2


def test_through_the_engine_a_physical_read_that_scribbles_changes_nothing(
    host: SimHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = host.add_device(ADDR, nic_config(), bar_sizes={0: 0x4000})
    guest = host.attach(1, [ADDR])
    at, width = COMMON_HEADER.STATUS.offset, COMMON_HEADER.STATUS.width
    status = guest.conf_read(ADDR, at, width)
    seized = list(device.writes)  # the stub pool's, before the guest came
    real_read = device.read

    def read_and_scribble(offset: int, size: int) -> int:
        scribble(guest.page)
        return real_read(offset, size)

    monkeypatch.setattr(device, "read", read_and_scribble)
    reply = guest.frontend.do_op(Cmd.CONF_READ, ADDR, offset=at, size=width)
    assert int(guest.page.info.op.cmd) == Cmd.CONF_WRITE  # the scribble did happen
    assert (reply.err, reply.value) == (XenPciError.SUCCESS, status)
    assert device.writes == seized
