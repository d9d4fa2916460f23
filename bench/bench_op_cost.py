"""What one guest op costs the daemon: CPU per op of `serve_one`, system calls per op of the Xen
event-channel path, and the interpreter work per op.

1. CPU: the data path the daemon builds (the op handler with its locks, dispatch, the
   config-space engine on a simulated device) behind one connection, served by `serve_one` in
   a loop on this thread, with nobody waiting on the guest's doorbell. Thread CPU time
   (CLOCK_THREAD_CPUTIME_ID) and wall time per op, medians (and best) of several rounds.
2. System calls: the same handler behind a `XenEventPort` and a `XenSharedPage`, the Xen
   libraries replaced by stand-ins that count their calls as the system calls libxenevtchn
   makes for them (xenevtchn_pending: read(2), xenevtchn_unmask: write(2), xenevtchn_notify:
   ioctl(2)); the daemon's own select/poll/read/write are counted by wrapping them. One op per
   wake-up, as pcifront sends them: the guest posts an op when the service thread has gone to
   sleep, sends its event, and waits for the answer; "ahead" counts the system calls made
   between the guest's event and the notify that answers it. Then the CPU per op of that
   whole path (wait and process_pending) with the stand-ins, uncounted.
3. Interpreter work: the Python frames, C calls and source lines one op runs through on the Xen
   path (found by the service loop, served, answered), counted by sys.settrace/setprofile. The
   count is the same on every machine; under emulation (the lab's dom0 under TCG: 1-2 µs per
   Python call, tens of µs per cold line) it is what the op's service time follows. Averaged
   over the ops of one timing period (one op in TIME_EVERY reads the clock). Among the C calls,
   the clock reads and the locks taken: in a PV dom0 the clock has no vDSO, so each read is a
   system call, and CPython 3.11 reads the clock at every lock acquire (42 µs a lock in the
   lab's dom0, against 0.6 µs for a Python call).

In a PV dom0 each system call goes through the hypervisor; libatomic calls are not system
calls (a locked instruction), but each is a foreign call, so they are counted too. Device
config reads are listed apart: on Xen each is a pread(2) of the device's sysfs config file, and
Linux's backend does the same config cycle without the system call. Nothing here asserts a
time; the numbers are for a before/after comparison made on one machine.
"""

from __future__ import annotations

import os
import select
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from required import fixture_or_exit

from pciback.control.hide import parse_address
from pciback.protocol.abi import PAGE_SIZE, Cmd, Flag
from pciback.protocol.connection import TIME_EVERY, BackendConnection, no_config_ops
from pciback.protocol.transport import SharedPage
from pciback.sim import SimGuest, SimHost

ADDR = "0000:03:00.0"
OPS = 5000
ROUNDS = 7
# (label, cmd, offset, size, value): a read of cached registers, a read of live (hw) registers,
# a write of a shadowed register (it puts back what is there: every round does the same work).
OPS_MEASURED = (
    ("conf_read  0x00/4 (cached)", Cmd.CONF_READ, 0x00, 4, 0),
    ("conf_read  0x04/4 (hw)", Cmd.CONF_READ, 0x04, 4, 0),
    ("conf_write 0x3c/1 (shadow)", Cmd.CONF_WRITE, 0x3C, 1, 0x0B),
)


def post(page: SharedPage, guest: SimGuest, cmd: int, offset: int, size: int, value: int) -> None:
    """Write the op into the page as pcifront would (the active bit is raised by the caller)."""
    domain, bus, slot, function = parse_address(guest.devices[0])
    op = page.info.op
    op.cmd, op.domain, op.bus, op.devfn = cmd, domain, bus, slot << 3 | function
    op.offset, op.size, op.value, op.info = offset, size, value, 0


# -- 1. CPU per op -------------------------------------------------------------------------------
def cpu_per_op(conn: BackendConnection, page: SharedPage) -> tuple[float, float, float]:
    """Thread CPU µs per op (median and best round) and wall µs per op (median), over ROUNDS
    rounds of OPS ops: on a shared machine the best round is the steadier figure."""
    flags = page.buffer  # the sim page is a bytearray; byte 0 holds _XEN_PCIF_active
    serve = conn.serve_one
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(ROUNDS):
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        for _ in range(OPS):
            flags[0] = 1
            serve()
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        cpu.append((c1 - c0) / OPS / 1000)
        wall.append((w1 - w0) / OPS / 1000)
    return statistics.median(cpu), min(cpu), statistics.median(wall)


def bench_cpu(guest: SimGuest) -> None:
    conn, page = guest.backend, guest.page
    # Served here, on this thread: the service thread and the guest's interrupt thread stop,
    # so a notify rings a doorbell nobody waits on (no thread switch in the measurement).
    conn.close()
    guest.frontend.close()
    print(f"serve_one, natively: CPU and wall time per op ({ROUNDS} rounds of {OPS})")
    for label, cmd, offset, size, value in OPS_MEASURED:
        post(page, guest, cmd, offset, size, value)
        cpu_per_op(conn, page)  # warm up: plans, caches
        assert int(page.info.op.err) == 0, f"{label}: err {int(page.info.op.err)}"
        cpu, best, wall = cpu_per_op(conn, page)
        print(
            f"  {label:28s} CPU {cpu:6.2f} us/op (best round {best:6.2f})   wall {wall:6.2f} us/op"
        )


# -- 2. system calls per op ---------------------------------------------------------------------
_real_read, _real_write, _real_select, _real_poll = os.read, os.write, select.select, select.poll


class Calls:
    """Counts by name, and how many system calls each op made before its answer went out (its
    notify, the ioctl): the ones the waiting guest waits for."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.on = False
        self.answered = False

    def start_op(self) -> None:
        self.on, self.answered = True, False

    def count(self, name: str) -> None:
        if not self.on:
            return
        self.counts[name] += 1
        if name == "ioctl":
            self.answered = True
        elif name != "libatomic" and not self.answered:
            self.counts["ahead of the answer"] += 1


CALLS = Calls()


class CountingEvtchn:
    """libxenevtchn on one handle: the fd is an eventfd the "hypervisor" (this bench) writes to
    when the guest sends its event; blocking, as /dev/xen/evtchn is opened."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC)
        self.port = 40
        # As dom0's kernel: a delivered event masks the port; one sent meanwhile is held and
        # delivered at the unmask.
        self.masked = False
        self.held = False

    def xenevtchn_open(self, logger: Any, flags: int) -> object:
        return self

    def xenevtchn_fd(self, xce: Any) -> int:
        return self.fd

    def xenevtchn_bind_interdomain(self, xce: Any, domid: int, remote: int) -> int:
        return self.port

    def xenevtchn_pending(self, xce: Any) -> int:
        CALLS.count("read")
        _real_read(self.fd, 8)
        return self.port

    def xenevtchn_unmask(self, xce: Any, port: int) -> int:
        CALLS.count("write")
        self.masked = False
        if self.held:
            self.held = False
            self.send()
        return 0

    def xenevtchn_notify(self, xce: Any, port: int) -> int:
        CALLS.count("ioctl")
        return 0

    def xenevtchn_unbind(self, xce: Any, port: int) -> int:
        return 0

    def xenevtchn_close(self, xce: Any) -> int:
        os.close(self.fd)
        return 0

    def send(self) -> None:
        """The guest's notify reaching dom0's kernel: the fd becomes readable."""
        if self.masked:
            self.held = True
        else:
            self.masked = True
            _real_write(self.fd, (1).to_bytes(8, "little"))


class CountingAtomics:
    """libatomic, each call counted (a foreign call, not a system call)."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib

    def __getattr__(self, name: str) -> Callable[..., Any]:
        function = getattr(self._lib, name)

        def call(*args: Any) -> Any:
            CALLS.count("libatomic")
            return function(*args)

        return call


class CountingPoll:
    def __init__(self) -> None:
        self._poll = _real_poll()

    def register(self, fd: int, mask: int = select.POLLIN | select.POLLPRI) -> None:
        self._poll.register(fd, mask)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        going_to_sleep(timeout)
        CALLS.count("poll/select")
        return self._poll.poll(timeout)


def _counting_select(*args: Any) -> Any:
    going_to_sleep(args[3] if len(args) > 3 else None)
    CALLS.count("poll/select")
    return _real_select(*args)


# The guest's next op, posted when the service thread goes to sleep for it (as a guest does that
# is slower than the backend's last system calls of the op before), rather than before the
# thread's wait: what the thread does on its way to sleep is then not ahead of the answer.
SLEEPING: list[Callable[[], None]] = []


def going_to_sleep(timeout: float | None) -> None:
    if timeout is None and SLEEPING:
        SLEEPING.pop()()
        CALLS.start_op()


def _counting_read(fd: int, n: int) -> bytes:
    CALLS.count("read")
    return _real_read(fd, n)


def _counting_write(fd: int, data: Any) -> int:
    CALLS.count("write")
    return _real_write(fd, data)


@contextmanager
def counting_syscalls() -> Iterator[None]:
    """The daemon's own select/poll/read/write counted (the stand-ins count theirs)."""
    patches = [
        (os, "read", _counting_read),
        (os, "write", _counting_write),
        (select, "select", _counting_select),
        (select, "poll", CountingPoll),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, replacement in patches:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


class XenRig:
    """The guest's connection's handler behind a XenSharedPage and a XenEventPort on stand-ins;
    `op()` is one guest op: raise the active bit, send the event, and the service thread's
    wake-up (wait, then process_pending)."""

    def __init__(self, guest: SimGuest, lib: Any) -> None:
        from pciback.xen import atomic
        from pciback.xen.evtchn import XenEventPort
        from pciback.xen.gnttab import XenSharedPage

        self.fake = CountingEvtchn()
        buffer = bytearray(PAGE_SIZE)
        self.page = XenSharedPage(buffer)
        self.port = XenEventPort(1, 7, lib=self.fake)
        backend = guest.backend
        self.conn = BackendConnection(1, self.page, self.port, backend.devices, backend.handler)
        self.conn.config_ops = backend.config_ops  # the short way for config ops, as the daemon's
        self._word = atomic.word_of(buffer)
        self._fetch_or = getattr(lib, "__atomic_fetch_or_4")  # a class body would mangle it
        self._active = 1 << Flag.PCIF_ACTIVE
        self._model = atomic.SEQ_CST

    def guest_posts(self) -> None:
        self._fetch_or(self._word, self._active, self._model)  # as pcifront's set_bit
        self.fake.send()

    def wake_up(self) -> None:
        self.port.wait(None)
        self.conn.process_pending()

    def close(self) -> None:
        self.port.close()


def bench_syscalls(guest: SimGuest) -> None:
    from pciback.xen import atomic
    from pciback.xen._loader import XenUnavailable

    try:
        real_atomics = atomic.library()
    except XenUnavailable as exc:
        print(f"Xen event port path: skipped ({exc})")
        return
    device = guest.exported(ADDR).physical
    device_reads = Counter[str]()
    real_device_read = device.read

    def counted_device_read(offset: int, size: int) -> int:
        if CALLS.on:
            device_reads["pread"] += 1
        return real_device_read(offset, size)

    rounds = 200
    print(
        f"system calls per op, Xen event port path with counting stand-ins ({rounds} ops; ahead:"
        " those made before the op's answer was notified, which the guest waits for)"
    )
    print(
        f"  {'op':28s} {'poll/select':>11s} {'read':>5s} {'write':>5s} {'ioctl':>5s}"
        f" {'total':>6s} {'ahead':>7s} {'+pread':>7s} {'libatomic':>10s}"
    )
    device.read = counted_device_read  # type: ignore[method-assign]
    atomic._lib = CountingAtomics(real_atomics)  # before the page binds its atomics
    try:
        with counting_syscalls():
            rig = XenRig(guest, real_atomics)
            try:
                for label, cmd, offset, size, value in OPS_MEASURED:
                    post(rig.page, guest, cmd, offset, size, value)
                    CALLS.counts.clear()
                    device_reads.clear()
                    CALLS.on = True
                    for _ in range(rounds):
                        SLEEPING.append(rig.guest_posts)
                        rig.wake_up()
                    CALLS.on = False
                    err = int(rig.page.info.op.err)
                    assert err == 0, f"{label}: err {err}"
                    c = {k: v / rounds for k, v in CALLS.counts.items()}
                    syscalls = sum(c.get(k, 0) for k in ("poll/select", "read", "write", "ioctl"))
                    print(
                        f"  {label:28s} {c.get('poll/select', 0):11.1f} {c.get('read', 0):5.1f}"
                        f" {c.get('write', 0):5.1f} {c.get('ioctl', 0):5.1f} {syscalls:6.1f}"
                        f" {c.get('ahead of the answer', 0):7.1f}"
                        f" {device_reads['pread'] / rounds:7.1f} {c.get('libatomic', 0):10.1f}"
                    )
            finally:
                CALLS.on = False
                rig.close()
    finally:
        atomic._lib = real_atomics
        device.read = real_device_read  # type: ignore[method-assign]

    print(
        f"Xen event port path, CPU per op ({ROUNDS} rounds of {OPS // 5}; the stand-ins' "
        "eventfd write and read included)"
    )
    rig = XenRig(guest, real_atomics)
    try:
        for label, cmd, offset, size, value in OPS_MEASURED:
            post(rig.page, guest, cmd, offset, size, value)
            cpu: list[float] = []
            for _ in range(ROUNDS):
                c0 = time.thread_time_ns()
                for _ in range(OPS // 5):
                    rig.guest_posts()
                    rig.wake_up()
                cpu.append((time.thread_time_ns() - c0) / (OPS // 5) / 1000)
            print(
                f"  {label:28s} CPU {statistics.median(cpu):6.2f} us/op "
                f"(best round {min(cpu):6.2f})"
            )
    finally:
        rig.close()


# -- 3. interpreter work per op ------------------------------------------------------------------
# C calls that read the clock: in a PV dom0 the clock has no vDSO, and each read is a system
# call. Taking a threading.Lock is one too: CPython 3.11 reads the clock at every acquire.
_CLOCK_READS = {"perf_counter_ns", "perf_counter", "monotonic", "monotonic_ns", "time", "time_ns"}
_LOCK_TAKES = {"acquire", "__enter__"}


def count_work(serve: Callable[[], object]) -> tuple[int, int, int, int, int]:
    """Python frames, C calls and source lines one call of `serve` runs through (sys.settrace
    and sys.setprofile events): the same on every machine. Under emulation (the lab's dom0
    under TCG) each line costs tens of µs, so this, not native CPU time, predicts there. Then,
    among the C calls, the clock reads and the locks taken."""
    counts = Counter[str]()

    def profile(frame: Any, event: str, arg: Any) -> None:
        counts[event] += 1
        if event == "c_call":
            name = getattr(arg, "__name__", "")
            if name in _CLOCK_READS:
                counts["clock"] += 1
            elif name in _LOCK_TAKES and "lock" in type(getattr(arg, "__self__", None)).__name__:
                counts["lock"] += 1

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            counts["line"] += 1
        return trace

    sys.setprofile(profile)
    sys.settrace(trace)
    try:
        serve()
    finally:
        sys.settrace(None)
        sys.setprofile(None)
    return counts["call"], counts["c_call"], counts["line"], counts["clock"], counts["lock"]


def bench_interpreter_work(guest: SimGuest) -> None:
    from pciback.xen import atomic
    from pciback.xen._loader import XenUnavailable

    try:
        real_atomics = atomic.library()
    except XenUnavailable as exc:
        print(f"interpreter work per op: skipped ({exc})")
        return
    print(
        "interpreter work per op, Xen path (the op found by the service loop, served, answered;"
        " real libatomic, stand-in event channel), by the daemon's short way for config ops"
        " and by the general way (dispatch) for comparison"
    )
    print(
        f"  {'op':40s} {'frames':>7s} {'C calls':>8s} {'lines':>6s}"
        f" {'clock reads':>12s} {'locks':>6s}"
    )
    rig = XenRig(guest, real_atomics)
    short_way = rig.conn.config_ops
    try:
        for label, cmd, offset, size, value in OPS_MEASURED:
            post(rig.page, guest, cmd, offset, size, value)
            for way, config_ops in (("", short_way), (" by dispatch", no_config_ops)):
                rig.conn.config_ops = config_ops
                frames, c_calls, lines, clocks, locks = work_per_op(rig)
                print(
                    f"  {label + way:40s} {frames:7.1f} {c_calls:8.1f} {lines:6.1f}"
                    f" {clocks:12.2f} {locks:6.2f}"
                )
    finally:
        rig.close()


def work_per_op(rig: XenRig) -> tuple[float, ...]:
    """count_work's figures per op, averaged over one timing period."""
    for _ in range(2):  # warm up: plans, caches
        rig.guest_posts()
        rig.wake_up()
    totals = [0] * 5
    for _ in range(TIME_EVERY):  # one of them timed: the counts are per op on average
        rig.guest_posts()
        rig.port.wait(None)  # the wake-up itself is not the op's work
        for i, n in enumerate(count_work(rig.conn.process_pending)):
            totals[i] += n
    return tuple(n / TIME_EVERY for n in totals)


def main() -> int:
    dump = fixture_or_exit("virtio-net-1af4-1041.bin")
    with SimHost() as host:
        host.add_device(ADDR, dump)
        guest = host.attach(1, [ADDR])
        bench_cpu(guest)
        bench_syscalls(guest)
        bench_interpreter_work(guest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
