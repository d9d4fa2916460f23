"""Round trip of a conf_read op through the shared page and the event channel, set against the
floors of this machine, all measured in one run, interleaved over rounds, medians compared:

- two processes passing a token through a pair of eventfds (the floor a backend in its own
  process, as the daemon is to a guest, cannot beat);
- two threads of one interpreter doing the same (what the simulation's two ends, the guest's
  caller and the backend's service thread, pay for their hand-offs: the GIL changes hands);
- the bare transport: the simulated frontend and the backend's service loop over the same page
  and event channel, with a handler that does nothing;
- the conf_read: the same with the real handler (op validation, the config-space engine, the
  simulated device);
- the conf_read with the guest a process of its own (bench/forked_guest.py), as a real guest is
  to dom0: no GIL hand-off between the guest's caller and the service thread, which is the
  simulation's cost, not the backend's. This one is set against the two-process floor.

Every row is measured in each placement of the two ends, pinned: both on one CPU, and (where
the machine has two) the guest's end on one CPU and the backend's on another. The placement
decides most of a round trip here: in a virtual machine a wake-up across CPUs costs tens of
µs (an inter-processor interrupt, a halted vCPU woken by its host), on one CPU a few. Left to
the scheduler, the floor's two processes and the backend's threads are placed differently
from one round to the next, so a floor and an op are only compared in the same placement.

Besides the wall time per op, the backend's own CPU time per op is printed (its service
thread's CPU clock): what of the round trip is the backend's work rather than the simulated
guest's or the hand-offs'. Nothing here asserts a time.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from forked_guest import collect, fork_guest
from required import fixture_or_exit

from pciback.errors import XenPciError
from pciback.protocol.abi import Cmd
from pciback.protocol.ops import OpResult
from pciback.sim import SimGuest, SimHost

ADDR = "0000:03:00.0"
FORKED = "0000:04:00.0"  # the forked guest's own function (passthrough: the same address)
OPS = 2000
ROUNDS = 7
_ONE = (1).to_bytes(8, "little")


@dataclass(frozen=True)
class Placement:
    """Where the two ends of a round trip run: the guest's (the caller) and the backend's."""

    name: str
    guest_cpu: int
    backend_cpu: int

    def pin(self) -> None:
        """Every thread of this process to its side's CPU: the backend's threads (named
        pciback-*) to the backend's, the rest (the caller, the simulated frontends) to the
        guest's. A process or thread started later takes its side's CPU itself (`pin_backend`)
        or inherits the caller's."""
        for thread in threading.enumerate():
            if thread.native_id is not None:
                backend = thread.name.startswith("pciback-")
                cpu = self.backend_cpu if backend else self.guest_cpu
                os.sched_setaffinity(thread.native_id, {cpu})

    def pin_backend(self) -> None:
        """The calling thread or process to the backend's CPU."""
        os.sched_setaffinity(0, {self.backend_cpu})


def placements() -> tuple[Placement, ...]:
    cpus = sorted(os.sched_getaffinity(0))
    one = Placement("one CPU", cpus[0], cpus[0])
    if len(cpus) < 2:
        return (one,)
    return one, Placement("two CPUs", cpus[1], cpus[0])


def eventfd_pair() -> tuple[int, int]:
    return os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)


def echo(ping: int, pong: int, n: int, placement: Placement) -> None:
    """The peer's half of a ping-pong (the backend's end): `n` times, take a token and hand one
    back."""
    placement.pin_backend()
    for _ in range(n):
        os.read(ping, 8)
        os.write(pong, _ONE)


def serve_pings(ping: int, pong: int, n: int) -> float:
    """The caller's half: seconds per token sent and answered."""
    start = time.perf_counter()
    for _ in range(n):
        os.write(ping, _ONE)
        os.read(pong, 8)
    return (time.perf_counter() - start) / n


def process_pingpong(n: int, placement: Placement) -> float:
    ping, pong = eventfd_pair()
    pid = os.fork()
    if pid == 0:  # the peer process: echo, then leave without running any of the parent's code
        try:
            echo(ping, pong, n, placement)
        finally:
            os._exit(0)
    try:
        return serve_pings(ping, pong, n)
    finally:
        os.waitpid(pid, 0)
        os.close(ping)
        os.close(pong)


def thread_pingpong(n: int, placement: Placement) -> float:
    ping, pong = eventfd_pair()
    peer = threading.Thread(target=echo, args=(ping, pong, n, placement))
    peer.start()
    try:
        return serve_pings(ping, pong, n)
    finally:
        peer.join()
        os.close(ping)
        os.close(pong)


class Loop:
    """One path's round trips in one placement: wall and backend CPU seconds per op, a sample
    per round."""

    def __init__(self, guest: SimGuest) -> None:
        self.guest = guest
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, n: int) -> None:
        backend = self.guest.backend
        cpu_before = backend.thread_cpu_ns()
        self.wall.append(self.ops(n))
        cpu_after = backend.thread_cpu_ns()
        if cpu_before is not None and cpu_after is not None:
            self.cpu.append((cpu_after - cpu_before) / 1e9 / n)

    def ops(self, n: int) -> float:
        """`n` conf_reads; seconds per op."""
        raise NotImplementedError


class ForkedGuestLoop(Loop):
    """The conf_read loop made by a forked guest process (its own page and channel); the
    process inherits the caller's CPU, the guest's."""

    def ops(self, n: int) -> float:
        latencies = collect(*fork_guest(self.guest, FORKED, n, 0.0))
        return sum(latencies) / len(latencies) / 1e6


class GuestLoop(Loop):
    """A simulated guest's conf_read loop, its caller a thread of this interpreter."""

    def ops(self, n: int) -> float:
        frontend = self.guest.frontend
        start = time.perf_counter()
        for _ in range(n):
            frontend.do_op(Cmd.CONF_READ, ADDR, offset=0, size=4)
        return (time.perf_counter() - start) / n


def no_op(_: object) -> OpResult:
    return OpResult(XenPciError.SUCCESS, 0)


def median_us(times: list[float]) -> float:
    return statistics.median(times) * 1e6


FLOORS: dict[str, Callable[[int, Placement], float]] = {
    "two processes, eventfd ping-pong": process_pingpong,
    "two threads, eventfd ping-pong": thread_pingpong,
}
PATHS = (
    "bare transport (simulated guest, no-op handler)",
    "conf_read (simulated guest, the real handler)",
    "conf_read (the guest a process of its own)",
)


def main() -> int:
    dump = fixture_or_exit("virtio-net-1af4-1041.bin")
    where = placements()
    floors = {(label, p.name): list[float]() for label in FLOORS for p in where}
    with SimHost() as host:
        host.add_device(ADDR, dump)
        host.add_device(FORKED, dump)
        bare_guest = host.attach(2, [])
        bare_guest.backend.handler = no_op
        guests: tuple[tuple[str, SimGuest, type[Loop]], ...] = (
            (PATHS[0], bare_guest, GuestLoop),
            (PATHS[1], host.attach(1, [ADDR]), GuestLoop),
            (PATHS[2], host.attach(3, [FORKED]), ForkedGuestLoop),
        )
        loops = {(label, p.name): kind(guest) for label, guest, kind in guests for p in where}
        for warm_up in (True, False):
            for _ in range(1 if warm_up else ROUNDS):
                for placement in where:
                    placement.pin()
                    for label, measure in FLOORS.items():
                        floors[label, placement.name].append(
                            measure(200 if warm_up else OPS, placement)
                        )
                    for label in PATHS:
                        loops[label, placement.name].run(200 if warm_up else OPS)
            if warm_up:
                for times in (
                    *floors.values(),
                    *(x for loop in loops.values() for x in (loop.wall, loop.cpu)),
                ):
                    times.clear()
    report(where, floors, loops)
    return 0


def report(
    where: tuple[Placement, ...],
    floors: dict[tuple[str, str], list[float]],
    loops: dict[tuple[str, str], Loop],
) -> None:
    print(
        f"round trips, us per op (median of {ROUNDS} rounds of {OPS}, interleaved), the guest's"
        " and the backend's ends pinned; in brackets the backend's CPU per op"
    )
    print(f"  {'':48s}" + "".join(f"{p.name:>22s}" for p in where))
    for label in FLOORS:
        print(
            f"  {label:48s}" + "".join(f"{median_us(floors[label, p.name]):22.1f}" for p in where)
        )
    for label in PATHS:
        cells = []
        for p in where:
            loop = loops[label, p.name]
            cpu = f" ({median_us(loop.cpu):5.1f})" if loop.cpu else ""
            cells.append(f"{median_us(loop.wall):.1f}{cpu}".rjust(22))
        print(f"  {label:48s}" + "".join(cells))
    worst = 0.0
    for p in where:
        forked = median_us(loops[PATHS[2], p.name].wall)
        floor = median_us(floors["two processes, eventfd ping-pong", p.name])
        sim = median_us(loops[PATHS[1], p.name].wall) / median_us(loops[PATHS[0], p.name].wall)
        worst = max(worst, forked / floor)
        print(
            f"{p.name}: conf_read, the guest a process of its own / two-process floor:"
            f" {forked / floor:.2f}; the simulated guest's conf_read / bare transport: {sim:.2f}"
        )
    print(f"ratio conf_read / two-process floor, worst placement: {worst:.2f} (target <= 4)")


if __name__ == "__main__":
    sys.exit(main())
