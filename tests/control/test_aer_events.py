"""PCIe errors on a real dom0 come as kernel uevents: for a held function, or for a bridge
above it, they start the recovery flow with the guest that holds it; other events change
nothing. Tested with the simulated kernel's uevent source and with the parser on what the
kernel sends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pciback.backend import Daemon
from pciback.daemon.aer_events import AerEvents, aer_layout, channel_state
from pciback.daemon.config import Config
from pciback.engine.chain import walk
from pciback.generated.names import COMMON_HEADER
from pciback.ports.uevents import QueuedUevents, parse_uevent, recovery_uevent
from pciback.protocol.abi import ChannelState, Cmd, ErsResult
from pciback.sim.device import SimDevice
from pciback.sim.domain import SimDomain
from pciback.sim.environment import SimEnvironment
from pciback.sim.toolstack import SimToolstack
from pciback.xen.sysfs import SysfsBus
from tests.protocol.simconfig import FIXTURES

NET = "0000:03:00.0"
BRIDGE = "0000:00:1c.0"
DEVPATH = f"/devices/pci0000:00/{BRIDGE}/{NET}"
# QEMU's e1000e: a PCIe endpoint with an AER capability.
E1000E = f"{FIXTURES}/qemu/e1000e-8086-10d3.bin"
needs_e1000e = pytest.mark.skipif(
    not Path(E1000E).is_file(), reason="no ../shared/fixtures/qemu beside the repository"
)


def event(address: str, kind: str, devpath: str = DEVPATH, online: bool = False) -> bytes:
    return recovery_uevent(devpath, address, kind, online)


def test_the_parser_reads_what_the_kernel_sends_and_refuses_the_rest() -> None:
    parsed = parse_uevent(event(NET, "BEGIN_RECOVERY"))
    assert parsed is not None
    assert (parsed.action, parsed.devpath, parsed.subsystem, parsed.pci_address) == (
        "change",
        DEVPATH,
        "pci",
        NET,
    )
    assert parsed.env["ERROR_EVENT"] == "BEGIN_RECOVERY" and parsed.env["DEVICE_ONLINE"] == "0"
    assert parse_uevent(b"libudev\0\xfe\xed\xca\xfe") is None  # udevd's own messages
    assert parse_uevent(b"") is None
    assert parse_uevent(b"no at sign\0A=B\0") is None
    assert parse_uevent(b"add@/x" + b"\0K=V" * 10_000) is None  # past the bound
    many = parse_uevent(b"add@/x\0" + b"\0".join(b"K%d=V" % i for i in range(500)))
    assert many is not None and len(many.env) == 64
    assert parse_uevent(b"add@/x\0\xff\xfe=\xff\0") is not None  # never a decode error


class Recorder:
    def __init__(self, held: list[str], parents: dict[str, tuple[str, ...]]) -> None:
        self.calls: list[tuple[str, ChannelState]] = []
        self.watcher = AerEvents(
            QueuedUevents(),
            held=lambda: held,
            upstream=lambda a: parents.get(a, ()),
            state=lambda a: ChannelState.IO_NORMAL,
            recover=lambda a, s: self.calls.append((a, s)),
        )


def test_events_for_a_held_function_or_a_bridge_above_it_start_its_recovery() -> None:
    other = "0000:05:00.0"
    rec = Recorder([NET, other], {NET: (BRIDGE,), other: ("0000:00:1d.0",)})
    handle = rec.watcher.handle
    assert handle(event(NET, "BEGIN_RECOVERY")) == [NET]
    assert handle(event(BRIDGE, "FAILED_RECOVERY", f"/devices/pci0000:00/{BRIDGE}")) == [NET]
    assert rec.calls == [(NET, ChannelState.IO_NORMAL), (NET, ChannelState.IO_PERM_FAILURE)]
    # The kernel recovered it; a function nobody holds; not an error event; not PCI.
    assert handle(event(NET, "SUCCESSFUL_RECOVERY", online=True)) == []
    assert handle(event("0000:07:00.0", "BEGIN_RECOVERY")) == []
    assert handle(b"change@/devices/x\0SUBSYSTEM=pci\0PCI_SLOT_NAME=" + NET.encode()) == []
    assert handle(b"change@/devices/x\0SUBSYSTEM=usb\0ERROR_EVENT=BEGIN_RECOVERY") == []
    assert handle(event(NET, "SOMETHING_NEW")) == []
    assert len(rec.calls) == 2


@needs_e1000e
def test_the_state_comes_from_the_functions_aer_registers() -> None:
    device = SimDevice(NET, Path(E1000E))
    layout = aer_layout()
    found = walk(device.read, device.config_size).extended
    aer = next(cap.offset for cap in found if cap.ident == layout.ident)
    assert channel_state(device) is ChannelState.IO_FROZEN  # nothing logged: assume the worst
    device.config[aer + layout.severity : aer + layout.severity + 4] = (0).to_bytes(4, "little")
    device.config[aer + layout.status : aer + layout.status + 4] = (1 << 14).to_bytes(
        4, "little"
    )  # a completion timeout, non-fatal
    assert channel_state(device) is ChannelState.IO_NORMAL
    device.config[aer + layout.severity : aer + layout.severity + 4] = (1 << 14).to_bytes(
        4, "little"
    )
    assert channel_state(device) is ChannelState.IO_FROZEN
    ids = COMMON_HEADER.VENDOR_ID.offset  # and the device ID
    device.config[ids : ids + 4] = b"\xff\xff\xff\xff"  # gone from the bus
    assert channel_state(device) is ChannelState.IO_PERM_FAILURE


def test_a_sysfs_bus_finds_the_bridges_above_a_function(tmp_path: Path) -> None:
    tree = tmp_path / "devices" / "pci0000:00" / BRIDGE / "0000:02:00.0" / NET
    tree.mkdir(parents=True)
    (tmp_path / "bus").mkdir()
    (tmp_path / "bus" / "devices").mkdir()
    (tmp_path / "bus" / "devices" / NET).symlink_to(tree)
    bus = SysfsBus(tmp_path / "bus")
    assert bus.upstream(NET) == ("0000:02:00.0", BRIDGE)


def wait_until(done: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("handler", [False, True])
@needs_e1000e
def test_the_daemon_recovers_a_guests_function_from_a_kernel_uevent(handler: bool) -> None:
    env = SimEnvironment({NET: SimDevice(NET, Path(E1000E))})
    env.bus.parents[NET] = BRIDGE
    cfg = Config(backend="sim", hide=f"({NET})")
    daemon = Daemon(cfg, env, control=False)
    daemon.start()
    toolstack = SimToolstack(env.store)
    guest = SimDomain(env.store, env.grants, 7, op_timeout=10, pump=daemon.pump)
    try:
        toolstack.create(7, [NET], "vpci")
        daemon.pump()
        guest.boot()
        if handler:
            guest.ops.set_aer_handler(lambda request: int(ErsResult.RECOVERED))
        assert env.uevents is not None
        env.uevents.emit(event(BRIDGE, "FAILED_RECOVERY", f"/devices/pci0000:00/{BRIDGE}"))
        if handler:
            wait_until(lambda: len(guest.ops.aer_requests) >= 1)
            request = guest.ops.aer_requests[0]
            assert (request.cmd, request.state) == (
                Cmd.AER_DETECTED,
                ChannelState.IO_PERM_FAILURE,
            )
        else:  # no handler: the guest is killed, the function reset
            wait_until(lambda: 7 in env.hypervisor.killed)
            assert guest.ops.aer_requests == []
        # Something nobody holds changes nothing.
        env.uevents.emit(event("0000:09:00.0", "BEGIN_RECOVERY", "/devices/pci0000:00/x"))
    finally:
        daemon.stop()
        guest.close()
    assert daemon.aer_events is not None and daemon.aer_events._thread is None  # it stopped


def test_the_netlink_source_times_out_and_closing_it_ends_a_waiting_receive() -> None:
    import threading

    from pciback.ports.uevents import NetlinkUevents

    try:
        source = NetlinkUevents()
    except OSError as exc:  # a sandbox without netlink: the daemon warns and runs without
        pytest.skip(f"no netlink uevent socket here: {exc}")
    got: list[bytes | None] = []
    start = time.monotonic()
    # Only this machine's own kernel events could come: none is a PCI error recovery.
    first = source.receive(0.05)
    assert first is None or parse_uevent(first) is not None
    waiter = threading.Thread(target=lambda: got.append(source.receive(None)))
    waiter.start()
    time.sleep(0.05)
    source.close()
    waiter.join(5)
    assert not waiter.is_alive() and len(got) == 1  # it returned: None, or a real event
    assert time.monotonic() - start < 5
    source.close()  # twice is harmless


def test_one_functions_trouble_costs_the_others_nothing() -> None:
    gone, fine = "0000:05:00.0", NET
    calls: list[str] = []

    def upstream(address: str) -> tuple[str, ...]:
        if address == gone:
            raise KeyError(address)  # its sysfs directory went with the link
        return (BRIDGE,)

    def recover(address: str, state: ChannelState) -> None:
        calls.append(address)
        if address == gone:
            raise OSError("its config cannot be read")

    watcher = AerEvents(
        QueuedUevents(), lambda: [gone, fine], upstream, lambda a: ChannelState.IO_FROZEN, recover
    )
    # A function gone from the bus counts as below the bridge: recovered, not forgotten.
    assert watcher.handle(event(BRIDGE, "FAILED_RECOVERY", f"/devices/pci0000:00/{BRIDGE}")) == [
        gone,
        fine,
    ]
    assert calls == [gone, fine]


def test_the_reader_thread_outlives_a_failing_source(monkeypatch: pytest.MonkeyPatch) -> None:
    import pciback.daemon.aer_events as module

    monkeypatch.setattr(module, "ERROR_PAUSE_S", 0.01)
    handled: list[str] = []

    class Flaky(QueuedUevents):
        failed = False

        def receive(self, timeout: float | None) -> bytes | None:
            if not self.failed:
                self.failed = True
                raise OSError("EBADF, say")
            return super().receive(timeout)

    source = Flaky()
    watcher = AerEvents(
        source,
        lambda: [NET],
        lambda a: (),
        lambda a: ChannelState.IO_NORMAL,
        lambda a, s: handled.append(a),
    )
    watcher.start()
    try:
        source.emit(event(NET, "BEGIN_RECOVERY"))
        wait_until(lambda: handled == [NET])
    finally:
        watcher.stop()
    assert watcher._thread is None
