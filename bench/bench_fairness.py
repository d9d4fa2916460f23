"""Fairness between guests: the op latency one guest sees, alone and while another guest floods
the backend with ops back to back, as the ratio of its 99th percentiles (flooded / alone).

Each guest's kernel is played by a forked process working on the guest's shared page (shared
memory) and event channel (eventfds) with nothing but system calls, so that this interpreter
runs only the backend, as a dom0 daemon does: a guest thread in here would compete with the
service threads for the interpreter and measure the simulation, not the backend. The victim
reads the vendor/device dword every PAUSE_S; the flooder reads it back to back. Both run on
the daemon's simulated data path, once as the simulation serves (no lingering) and once with
the lingering window of the Xen data path (pciback.protocol.linger), interleaved over rounds.
Nothing here asserts a time.
"""

from __future__ import annotations

import array
import os
import select
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from required import fixture_or_exit

from pciback.protocol.abi import FLAGS_OFFSET, FLAGS_SIZE, OP_OFFSET, OP_SIZE, Cmd
from pciback.protocol.transport import OP_PENDING
from pciback.sim import SimGuest, SimHost
from pciback.sim.frontend import op_bytes
from pciback.xen.environment import DEFAULT_LINGER_NS

VICTIM, FLOODER = "0000:03:00.0", "0000:04:00.0"
GUEST_ADDRESS = "0000:00:00.0"  # each guest's only function, as its pcifront sees it (vpci)
OPS = 1500
ROUNDS = 3
PAUSE_S = 0.0002
SETTLE_S = 0.05  # the flood's start, before the victim measures
_ONE = (1).to_bytes(8, "little")


def guest_loop(guest: SimGuest, count: int | None, pause: float) -> array.array[float]:
    """What the forked guest kernel does: `count` conf_reads (None: until killed), each posted
    on the page, notified, and waited for on the guest's event channel; their latencies (µs)."""
    buffer = guest.page.buffer
    flags = memoryview(buffer)[FLAGS_OFFSET : FLAGS_OFFSET + FLAGS_SIZE].cast("I")
    own, backend = guest.channel.frontend.fileno(), guest.channel.backend.fileno()
    op = op_bytes(Cmd.CONF_READ, GUEST_ADDRESS, offset=0, size=4)
    poller = select.poll()
    poller.register(own, select.POLLIN)
    latencies = array.array("d")
    done = 0
    while count is None or done < count:
        start = time.perf_counter_ns()
        buffer[OP_OFFSET : OP_OFFSET + OP_SIZE] = op
        flags[0] |= OP_PENDING  # the backend clears it only once it is set: no race on it
        os.write(backend, _ONE)
        while flags[0] & OP_PENDING:
            poller.poll()
            with suppress(BlockingIOError):  # the backend's ring taken by an earlier read
                os.read(own, 8)
        latencies.append((time.perf_counter_ns() - start) / 1000)
        done += 1
        if pause:
            time.sleep(pause)
    return latencies


def fork_guest(guest: SimGuest, count: int | None, pause: float) -> tuple[int, int]:
    """(pid, the read end of a pipe that gets the latencies when the guest is done)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the guest's kernel: system calls only, nothing of the parent's threads
        code = 1
        try:
            os.close(read_end)
            data = guest_loop(guest, count, pause).tobytes()
            with os.fdopen(write_end, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    return pid, read_end


def collect(pid: int, read_end: int) -> array.array[float]:
    with os.fdopen(read_end, "rb") as source:
        data = source.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("bench_fairness: a guest process failed")
    latencies = array.array("d")
    latencies.frombytes(data)
    return latencies


@contextmanager
def flooding(guest: SimGuest) -> Iterator[None]:
    pid, read_end = fork_guest(guest, None, 0.0)
    time.sleep(SETTLE_S)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def measure(linger_ns: int, dump: object) -> tuple[list[float], list[float]]:
    """The victim's latencies alone and flooded, over ROUNDS interleaved rounds."""
    alone: list[float] = []
    flooded: list[float] = []
    with SimHost() as host:
        host.daemon.datapath.linger_ns = linger_ns
        for address in (VICTIM, FLOODER):
            host.add_device(address, dump)  # type: ignore[arg-type]
        victim = host.attach(1, [VICTIM], mode="vpci")
        flooder = host.attach(2, [FLOODER], mode="vpci")
        for _ in range(ROUNDS):
            alone.extend(collect(*fork_guest(victim, OPS, PAUSE_S)))
            with flooding(flooder):
                flooded.extend(collect(*fork_guest(victim, OPS, PAUSE_S)))
    return alone, flooded


def main() -> int:
    dump = fixture_or_exit("virtio-net-1af4-1041.bin")
    print(
        f"a guest's conf_read latency (us), one op every {PAUSE_S * 1e6:.0f} us, alone and while"
        f" another guest floods ({ROUNDS} rounds of {OPS} ops each, interleaved)"
    )
    print(
        f"  {'service':34s} {'alone p50':>9s} {'p99':>7s} {'flooded p50':>11s} {'p99':>7s}  ratio"
    )
    for label, linger_ns in (
        ("no lingering (the simulation's)", 0),
        (f"lingering up to {DEFAULT_LINGER_NS // 1000} us (Xen's)", DEFAULT_LINGER_NS),
    ):
        alone, flooded = measure(linger_ns, dump)
        print(
            f"  {label:34s} {statistics.median(alone):9.1f} {p99(alone):7.1f}"
            f" {statistics.median(flooded):11.1f} {p99(flooded):7.1f}"
            f"  {p99(flooded) / p99(alone):5.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
