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


def eventfd_pair() -> tuple[int, int]:
    return os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)


def echo(ping: int, pong: int, n: int) -> None:
    """The peer's half of a ping-pong: `n` times, take a token and hand one back."""
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


def process_pingpong(n: int) -> float:
    ping, pong = eventfd_pair()
    pid = os.fork()
    if pid == 0:  # the peer process: echo, then leave without running any of the parent's code
        try:
            echo(ping, pong, n)
        finally:
            os._exit(0)
    try:
        return serve_pings(ping, pong, n)
    finally:
        os.waitpid(pid, 0)
        os.close(ping)
        os.close(pong)


def thread_pingpong(n: int) -> float:
    ping, pong = eventfd_pair()
    peer = threading.Thread(target=echo, args=(ping, pong, n))
    peer.start()
    try:
        return serve_pings(ping, pong, n)
    finally:
        peer.join()
        os.close(ping)
        os.close(pong)


class ForkedGuestLoop:
    """The same conf_read loop made by a forked guest process (its own page and channel)."""

    def __init__(self, guest: SimGuest) -> None:
        self.guest = guest
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, n: int) -> None:
        backend = self.guest.backend
        cpu_before = backend.thread_cpu_ns()
        latencies = collect(*fork_guest(self.guest, ADDR, n, 0.0))
        self.wall.append(sum(latencies) / len(latencies) / 1e6)
        cpu_after = backend.thread_cpu_ns()
        if cpu_before is not None and cpu_after is not None:
            self.cpu.append((cpu_after - cpu_before) / 1e9 / n)


class GuestLoop:
    """A simulated guest's conf_read loop, with its backend's service-thread CPU per op."""

    def __init__(self, guest: SimGuest) -> None:
        self.guest = guest
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, n: int) -> None:
        backend, frontend = self.guest.backend, self.guest.frontend
        cpu_before = backend.thread_cpu_ns()
        start = time.perf_counter()
        for _ in range(n):
            frontend.do_op(Cmd.CONF_READ, ADDR, offset=0, size=4)
        self.wall.append((time.perf_counter() - start) / n)
        cpu_after = backend.thread_cpu_ns()
        if cpu_before is not None and cpu_after is not None:
            self.cpu.append((cpu_after - cpu_before) / 1e9 / n)


def no_op(_: object) -> OpResult:
    return OpResult(XenPciError.SUCCESS, 0)


def median_us(times: list[float]) -> float:
    return statistics.median(times) * 1e6


def main() -> int:
    dump = fixture_or_exit("virtio-net-1af4-1041.bin")
    floors: dict[str, tuple[Callable[[int], float], list[float]]] = {
        "two processes, eventfd ping-pong": (process_pingpong, []),
        "two threads, eventfd ping-pong": (thread_pingpong, []),
    }
    with SimHost() as host:
        host.add_device(ADDR, dump)
        host.add_device(FORKED, dump)
        real = GuestLoop(host.attach(1, [ADDR]))
        bare = GuestLoop(host.attach(2, []))
        bare.guest.backend.handler = no_op
        forked = ForkedGuestLoop(host.attach(3, [FORKED]))
        paths: tuple[GuestLoop | ForkedGuestLoop, ...] = (real, bare, forked)
        for path in paths:  # warm up every path
            path.run(200)
        for measure, _ in floors.values():
            measure(200)
        for path in paths:
            path.wall.clear()
            path.cpu.clear()
        for _ in range(ROUNDS):
            for measure, times in floors.values():
                times.append(measure(OPS))
            for path in paths:
                path.run(OPS)
    floor_us = median_us(floors["two processes, eventfd ping-pong"][1])
    print(f"round trips, us per op (median of {ROUNDS} rounds of {OPS}, interleaved)")
    for label, (_, times) in floors.items():
        print(f"  {label:44s} {median_us(times):7.1f}")
    for label, path in (
        ("bare transport (simulated guest, no-op handler)", bare),
        ("conf_read (simulated guest, the real handler)", real),
        ("conf_read (the guest a process of its own)", forked),
    ):
        cpu = f"   backend CPU {median_us(path.cpu):5.1f}" if path.cpu else ""
        print(f"  {label:44s} {median_us(path.wall):7.1f}{cpu}")
    print(f"ratio conf_read / two-process floor: {median_us(real.wall) / floor_us:.2f}")
    print(f"ratio conf_read / bare transport:    {median_us(real.wall) / median_us(bare.wall):.2f}")
    print(
        "ratio conf_read, guest in its own process / two-process floor:"
        f" {median_us(forked.wall) / floor_us:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
