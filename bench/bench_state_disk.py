"""Guest config ops through SimHost with a state directory, on a normal disk and on a disk whose
every fsync, fdatasync and msync takes 200 ms longer, measured in one run.

The slow disk is an LD_PRELOAD shim (bench/shims/slow_fsync.c) compiled here with gcc into a
temporary directory; each measured workload runs in a subprocess with the shim preloaded, the
normal one with a delay of 0 so that both pay the same interposition. The rounds alternate
between the two disks so that a machine getting busier in the meantime hurts both.

What is printed per op kind (conf_write of a shadowed register, conf_read, an enable_msi +
disable_msi pair): p50 and p99 latency on each disk and the ratio slow/fast. The guest's op path
is meant not to wait for the disk (Linux's pcifront gives an op 2 s), so the ratios should stay
near 1. Nothing here asserts a time.

Each iteration pauses --pace-ms after its ops, so that a round lasts a few seconds and the
state writer's commits (200 ms each on the slow disk) overlap the measured ops.

    .venv/bin/python bench/bench_state_disk.py [--ops N] [--msi-pairs N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pciback.generated.names import COMMON_HEADER, MSI, TYPE0

SHIM = Path(__file__).resolve().parent / "shims" / "slow_fsync.c"
SLOW_MS = 200
ADDR = "0000:03:00.0"
LINE = TYPE0.INTERRUPT_LINE.offset
MSI_CAP = 0x50  # where the function has its one capability
KINDS = ("conf_write", "conf_read", "msi_pair")


def msi_function() -> bytes:
    """A type-0 function with one capability, 64-bit MSI, and INTx pin A on line 11."""
    config = bytearray(256)
    # vendor, device, command (memory, bus master) and status (a capability list)
    status = COMMON_HEADER.STATUS.CAPABILITIES_LIST.mask
    struct.pack_into("<HHHH", config, COMMON_HEADER.VENDOR_ID.offset, 0x8086, 0x10D3, 6, status)
    struct.pack_into("<I", config, COMMON_HEADER.REVISION_ID.offset, 0x02000001)
    struct.pack_into("<I", config, TYPE0.BAR0.offset, 0xFE000000)
    config[TYPE0.CAPABILITIES_POINTER.offset] = MSI_CAP
    config[LINE], config[TYPE0.INTERRUPT_PIN.offset] = 11, 1
    config[MSI_CAP] = MSI.id
    struct.pack_into("<H", config, MSI_CAP + MSI.CONTROL.offset, MSI.CONTROL.ADDR64.mask)
    return bytes(config)


# -- the measured workload, in the subprocess --------------------------------------------------
def workload(ops: int, msi_pairs: int, pace: float) -> dict[str, list[float]]:
    from pciback.sim import SimHost

    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    every = max(1, ops // max(1, msi_pairs))
    with tempfile.TemporaryDirectory() as state, SimHost(state_dir=Path(state)) as host:
        host.add_device(ADDR, msi_function(), bar_sizes={0: 0x4000})
        guest = host.attach(1, [ADDR])
        for i in range(50):  # warm up the paths, outside the samples
            guest.conf_write(ADDR, LINE, 1, i)
            guest.conf_read(ADDR, LINE, 1)
        for i in range(ops):
            start = time.perf_counter()
            guest.conf_write(ADDR, LINE, 1, i & 0xFF)  # a shadow: the view changes
            wrote = time.perf_counter()
            guest.conf_read(ADDR, LINE, 1)
            read = time.perf_counter()
            samples["conf_write"].append(wrote - start)
            samples["conf_read"].append(read - wrote)
            if i % every == 0 and len(samples["msi_pair"]) < msi_pairs:
                start = time.perf_counter()
                guest.enable_msi(ADDR)
                guest.disable_msi(ADDR)
                samples["msi_pair"].append(time.perf_counter() - start)
            time.sleep(pace)  # a guest between two accesses: the writer's commits overlap ops
    return samples


# -- the driver ---------------------------------------------------------------------------------
def build_shim(directory: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SystemExit(
            "bench_state_disk: gcc not found; it builds the LD_PRELOAD shim that slows fsync "
            "(install gcc, e.g. apt-get install gcc)"
        )
    library = directory / "slow_fsync.so"
    subprocess.run(
        [gcc, "-O2", "-shared", "-fPIC", "-o", str(library), str(SHIM), "-ldl"], check=True
    )
    return library


def measure(
    shim: Path, delay_ms: int, args: argparse.Namespace, scratch: Path
) -> dict[str, object]:
    count_file = scratch / f"fsyncs-{delay_ms}"
    env = {
        **os.environ,
        "LD_PRELOAD": str(shim),
        "PCIBACK_SLOW_FSYNC_MS": str(delay_ms),
        "PCIBACK_FSYNC_COUNT_FILE": str(count_file),
    }
    command = [sys.executable, __file__, "--worker", "--ops", str(args.ops)]
    command += ["--msi-pairs", str(args.msi_pairs), "--pace-ms", str(args.pace_ms)]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    result: dict[str, object] = json.loads(done.stdout)
    result["fsyncs"] = int(count_file.read_text()) if count_file.exists() else -1
    return result


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000, help="conf_write + conf_read per round")
    parser.add_argument("--msi-pairs", type=int, default=100, help="MSI pairs per round")
    parser.add_argument("--pace-ms", type=float, default=2.0, help="pause after each iteration")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per disk")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(workload(args.ops, args.msi_pairs, args.pace_ms / 1000)))
        return 0

    samples: dict[int, dict[str, list[float]]] = {0: {}, SLOW_MS: {}}
    fsyncs = {0: 0, SLOW_MS: 0}
    with tempfile.TemporaryDirectory() as scratch:
        shim = build_shim(Path(scratch))
        for _ in range(args.rounds):
            for delay in (0, SLOW_MS):
                result = measure(shim, delay, args, Path(scratch))
                fsyncs[delay] += int(str(result.pop("fsyncs")))
                for kind, values in result.items():
                    assert isinstance(values, list)
                    samples[delay].setdefault(kind, []).extend(float(v) for v in values)

    print(
        f"guest ops through SimHost with a state directory, {args.rounds} alternating rounds "
        f"per disk; slow disk: fsync/fdatasync/msync +{SLOW_MS} ms"
    )
    print(f"fsync-family calls made: normal disk {fsyncs[0]}, slow disk {fsyncs[SLOW_MS]}")
    header = f"{'op':<11} {'n':>5} {'p50 normal':>11} {'p50 slow':>10} {'ratio':>6}"
    print(header + f" {'p99 normal':>11} {'p99 slow':>10} {'ratio':>6}")
    for kind in KINDS:
        fast, slow = samples[0].get(kind, []), samples[SLOW_MS].get(kind, [])
        if not fast or not slow:
            continue
        row = [f"{kind:<11} {len(slow):>5}"]
        for fraction in (0.5, 0.99):
            f_us, s_us = percentile(fast, fraction) * 1e6, percentile(slow, fraction) * 1e6
            row.append(f"{f_us:>9.0f}us {s_us:>8.0f}us {s_us / f_us:>6.2f}")
        print(" ".join(row))
    mean = statistics.fmean(samples[SLOW_MS]["conf_write"]) * 1e3
    print(f"mean conf_write on the slow disk: {mean:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
