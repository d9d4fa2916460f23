"""The short way for config ops (pciback.daemon.config_ops) against the general way (dispatch
behind the serving gate): the same answer in the page, byte for byte, and the same effects on
the device, for every access a guest can post to real devices; and the cases it must leave to
the general way."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from pciback.control.hide import parse_address
from pciback.daemon.config_ops import config_ops
from pciback.daemon.serving_gate import ServingGate
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import CAPABILITY_LISTS
from pciback.protocol.abi import OP_OFFSET, OP_SIZE, Cmd, Flag, ffi
from pciback.protocol.dispatch import ExportedDevice
from pciback.protocol.transport import SharedPage
from pciback.sim import SimHost
from pciback.sim.fixtures import fixture
from pciback.sim.hypervisor import SimHypervisor

from ..audit.support import qemu_dumps
from .simconfig import export, nic

ADDR = "0000:03:00.0"
STANDARD_SPACE = CAPABILITY_LISTS.STANDARD_END  # the header and the standard capabilities
# Real devices: the embedded virtio-net, and from the shared QEMU dumps (when present) a PCIe
# function with MSI-X and AER and a bridge (type 1 header).
DUMPS = [fixture("virtio-net-1af4-1041.bin")] + [
    dump
    for dump in qemu_dumps()
    if dump.name in ("e1000e-8086-10d3.bin", "pcie-root-port-1b36-000c.bin", "nvme-1b36-0010.bin")
]


def op_bytes(
    cmd: int, devfn_key: tuple[int, int, int], offset: int, size: int, value: int
) -> bytes:
    op = ffi.new("struct xen_pci_op *")
    op.cmd = cmd & 0xFFFFFFFF
    op.domain, op.bus, op.devfn = devfn_key
    op.offset, op.size, op.value = offset, size, value
    return bytes(ffi.buffer(op))


def guest_key(address: str) -> tuple[int, int, int]:
    domain, bus, slot, function = parse_address(address)
    return domain, bus, slot << 3 | function


def the_ops(rng: random.Random, key: tuple[int, int, int], config_size: int) -> list[bytes]:
    """Every dword read, every byte and word read of the header and the standard capabilities,
    a boot scan of two buses, then writes and odd ops at random: sizes and offsets dispatch
    refuses, another device's address, other commands, values of every width."""
    ops = [
        op_bytes(Cmd.CONF_READ, key, offset, size, 0)
        for size, end in ((1, STANDARD_SPACE), (2, STANDARD_SPACE), (4, config_size))
        for offset in range(0, min(end, config_size), size)
    ]
    # A guest's boot scan: the vendor ID of every function of its bus and of the next one.
    ops += [
        op_bytes(Cmd.CONF_READ, (key[0], bus, devfn), 0, 2, 0)
        for bus in (key[1], key[1] + 1)
        for devfn in range(256)
    ]
    other = (key[0], key[1], key[2] ^ 8)
    for _ in range(1500):
        cmd = rng.choice(
            [Cmd.CONF_WRITE] * 6 + [Cmd.CONF_READ] * 3 + [Cmd.DISABLE_MSI, 77, 0xFFFFFFFF]
        )
        size = rng.choice([1, 2, 4, 4, 4, 3, 0, 8, -4])
        offset = rng.choice(
            [rng.randrange(0, 0x40), rng.randrange(0, config_size), rng.randrange(-8, 0x1008)]
        )
        if size in (1, 2, 4) and rng.random() < 0.8:
            offset -= offset % size
        value = rng.choice([0, 0xFFFFFFFF, rng.getrandbits(32), rng.getrandbits(8)])
        ops.append(op_bytes(cmd, other if rng.random() < 0.1 else key, offset, size, value))
    return ops


def serve_all(
    dump: Path, short_way: bool, ops_of: random.Random
) -> tuple[list[bytes], bytes, list[tuple[int, int, int]]]:
    """Each op's page bytes after its answer, then the device's config and writes."""
    with SimHost() as host:
        host.add_device(ADDR, dump.read_bytes())
        guest = host.attach(1, [ADDR])
        if not short_way:
            connection = guest.backend
            connection.handler = connection.handler  # replacing it turns the short way off
        device = host.physical(ADDR)
        pages = []
        for op in the_ops(ops_of, guest_key(guest.devices[0]), device.config_size):
            guest.frontend.do_raw_op(op)
            pages.append(bytes(guest.page.buffer[OP_OFFSET : OP_OFFSET + OP_SIZE]))
        return pages, bytes(device.config), list(device.writes)


@pytest.mark.parametrize("dump", DUMPS, ids=lambda path: path.name)
def test_the_short_way_answers_and_acts_as_dispatch(dump: Path) -> None:
    short = serve_all(dump, True, random.Random(dump.name))
    general = serve_all(dump, False, random.Random(dump.name))
    assert len(short[0]) == len(general[0])
    for i, (a, b) in enumerate(zip(short[0], general[0], strict=True)):
        assert a == b, f"op {i}: the page differs"
    assert short[1] == general[1], "the device's config differs"
    assert short[2] == general[2], "the device was written differently"


class Rig:
    def __init__(self) -> None:
        self.page = SharedPage()
        self.gate = ServingGate()
        self.device = nic()
        self.devices, self.view = export(self.device, SimHypervisor())
        self.exported: ExportedDevice = self.devices.exported
        self.written: set[str] = set()
        self.by_devfn = {(0, 3, 0): self.exported}
        self.serve = config_ops(self.gate, self.by_devfn, self.devices, self.written)

    def post(self, cmd: int, offset: int, size: int, value: int = 0) -> None:
        self.page.buffer[OP_OFFSET : OP_OFFSET + OP_SIZE] = op_bytes(
            cmd, (0, 3, 0), offset, size, value
        )
        self.page.set_bit(Flag.PCIF_ACTIVE)

    def answer(self) -> tuple[int, int]:
        op = self.page.info.op
        return int(op.err), int(op.value)


def test_it_answers_reads_and_marks_what_it_writes() -> None:
    rig = Rig()
    rig.post(Cmd.CONF_READ, 0, 4)
    assert rig.serve(rig.page)
    assert rig.answer() == (0, 0x10D38086)
    assert rig.written == set()
    rig.post(Cmd.CONF_WRITE, 0x3C, 1, 0xABCD12)
    assert rig.serve(rig.page)
    assert rig.answer() == (0, 0xABCD12)  # a write's value goes back as posted, as in dispatch
    assert rig.written == {rig.exported.physical.address}
    assert not rig.gate.op


@pytest.mark.parametrize(
    ("cmd", "offset", "size"),
    [
        (Cmd.CONF_READ, 2, 4),  # misaligned
        (Cmd.CONF_WRITE, 0, 3),  # no such size
        (Cmd.CONF_READ, 0, 0),
        (Cmd.CONF_READ, -4, 4),
        (Cmd.CONF_WRITE, 0x100, 4),  # past the device's config space
    ],
)
def test_a_refused_access_is_invalid_offset_and_reaches_nothing(
    cmd: int, offset: int, size: int
) -> None:
    rig = Rig()
    rig.post(cmd, offset, size, 0x1234)
    assert rig.serve(rig.page)
    assert rig.answer() == (XenPciError.INVALID_OFFSET, 0)
    assert rig.view.reads == []
    assert rig.device.writes == []
    assert rig.written == set()


@pytest.mark.parametrize("cmd", [Cmd.CONF_READ, Cmd.CONF_WRITE, Cmd.ENABLE_MSIX, 99])
def test_an_address_without_a_device_is_dev_not_found_whatever_the_command(cmd: int) -> None:
    rig = Rig()
    rig.by_devfn.clear()
    rig.post(cmd, 0, 4, 0x1234)
    assert rig.serve(rig.page)
    assert rig.answer() == (XenPciError.DEV_NOT_FOUND, 0x1234)  # the value as posted
    assert rig.view.reads == []


@pytest.mark.parametrize("cmd", [Cmd.ENABLE_MSI, Cmd.DISABLE_MSIX, Cmd.AER_DETECTED, 99])
def test_it_leaves_other_commands_untouched_to_the_general_way(cmd: int) -> None:
    rig = Rig()
    rig.post(cmd, 0, 4, 0x1234)
    before = bytes(rig.page.buffer)
    assert not rig.serve(rig.page)
    assert bytes(rig.page.buffer) == before
    assert not rig.gate.op


def test_it_leaves_an_op_alone_while_a_change_holds_the_gate() -> None:
    rig = Rig()
    rig.post(Cmd.CONF_READ, 0, 4)
    rig.gate.held = True  # as `with gate:` leaves it while a change is under way
    before = bytes(rig.page.buffer)
    assert not rig.serve(rig.page)
    assert bytes(rig.page.buffer) == before
    assert rig.view.reads == []
    assert not rig.gate.op, "the op flag stays down once the op stepped back"


@pytest.mark.parametrize(
    ("error", "err"),
    [
        (PciOpError(XenPciError.ACCESS_DENIED), XenPciError.ACCESS_DENIED),
        (RuntimeError("a bug"), XenPciError.OP_FAILED),
    ],
)
def test_an_op_that_raises_is_answered_as_dispatch_answers_it(
    error: Exception, err: XenPciError, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig()

    def raising(offset: int, size: int) -> int:
        raise error

    rig.exported.view.read = raising  # type: ignore[method-assign]
    rig.post(Cmd.CONF_READ, 0, 4)
    with caplog.at_level(logging.ERROR, logger="pciback.protocol.dispatch"):
        assert rig.serve(rig.page)
    assert rig.answer() == (err, 0)
    assert not rig.gate.op
    logged = [r for r in caplog.records if r.name == "pciback.protocol.dispatch"]
    assert bool(logged) == (err == XenPciError.OP_FAILED)
