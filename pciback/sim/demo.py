"""`pciback demo`: the daemon on the embedded simulated default, with guests that use it.

A simulated host with fixture devices, most of them hidden; the daemon (control socket and
state in a temporary directory); two guests attached through xenstore, one per topology, each
enumerating its devices over the shared page and enabling interrupts; a refused second claim;
hot add and hot remove; a daemon restart with the guests attached; a guest shutdown.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from pciback.daemon.config import Config
from pciback.daemon.control import request
from pciback.daemon.core import Daemon
from pciback.generated.names import COMMON_HEADER, MSI, MSIX, PCIE, PM, VIRTIO_PCI_CAP
from pciback.sim.domain import SimDomain
from pciback.sim.environment import DEFAULT_SIM_DEVICES, DEFAULT_SIM_HIDE, SimEnvironment
from pciback.sim.fixtures import fixture_dir
from pciback.sim.frontend import GuestDevice
from pciback.sim.toolstack import SimToolstack

STEPS = 8
_CAP_NAMES = {
    PM.id: "PM",
    MSI.id: "MSI",
    VIRTIO_PCI_CAP.id: "vendor",
    PCIE.id: "PCIe",
    MSIX.id: "MSI-X",
}


class Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.step = 0
        self.started = time.monotonic()

    def section(self, title: str) -> None:
        self.step += 1
        self.out.write(f"\n[{self.step}/{STEPS}] {title}\n")
        self.out.flush()

    def line(self, text: str = "") -> None:
        self.out.write(f"      {text}\n")
        self.out.flush()


def _device_line(dev: GuestDevice) -> str:
    names = [_CAP_NAMES.get(cid, f"{cid:#04x}") for cid, _ in dev.capabilities]
    counted = {name: names.count(name) for name in names}
    caps = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in counted.items()) or "none"
    used = [b for b in dev.bars if b.size]
    bars = ", ".join(f"BAR{b.index} {b.kind.value} {b.size:#x}" for b in used) or "no BARs"
    return (
        f"{dev.address}  {dev.vendor:04x}:{dev.device:04x} class {dev.class_code:06x}  "
        f"[{bars}]  caps: {caps}"
    )


class _Runner:
    """The daemon's watch loop on a thread, so the demo can play the guests meanwhile."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=daemon.run, args=(self.stop_event,), daemon=True)

    def __enter__(self) -> Daemon:
        self.daemon.start()
        self.thread.start()
        return self.daemon

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(5.0)
        self.daemon.stop()


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pciback-demo-") as tmp:
        yield Path(tmp)


def _guest_report(report: Report, domain: SimDomain) -> None:
    found = domain.enumerate()
    report.line(f"guest {domain.domid} scanned root bus(es) {', '.join(domain.xenbus.roots)}")
    for dev in found:
        report.line("  " + _device_line(dev))
        pirqs = domain.ops.enable_interrupts(dev)
        kind = "MSI-X" if dev.capability(MSIX.id) is not None else "MSI"
        report.line(f"    interrupts: {kind} -> PIRQ {', '.join(map(str, pirqs)) or 'none'}")


def _released(sock: Path, domid: int, timeout: float = 10.0) -> None:
    """Wait until the daemon has let go of a destroyed guest (before its channel goes away)."""
    deadline = time.monotonic() + timeout
    while any(dev["owner"] == domid for dev in request(sock, "list")["devices"]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"guest {domid}'s devices were not released")
        time.sleep(0.01)


def _owners(report: Report, sock: Path) -> None:
    status = request(sock, "list")
    for dev in status["devices"]:
        owner = "-" if dev["owner"] is None else f"dom{dev['owner']}"
        report.line(f"{dev['address']}  driver={dev['driver'] or '-':<8} owner={owner}")


def run_demo(out: TextIO) -> int:
    report = Report(out)
    report.out.write("pciback demo: a user-space Xen PCI backend on a simulated dom0\n")
    with _workdir() as work:
        report.section("simulated host")
        env = SimEnvironment.from_dumps(DEFAULT_SIM_DEVICES)
        report.line(f"fixtures from {fixture_dir()}")
        for address, name in DEFAULT_SIM_DEVICES.items():
            report.line(f"{address}  {name}")

        cfg = Config(state_dir=work / "state", hide=DEFAULT_SIM_HIDE, log_level="warning")
        sock = cfg.control_socket
        assert sock is not None
        report.section(f"daemon started, hide={DEFAULT_SIM_HIDE}")
        toolstack = SimToolstack(env.store)
        with _Runner(Daemon(cfg, env)):
            report.line(f"control socket {sock} (mode {sock.stat().st_mode & 0o777:o})")
            _owners(report, sock)

            report.section("guest 1, passthrough topology: 03:00.0 (net) + 03:00.1 (blk)")
            g1 = SimDomain(env.store, env.grants, 1)
            toolstack.create(1, ["0000:03:00.0", "0000:03:00.1"], "passthrough")
            g1.boot()
            _guest_report(report, g1)

            report.section("guest 2, virtual PCI bus: 04:00.0 (rng) + 05:00.0 (balloon)")
            g2 = SimDomain(env.store, env.grants, 2)
            toolstack.create(2, ["0000:04:00.0", "0000:05:00.0"], "vpci")
            g2.boot()
            _guest_report(report, g2)

            report.section("a third guest asks for guest 1's NIC")
            g3 = SimDomain(env.store, env.grants, 3)
            toolstack.create(3, ["0000:03:00.0"], "vpci")
            try:
                g3.boot(timeout=5.0)
                report.line("unexpected: it connected")
            except RuntimeError:
                error = env.store.connect(0).read("/local/domain/0/error/backend/pci/3/0/error")
                report.line(f"refused: {error}")
            g3.close()

            report.section("hot add 06:00.0 (vsock) to guest 2, hot remove 05:00.0 (balloon)")
            toolstack.hot_add(2, "0000:06:00.0")
            g2.settled()
            toolstack.hot_remove(2, "0000:05:00.0")
            g2.settled()
            report.line(f"guest 2 now has {', '.join(g2.xenbus.devices())}")
            _owners(report, sock)

        report.section("daemon restarted with both guests attached")
        resets = env.devices["0000:03:00.0"].resets
        with _Runner(Daemon(cfg, env)):
            g1.follow(lambda: bool(request(sock, "list")["guests"]))
            ids = g1.ops.conf_read("0000:03:00.0", COMMON_HEADER.VENDOR_ID.offset, 4)
            report.line(f"guest 1 reads 03:00.0 IDs again: {ids:#010x}")
            same = env.devices["0000:03:00.0"].resets == resets
            report.line(f"device in use was {'not ' if same else ''}reset by the restart")
            _owners(report, sock)

            report.section("guest 1 shuts down")
            toolstack.destroy(1)
            _released(sock, 1)
            g1.close()
            _owners(report, sock)
            toolstack.destroy(2)
            _released(sock, 2)
            g2.close()
    report.out.write(f"\ndone in {time.monotonic() - report.started:.1f} s\n")
    return 0
