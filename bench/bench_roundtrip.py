"""Round trip of a conf_read op through the shared page and the event channel, against the bare
transport round trip (same page, same wake-ups, a backend handler that does nothing).

Both are measured in the same run, interleaved, and the medians compared; the printed ratio is
what servicing a real config read (op validation, the config-space engine, the simulated device)
costs on top of the transport. Nothing here asserts a time.
"""

from __future__ import annotations

import statistics
import sys
import time

from required import fixture_or_exit

from pciback.errors import XenPciError
from pciback.protocol.abi import Cmd
from pciback.protocol.ops import OpResult
from pciback.sim import SimGuest, SimHost

ADDR = "0000:03:00.0"
OPS = 2000
ROUNDS = 7


def time_ops(guest: SimGuest, n: int) -> float:
    """Seconds per conf_read of the vendor/device dword."""
    frontend = guest.frontend
    start = time.perf_counter()
    for _ in range(n):
        frontend.do_op(Cmd.CONF_READ, ADDR, offset=0, size=4)
    return (time.perf_counter() - start) / n


def no_op(_: object) -> OpResult:
    return OpResult(XenPciError.SUCCESS, 0)


def main() -> int:
    dump = fixture_or_exit("virtio-net-1af4-1041.bin")
    with SimHost() as host:
        host.add_device(ADDR, dump)
        real = host.attach(1, [ADDR])
        bare = host.attach(2, [])
        bare.backend.handler = no_op
        time_ops(real, 200)  # warm up both paths
        time_ops(bare, 200)
        real_times: list[float] = []
        bare_times: list[float] = []
        for _ in range(ROUNDS):
            real_times.append(time_ops(real, OPS))
            bare_times.append(time_ops(bare, OPS))
    real_us = statistics.median(real_times) * 1e6
    bare_us = statistics.median(bare_times) * 1e6
    print(f"conf_read round trip:           {real_us:8.1f} us/op (median of {ROUNDS}x{OPS})")
    print(f"bare transport (no-op handler): {bare_us:8.1f} us/op")
    print(f"ratio conf_read / bare transport: {real_us / bare_us:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
