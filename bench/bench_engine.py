"""A 4-byte guest read through the config-space engine, against a raw memoryview read of the
same bytes from the same simulated device.

Both loops run in this one process, interleaved over several rounds, and the medians are
compared: the printed ratio is the cost of policy (dispatch map, backing merge, read hooks)
over the bare bytes. Nothing here asserts a time.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from pciback.engine import build_config_space
from pciback.sim.device import SimDevice

FIXTURE = Path(__file__).resolve().parent.parent.parent / "shared/fixtures/virtio-net-1af4-1041.bin"
READS = 20000
ROUNDS = 7
# (offset, what the guest reads there): a cached register, a mediated one, a capability.
OFFSETS = ((0x00, "vendor/device (cached)"), (0x04, "command/status (mixed)"), (0x98, "MSI-X"))


def main() -> int:
    config = FIXTURE.read_bytes() if FIXTURE.exists() else bytes(256)
    device = SimDevice("0000:03:00.0", config)
    view = build_config_space(device)
    raw = memoryview(device.config)
    print(f"engine read vs raw memoryview read, {READS} reads x {ROUNDS} rounds")
    for offset, label in OFFSETS:
        engine_times: list[float] = []
        raw_times: list[float] = []
        for _ in range(ROUNDS):
            start = time.perf_counter_ns()
            for _ in range(READS):
                view.read(offset, 4)
            engine_times.append((time.perf_counter_ns() - start) / READS)
            start = time.perf_counter_ns()
            for _ in range(READS):
                int.from_bytes(raw[offset : offset + 4], "little")
            raw_times.append((time.perf_counter_ns() - start) / READS)
        engine, bare = statistics.median(engine_times), statistics.median(raw_times)
        print(
            f"  {label:28s} engine {engine:8.0f} ns   raw {bare:6.0f} ns"
            f"   ratio {engine / bare:6.1f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
