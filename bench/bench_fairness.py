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

import os
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from forked_guest import collect, fork_guest
from required import fixture_or_exit

from pciback.sim import SimGuest, SimHost
from pciback.xen.environment import DEFAULT_LINGER_NS

VICTIM, FLOODER = "0000:03:00.0", "0000:04:00.0"
GUEST_ADDRESS = "0000:00:00.0"  # each guest's only function, as its pcifront sees it (vpci)
OPS = 1500
ROUNDS = 3
PAUSE_S = 0.0002
SETTLE_S = 0.05  # the flood's start, before the victim measures


@contextmanager
def flooding(guest: SimGuest) -> Iterator[None]:
    pid, read_end = fork_guest(guest, GUEST_ADDRESS, None, 0.0)
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
            alone.extend(collect(*fork_guest(victim, GUEST_ADDRESS, OPS, PAUSE_S)))
            with flooding(flooder):
                flooded.extend(collect(*fork_guest(victim, GUEST_ADDRESS, OPS, PAUSE_S)))
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
