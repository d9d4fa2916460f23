"""Guest reads and writes through the config-space engine, against a raw memoryview read or
write of the same bytes of the same simulated device.

Both loops run in this one process, interleaved over several rounds, and the quickest round of
each is compared: the printed ratio is the cost of policy (dispatch map, backing merge, hooks)
over the bare bytes. Each round is timed in this thread's CPU time, and the quickest kept,
because this machine is shared: wall time and medians moved the same ratio by 2x between two
runs while other work ran. Nothing here asserts a time.
"""

from __future__ import annotations

import time

from required import fixture_or_exit

from pciback.engine import ConfigSpace
from pciback.policy import build_config_space
from pciback.sim.device import SimDevice

FIXTURE = "virtio-net-1af4-1041.bin"
ACCESSES = 20000
ROUNDS = 7
# (offset, size, what the guest reads there): dwords over two cached registers, two mediated
# ones (one with a read hook), a capability's link and control; then single registers.
READS = (
    (0x00, 4, "vendor/device (cached)"),
    (0x04, 4, "command/status (mixed)"),
    (0x98, 4, "MSI-X"),
    (0x04, 2, "command (word)"),
    (0x10, 4, "BAR0 (read hook)"),
)
# (offset, size, what the guest writes there): each write puts back what the guest reads, so
# that every iteration does the same work (hooks run; the device is left as it was).
WRITES = (
    (0x04, 2, "command (hooks)"),
    (0x10, 4, "BAR0 (hook)"),
    (0x3C, 1, "interrupt line (shadow)"),
)


def report(label: str, engine_times: list[float], raw_times: list[float]) -> None:
    engine, bare = min(engine_times), min(raw_times)
    print(
        f"  {label:28s} engine {engine:8.0f} ns   raw {bare:6.0f} ns   ratio {engine / bare:6.1f}x"
    )


def bench_reads(view: ConfigSpace, raw: memoryview) -> None:
    print(f"engine read vs raw memoryview read, {ACCESSES} reads x {ROUNDS} rounds")
    for offset, size, label in READS:
        engine_times: list[float] = []
        raw_times: list[float] = []
        end = offset + size
        for _ in range(ROUNDS):
            start = time.thread_time_ns()
            for _ in range(ACCESSES):
                view.read(offset, size)
            engine_times.append((time.thread_time_ns() - start) / ACCESSES)
            start = time.thread_time_ns()
            for _ in range(ACCESSES):
                int.from_bytes(raw[offset:end], "little")
            raw_times.append((time.thread_time_ns() - start) / ACCESSES)
        report(f"{label} {size}B", engine_times, raw_times)


def bench_writes(view: ConfigSpace, device: SimDevice, raw: memoryview) -> None:
    print(f"engine write vs raw memoryview write, {ACCESSES} writes x {ROUNDS} rounds")
    for offset, size, label in WRITES:
        engine_times: list[float] = []
        raw_times: list[float] = []
        end = offset + size
        value = view.read(offset, size)
        data = raw[offset:end].tobytes()
        for _ in range(ROUNDS):
            start = time.thread_time_ns()
            for _ in range(ACCESSES):
                view.write(offset, size, value)
            engine_times.append((time.thread_time_ns() - start) / ACCESSES)
            start = time.thread_time_ns()
            for _ in range(ACCESSES):
                raw[offset:end] = value.to_bytes(size, "little")
            raw_times.append((time.thread_time_ns() - start) / ACCESSES)
            raw[offset:end] = data
            device.writes.clear()  # the logs of any writes that reached the device
            device.history.clear()
        report(f"{label} {size}B", engine_times, raw_times)


def main() -> int:
    device = SimDevice("0000:03:00.0", fixture_or_exit(FIXTURE))
    view = build_config_space(device)
    raw = memoryview(device.config)
    bench_reads(view, raw)
    bench_writes(view, device, raw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
