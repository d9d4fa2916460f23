"""One rule for a config-space access (1, 2 or 4 bytes, naturally aligned, inside the space),
pciback.ports.bus.config_access_fits; the engine and the sysfs device's check use it, and the
copies written in line on the measured paths (the op dispatcher, the daemon's short way for
config ops, the sysfs read) must give the same answer for every access."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.daemon.config_ops import config_ops
from pciback.daemon.serving_gate import ServingGate
from pciback.errors import PciOpError, XenPciError
from pciback.generated.names import COMMON_HEADER as HEADER
from pciback.policy import build_config_space
from pciback.ports.bus import config_access_fits
from pciback.protocol.abi import OP_OFFSET, Cmd, ffi
from pciback.protocol.dispatch import dispatch
from pciback.protocol.ops import OpRequest
from pciback.protocol.transport import SharedPage
from pciback.sim.device import SimDevice
from pciback.sim.hypervisor import SimHypervisor
from pciback.xen.sysfs import SysfsDevice
from tests.protocol.simconfig import export

SPACE_BYTES = 256  # a conventional function's config space
ACCESSES = [(offset, size) for size in range(-1, 9) for offset in range(-8, SPACE_BYTES + 8)]


def device() -> SimDevice:
    config = bytearray(SPACE_BYTES)
    config[HEADER.VENDOR_ID.offset : HEADER.DEVICE_ID.offset + HEADER.DEVICE_ID.width] = (
        0x12348086
    ).to_bytes(4, "little")
    return SimDevice("0000:03:00.0", bytes(config))


def test_the_rule() -> None:
    fits = {(o, s) for o, s in ACCESSES if config_access_fits(o, s, SPACE_BYTES)}
    expected = {(o, s) for s in (1, 2, 4) for o in range(0, SPACE_BYTES - s + 1, s)}
    assert fits == expected


def test_the_engine_refuses_what_the_rule_refuses() -> None:
    view = build_config_space(device())
    for offset, size in ACCESSES:
        try:
            view.read(offset, size)
        except PciOpError as exc:
            assert exc.err == XenPciError.INVALID_OFFSET
            assert not config_access_fits(offset, size, SPACE_BYTES), (offset, size)
        else:
            assert config_access_fits(offset, size, SPACE_BYTES), (offset, size)


@pytest.mark.parametrize("cmd", [Cmd.CONF_READ, Cmd.CONF_WRITE])
def test_the_dispatchers_in_line_check_is_the_rule(cmd: Cmd) -> None:
    lookup, _ = export(device(), SimHypervisor())
    for offset, size in ACCESSES:
        result = dispatch(OpRequest(cmd, 0, 3, 0, offset, size, 0, 0, b""), lookup)
        refused = result.err == XenPciError.INVALID_OFFSET
        assert refused is not config_access_fits(offset, size, SPACE_BYTES), (cmd, offset, size)


@pytest.mark.parametrize("cmd", [Cmd.CONF_READ, Cmd.CONF_WRITE])
def test_the_short_ways_in_line_check_is_the_rule(cmd: Cmd) -> None:
    lookup, _ = export(device(), SimHypervisor())
    serve = config_ops(ServingGate(), {(0, 3, 0): lookup.exported}, lookup, set())
    page = SharedPage()
    op = ffi.new("struct xen_pci_op *")
    op.cmd, op.bus = cmd, 3
    for offset, size in ACCESSES:
        op.offset, op.size = offset, size
        page.buffer[OP_OFFSET : OP_OFFSET + ffi.sizeof(op[0])] = bytes(ffi.buffer(op))
        assert serve(page)
        refused = int(page.info.op.err) == XenPciError.INVALID_OFFSET
        assert refused is not config_access_fits(offset, size, SPACE_BYTES), (cmd, offset, size)


def test_the_sysfs_reads_in_line_check_is_the_rule(tmp_path: Path) -> None:
    (tmp_path / "config").write_bytes(bytes(SPACE_BYTES))
    dev = SysfsDevice(tmp_path, "0000:03:00.0")
    for offset, size in ACCESSES:
        try:
            dev.read(offset, size)
        except ValueError:
            assert not config_access_fits(offset, size, SPACE_BYTES), (offset, size)
        else:
            assert config_access_fits(offset, size, SPACE_BYTES), (offset, size)
    dev.close()
