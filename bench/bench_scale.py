"""Growth with the number of guests and devices, measured in one run on one simulated host.

At each level N (1, 16, 128, 1024 guests by default) it prints the cost of attaching the Nth
guest, of destroying one guest while N are running, and of adding the Nth device to the pool
(it appears on the bus, its slot is added, it is seized), each as the
median of a few samples and as a ratio to the first level. Flat ratios mean nothing grows with
the number of guests; a ratio that grows with N is quadratic behaviour in total. Every guest
attached is read through its page once, so a guest the backend silently stopped serving (a
service thread that died) stops the run. It prints; it asserts no time.

Each guest costs two descriptors (its event channel's two doorbells), so 1024 guests need more
than 2048 descriptors and put some above 1023, where select() fails.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

from required import fixture_or_exit

from pciback.dumps import load_config
from pciback.generated.names import COMMON_HEADER
from pciback.sim import SimHost

VENDOR_ID = COMMON_HEADER.VENDOR_ID


DUMP = "virtio-net-1af4-1041.bin"
LEVELS = (1, 16, 128, 1024)
SAMPLES = 7  # attaches (then destroyed again) and device additions measured at each level
FIRST_BUS = 0x10
SPARES = 3000  # index of the first device used only for the timed attaches (bus 0x6d on)


def address(index: int) -> str:
    return f"0000:{FIRST_BUS + index // 32:02x}:{index % 32:02x}.0"


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def spread(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{min(ms):7.2f} {statistics.median(ms):7.2f} {max(ms):7.2f}"


class Run:
    def __init__(self, host: SimHost, dump: bytes, expect: int) -> None:
        self.host = host
        self.dump = dump
        self.expect = expect  # vendor/device dword every guest must read back
        self.devices = 0
        self.next_domid = 1

    def add_device(self) -> float:
        """A function appears on the bus and is put in the pool (a slot, then seized)."""
        where = address(self.devices)
        self.devices += 1

        def add() -> None:
            self.host.add_device(where, self.dump)
            self.host.hide(f"({where})")

        return timed(add)

    def attach(self, device: str) -> tuple[int, float]:
        domid = self.next_domid
        self.next_domid += 1
        took = timed(lambda: self.host.attach(domid, [device]))
        guest = self.host.guest(domid)
        got = guest.conf_read(guest.devices[0], VENDOR_ID.offset, 4)
        if got != self.expect:
            raise SystemExit(f"bench_scale: guest {domid} read {got:#x}, not {self.expect:#x}")
        return domid, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--levels",
        default=",".join(map(str, LEVELS)),
        help="guest counts, ascending (default %(default)s)",
    )
    args = parser.parse_args()
    levels = sorted({int(n) for n in args.levels.split(",") if n.strip()})
    if not levels or levels[0] < 1:
        parser.error("--levels: positive guest counts, e.g. 1,16,128")
    path = fixture_or_exit(DUMP)
    dump = load_config(path).config
    expect = int.from_bytes(dump[0:4], "little")
    need = 2 * levels[-1] + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    rows: list[tuple[int, list[float], list[float], list[float]]] = []
    with SimHost() as host:
        run = Run(host, dump, expect)
        warm = address(SPARES + SAMPLES)  # a device of its own, outside the counts
        host.add_device(warm, dump)
        domid, _ = run.attach(warm)
        host.destroy_guest(domid)
        spares = [address(SPARES + i) for i in range(SAMPLES)]
        running: list[int] = []
        for level in levels:
            adds: list[float] = []
            while run.devices < level - 1:
                run.add_device()
            for _ in range(SAMPLES):  # the device count passes `level` here
                adds.append(run.add_device())
            while len(running) < level - 1:
                running.append(run.attach(address(len(running)))[0])
            # The Nth guest: attached on a spare device, timed, destroyed again; and the cost
            # of destroying one guest while N run.
            attaches: list[float] = []
            destroys: list[float] = []
            for spare in spares:
                if spare not in host.env.devices:
                    host.add_device(spare, dump)
                domid, took = run.attach(spare)
                attaches.append(took)
                destroys.append(timed(partial(host.destroy_guest, domid)))
            rows.append((level, attaches, destroys, adds))
            print(f"  {level:5d} guests attached and served", file=sys.stderr)
        start = time.perf_counter()
        for domid in running:
            host.destroy_guest(domid)
        teardown = time.perf_counter() - start
        fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1
    base_attach, base_destroy, base_add = (statistics.median(r) for r in rows[0][1:])
    print(f"growth with guests and devices ({SAMPLES} samples per level; ms: min median max)")
    print(
        f"  {'N':>5s}  {'attach the Nth guest':>23s} {'ratio':>6s}"
        f"  {'destroy one of N':>23s} {'ratio':>6s}  {'add the Nth device':>23s} {'ratio':>6s}"
    )
    for level, attaches, destroys, adds in rows:
        print(
            f"  {level:5d}  {spread(attaches)} {statistics.median(attaches) / base_attach:5.2f}x"
            f"  {spread(destroys)} {statistics.median(destroys) / base_destroy:5.2f}x"
            f"  {spread(adds)} {statistics.median(adds) / base_add:5.2f}x"
        )
    top = levels[-1]
    print(
        f"teardown of the {len(running)} guests still running: {teardown:.2f} s, "
        f"{teardown / max(1, len(running)) * 1000:.2f} ms per guest"
        f" ({fds} descriptors open at the end)"
    )
    print(
        f"attach growth 1 -> {top} guests: "
        f"{statistics.median(rows[-1][1]) / base_attach:.2f}x (target <= 2x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
