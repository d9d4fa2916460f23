"""What the pieces of one op cost in this dom0 (under emulation), each measured alone, so the
daemon's service time per op can be split: the engine and protocol code on a simulated device
(no Xen call, no device read: pure interpreter work plus the doorbell's eventfd write), a
libatomic call through cffi (the op path makes two or three), a clock read (the op counters
read it twice for one op in 32, the linger loop once every 32 looks), a system call, and
the interpreter's basics: a Python call, a lock (CPython 3.11 reads the clock at each acquire),
a struct pack; and Xen's notify itself, on an event channel dom0 binds to itself (an ioctl and
a hypercall: what the answer's hand-back costs beyond the simulated doorbell's eventfd write),
by CPU and by wall time. Printed as one LAB-OPCOST line of microseconds per call.

Run by lab/dom0/lib.sh (dom0_costs) with the daemon's own interpreter, after the benchmark.
"""

from __future__ import annotations

import os
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable

from cffi import FFI  # type: ignore[import-untyped]  # no stubs in the dev extra

from pciback.protocol import connection
from pciback.protocol.abi import PAGE_SIZE, Cmd, Flag
from pciback.sim import SimHost
from pciback.sim.fixtures import fixture
from pciback.xen.atomic import AtomicWord

ADDR = "0000:03:00.0"
ROUNDS = 5


def per_call(n: int, fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    """Median over `rounds` of the thread CPU µs per call of `fn` (CPU, not wall: dom0's other
    work does not count)."""
    times = []
    for _ in range(rounds):
        start = time.thread_time_ns()
        for _ in range(n):
            fn()
        times.append((time.thread_time_ns() - start) / n / 1000)
    return statistics.median(times)


def per_call_wall(n: int, fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    """As per_call, in wall time: what a hypercall that waits in Xen costs beyond its CPU."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        times.append((time.perf_counter_ns() - start) / n / 1000)
    return statistics.median(times)


def loopback_notify() -> Callable[[], object] | None:
    """Xen's notify on an interdomain event channel dom0 binds to itself (both ends in this
    process, the receiving end never read, so its port stays masked after the first event, as
    a guest's does while it polls): the same ioctl and hypercall as the daemon's answer. None
    (and a line on stderr) when the library or the device is not there."""
    ffi = FFI()
    ffi.cdef(
        "typedef struct xenevtchn_handle xenevtchn_handle;"
        "xenevtchn_handle *xenevtchn_open(void *logger, unsigned int flags);"
        "int xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid);"
        "int xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid, uint32_t port);"
        "int xenevtchn_notify(xenevtchn_handle *xce, uint32_t port);"
    )
    try:
        lib = ffi.dlopen("libxenevtchn.so.1")
    except OSError as error:
        print(f"opcost: no libxenevtchn ({error})", file=sys.stderr)
        return None
    receiver, sender = lib.xenevtchn_open(ffi.NULL, 0), lib.xenevtchn_open(ffi.NULL, 0)
    if receiver == ffi.NULL or sender == ffi.NULL:
        print("opcost: xenevtchn_open failed", file=sys.stderr)
        return None
    unbound = lib.xenevtchn_bind_unbound_port(receiver, 0)
    port = lib.xenevtchn_bind_interdomain(sender, 0, unbound) if unbound >= 0 else -1
    if port < 0:
        print("opcost: binding a loopback event channel failed", file=sys.stderr)
        return None
    notify, handle = lib.xenevtchn_notify, sender
    kept = (ffi, lib, receiver)  # a collected dlopen'ed library is closed under its callers

    def send() -> object:
        assert kept
        return notify(handle, port)

    send()  # the first event is delivered (and masks the port); the rest stay pending
    return send


def serve_cost(
    offset: int,
    quiet: bool = False,
    general_too: bool = False,
    xen_notify: Callable[[], object] | None = None,
) -> tuple[float, float, float, float, float, float]:
    """CPU µs per conf_read op served by `serve_one` on a simulated copy of a virtio-net
    function: the daemon's way to the engine, the answer and the notify, with nothing waiting
    on the doorbell (as bench/bench_op_cost.py does natively). `quiet`: without its system
    calls (the doorbell's eventfd write, and the op counters' clock reads, two for one op in
    32, system calls where the clock has no vDSO), so the interpreter's part alone (and the
    simulated page's lock, which reads the clock).
    Returns the µs per op by the daemon's way (config ops by the short way), and, when
    `general_too`, by the general way (pciback.daemon.config_ops: dispatch behind the gate),
    measured in rounds interleaved with the first: two boots of the lab differ by up to 2x in
    speed, two interleaved rounds hardly (0.0 when not asked); then, in the same rounds, the
    short way with one bare system call after each op, and the bare system call alone. If an
    op after a system call costs more than the two apart (a PV dom0 switches page tables at
    each system call, which under TCG empties QEMU's TLB and jump cache), the difference is
    what the notify's ioctl costs the next op beyond its own time. With `xen_notify` (and
    `general_too`), in the same rounds: the short way with Xen's notify after each op, and
    that notify alone (0.0 for both otherwise)."""
    with SimHost() as host:
        host.add_device(ADDR, fixture("virtio-net-1af4-1041.bin"))
        guest = host.attach(1, [ADDR])
        conn, page = guest.backend, guest.page
        conn.close()
        guest.frontend.close()
        op = page.info.op
        op.cmd, op.domain, op.bus, op.devfn = Cmd.CONF_READ, 0, 0, 0
        exported = guest.exported(ADDR)
        domain, bus, devfn = (int(x, 16) for x in _split(exported.guest_address))
        op.domain, op.bus, op.devfn, op.offset, op.size = domain, bus, devfn, offset, 4
        flags = page.buffer
        if quiet:
            ticks = iter(range(1 << 62))
            conn.port.notify = lambda: None  # type: ignore[method-assign]
            connection.perf_counter_ns = ticks.__next__  # type: ignore[attr-defined]

        def one() -> None:
            flags[0] = 1 << Flag.PCIF_ACTIVE
            conn.serve_one()

        short_way = conn.config_ops

        def general() -> None:
            conn.config_ops = connection.no_config_ops
            one()

        def short() -> None:
            conn.config_ops = short_way
            one()

        syscall = os.getppid

        def short_then_syscall() -> None:
            conn.config_ops = short_way
            one()
            syscall()

        def short_then_xen() -> None:
            conn.config_ops = short_way
            one()
            if xen_notify is not None:
                xen_notify()

        xen_alone = xen_notify if xen_notify is not None else syscall

        try:
            one()
            if int(op.err) != 0:
                raise SystemExit(f"opcost: the simulated op failed (err {int(op.err)})")
            if not general_too:
                return per_call(300, one), 0.0, 0.0, 0.0, 0.0, 0.0
            variants = [short, general, short_then_syscall, syscall, short_then_xen, xen_alone]
            rounds: list[list[float]] = [[] for _ in variants]
            for _ in range(ROUNDS):
                for times, fn in zip(rounds, variants, strict=True):
                    times.append(per_call(300, fn, rounds=1))
            short_us, general_us, both_us, syscall_us, xen_both_us, xen_us = map(
                statistics.median, rounds
            )
            if xen_notify is None:
                xen_both_us = xen_us = 0.0
            return short_us, general_us, both_us, syscall_us, xen_both_us, xen_us
        finally:
            connection.perf_counter_ns = time.perf_counter_ns  # type: ignore[attr-defined]


def _split(address: str) -> tuple[str, str, str]:
    domain, bus, rest = address.split(":")
    slot, function = rest.split(".")
    return domain, bus, f"{int(slot, 16) << 3 | int(function, 16):x}"


def config_reads(address: str = "0000:00:03.0") -> dict[str, float]:
    """A physical config read of the lab's e1000e (its identity dword) both ways: a pread of
    its sysfs config file, and a load from its ECAM page where the daemon would use one."""
    from pciback.generated.names import COMMON_HEADER
    from pciback.xen.ecam import EcamMap
    from pciback.xen.sysfs import SysfsBus

    at = COMMON_HEADER.VENDOR_ID.offset
    try:
        plain = SysfsBus().device(address)
        mapped = SysfsBus(ecam=EcamMap.from_system()).device(address)
    except KeyError:
        return {}
    figures = {"sysfs_read_us": per_call(300, lambda: plain.read(at, 4))}
    if mapped.reads_by == "ecam":
        figures["ecam_read_us"] = per_call(300, lambda: mapped.read(at, 4))
    return figures


def primitives() -> dict[str, float]:
    """What the op path does many times, each in a loop of its own (µs per call): a Python
    call doing nothing, a lock taken and released, a struct pack into a buffer."""
    lock = threading.Lock()
    buffer = bytearray(64)
    pack = struct.Struct("<I").pack_into

    def nothing() -> None:
        pass

    def locked() -> None:
        with lock:
            pass

    def packed() -> None:
        pack(buffer, 4, 7)

    return {
        "call_us": per_call(3000, nothing),
        "lock_us": per_call(3000, locked),
        "pack_us": per_call(3000, packed),
    }


def main() -> None:
    word = AtomicWord(bytearray(PAGE_SIZE))
    load = word.loader()
    xen_notify = loopback_notify()
    quiet, quiet_general, quiet_syscall, syscall_alone, quiet_xen, xen_alone = serve_cost(
        0x00, quiet=True, general_too=True, xen_notify=xen_notify
    )
    xen = {}
    if xen_notify is not None:
        xen = {
            "serve_quiet_xen_us": quiet_xen,  # the short way, then Xen's notify
            "xen_notify_interleaved_us": xen_alone,  # that notify alone, in the same rounds
            "xen_notify_us": per_call(300, xen_notify),
            "xen_notify_wall_us": per_call_wall(300, xen_notify),
            "syscall_wall_us": per_call_wall(300, os.getppid),
        }
    figures = {
        "serve_cached_us": serve_cost(0x00)[0],  # vendor/device IDs: read once at seize
        "serve_live_us": serve_cost(0x04)[0],  # command/status: the simulated device is read
        "serve_quiet_us": quiet,  # the cached read, no system call
        "serve_quiet_general_us": quiet_general,  # the same by the general way, interleaved
        "serve_quiet_syscall_us": quiet_syscall,  # the short way, then a bare system call
        "syscall_interleaved_us": syscall_alone,  # that system call alone, in the same rounds
        "atomic_us": per_call(3000, load),
        "clock_us": per_call(3000, time.perf_counter_ns),
        "syscall_us": per_call(300, os.getppid),
        **xen,
        **config_reads(),
        **primitives(),
    }
    print("LAB-OPCOST " + " ".join(f"{k}={v:.2f}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
