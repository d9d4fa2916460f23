"""What the trace tests share: a simulated host recording a guest's enumeration of a QEMU
device, and copies of dsl/ with one field's access changed."""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pciback.cli.trace_record import Recorded, record
from pciback.generated.names import COMMON_HEADER
from pciback.protocol.abi import Cmd
from pciback.sim import SimHost
from pciback.sim.guest_scan import FrontendGuest, boot_scan, driver_probe, lspci
from pciback.trace.format import TraceOp

REPO = Path(__file__).resolve().parents[2]
QEMU = REPO / ".." / "shared" / "fixtures" / "qemu"
# PCIe, MSI-X, vendor capabilities a virtio driver walks, and AER, ATS in extended space.
DUMP = QEMU / "virtio-net-1af4-1041-modern-aer-ats.bin"
DEVICE = "0000:03:00.0"
COMMAND = COMMON_HEADER.COMMAND.offset
SERR = COMMON_HEADER.COMMAND.SERR_ENABLE.mask


def have_fixture() -> bool:
    return DUMP.is_file()


def new_host() -> SimHost:
    """A simulated host with the QEMU device on its bus."""
    host = SimHost()
    host.add_device(DEVICE, DUMP)
    return host


def sender(host: SimHost) -> Callable[[str, dict[str, Any]], Any]:
    """The control requests the CLI sends over the socket, handed to the daemon in-process."""
    return lambda op, fields: host.daemon.handle({"op": op, **fields})


def enumerate_guest(host: SimHost, domid: int) -> None:
    """What a Linux guest does with the function: pcifront's scan and BAR sizing, the PCI
    core's boot scan, a virtio driver's probe (with its command writes), lspci -xxxx."""
    guest = host.attach(domid, [DEVICE])
    guest.enumerate()
    scan = FrontendGuest(guest.frontend, guest.devices[0])
    boot_scan(scan)
    driver_probe(scan)
    lspci(scan)


def record_enumeration(
    host: SimHost, domid: int = 1, device: str | None = DEVICE, max_ops: int = 50_000
) -> tuple[str, Recorded]:
    """Arm a recording, boot the guest and let it enumerate, stop: the trace file's text."""
    out = io.StringIO()
    started, stop = threading.Event(), threading.Event()
    send = sender(host)

    def send_and_tell(op: str, fields: dict[str, Any]) -> Any:
        answer = send(op, fields)
        if op == "trace_start":
            started.set()
        return answer

    result: list[Recorded] = []
    thread = threading.Thread(
        target=lambda: result.append(
            record(send_and_tell, out, domid, device, max_ops, stop.is_set, poll_s=0.01)
        )
    )
    thread.start()
    try:
        assert started.wait(5)
        enumerate_guest(host, domid)
    finally:
        stop.set()
        thread.join(10)
    return out.getvalue(), result[0]


def changed_dsl(tmp_path: Path, old: str, new: str, name: str = "dsl") -> Path:
    """A copy of dsl/ with `old` replaced by `new` in prelude.pci (where the command register
    is)."""
    copy = tmp_path / name
    shutil.copytree(REPO / "dsl", copy)
    prelude = copy / "prelude.pci"
    text = prelude.read_text(encoding="utf-8")
    assert text.count(old) == 1
    prelude.write_text(text.replace(old, new), encoding="utf-8")
    return copy


SERR_ENABLE = 'serr_enable     [8]     shadow(hw) rw  "kept'
BUS_MASTER = "bus_master      [2]     hw ro  permissive rw  on_change bus_master"


def serr_hidden(tmp_path: Path) -> Path:
    """SERR# enable reserved (reads 0) instead of a guest-writable shadow."""
    return changed_dsl(tmp_path, SERR_ENABLE, SERR_ENABLE.replace("rw ", "rsvdp "), "serr")


def bus_master_rw(tmp_path: Path) -> Path:
    """Bus mastering written through to the device in normal mode, not only through its hook."""
    return changed_dsl(
        tmp_path, BUS_MASTER, "bus_master      [2]     hw rw  on_change bus_master", "bm"
    )


def reads_seeing_serr(ops: Iterable[TraceOp]) -> list[TraceOp]:
    """The config reads covering the command register's SERR# enable that answered it set:
    what a policy reserving the bit (`serr_hidden`) answers differently."""
    return [
        op
        for op in ops
        if op.cmd == Cmd.CONF_READ
        and op.offset is not None
        and op.offset <= COMMAND + 1 < op.offset + (op.size or 0)
        and op.value is not None
        and op.value >> (8 * (COMMAND - op.offset)) & SERR
    ]
