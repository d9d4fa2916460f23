"""The report of a lab benchmark (lab/lab.sh bench): one boot whose rounds alternate the
project's daemon and Linux's xen-pciback on the same function, a fresh guest each. Per round,
the guest's boot-time scan, its lspci -xxxx -vvv (median of its loop) and its timed config
reads through each backend, and the ratio ours/kernel of the pair; then each ratio's
min/median/max over the rounds. Exit status 0 when every round finished and no guest's
pcifront timed out: the figures themselves are a benchmark's, not a verdict.

    python3 lab/bench_report.py RUN-DIR   (RUN-DIR holds bench/, as lab.sh bench leaves it)
"""

from __future__ import annotations

import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from check import (
    NOT_RESPONDING,
    answer_events,
    daemon_share,
    dom0_vcpus,
    figure,
    host_between,
    host_threads_line,
    lspci_seconds,
    op_figures,
    scan_seconds,
    slow_bands,
)
from sched_trace import SCHED_DUMP
from sched_trace import read as read_sched_trace
from sched_trace import summary as sched_summary

ROUND = re.compile(r"LAB-ROUND (\d+) (daemon|kernel) (start|done|FAIL)")
# Round 0 is a warm-up (lab.warmup=1): under emulation the daemon runs slower in the first
# minutes after boot, while QEMU translates code that runs for the first time.
WARMUP = 0
BACKENDS = ("daemon", "kernel")


@dataclass
class Side:
    """One backend's figures in one round; None where the guest's output lacks them."""

    scan_s: float | None
    lspci_s: float | None
    read_median_us: float | None
    read_p99_us: float | None
    ops_per_s: float | None

    @classmethod
    def read(cls, results: Path) -> Side:
        loops = lspci_seconds(results)
        ops = op_figures(results)
        return cls(
            scan_seconds(results),
            statistics.median(loops) if loops else None,
            ops.get("median_us"),
            ops.get("p99_us"),
            ops.get("ops_per_s"),
        )


# (label, the Side field, its unit, whether higher is faster)
FIGURES = (
    ("boot-time PCI scan", "scan_s", "s", False),
    ("lspci -xxxx -vvv (median)", "lspci_s", "s", False),
    ("config read, median", "read_median_us", "us", False),
    ("config read, p99", "read_p99_us", "us", False),
    ("config ops per second", "ops_per_s", "", True),
)


def round_results(directory: Path, number: int, backend: str) -> Path:
    """Where scenarios-bench.sh leaves one backend's figures of one round."""
    return directory / "bench" / "results" / "bench" / f"{number}-{backend}"


def rounds_of(directory: Path) -> dict[int, dict[str, Side]]:
    """Every round whose two sides both finished, by number."""
    serial = directory / "bench" / "serial.log"
    text = serial.read_text(errors="replace") if serial.is_file() else ""
    done: dict[int, set[str]] = {}
    for match in ROUND.finditer(text):
        if match[3] == "done":
            done.setdefault(int(match[1]), set()).add(match[2])
    return {
        number: {
            backend: Side.read(round_results(directory, number, backend)) for backend in BACKENDS
        }
        for number, finished in sorted(done.items())
        if finished == set(BACKENDS)
    }


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"min {min(values):.2f}x, median {statistics.median(values):.2f}x,"
        f" max {max(values):.2f}x over {len(values)} rounds"
    )


def report(directory: Path) -> int:
    serial = directory / "bench" / "serial.log"
    text = serial.read_text(errors="replace") if serial.is_file() else ""
    failed = [f"round {m[1]} ({m[2]})" for m in ROUND.finditer(text) if m[3] == "FAIL"]
    guest_logs = sorted((directory / "bench" / "results").glob("guest-*.log"))
    timeouts = text.count(NOT_RESPONDING) + sum(
        log.read_text(errors="replace").count(NOT_RESPONDING) for log in guest_logs
    )
    rounds = rounds_of(directory)
    print(f"# Lab benchmark {directory}\n")
    counted = [number for number in rounds if number != WARMUP]
    print(
        f"{len(counted)} rounds of both backends in one boot"
        + (" after a warm-up round" if WARMUP in rounds else "")
        + (f"; failed: {', '.join(failed)}" if failed else "")
        + ("" if "LAB-RESULT" in text else " (the boot did not finish)")
    )
    print(f"pcifront timeouts ({NOT_RESPONDING!r}): {timeouts} in {len(guest_logs)} guest logs\n")
    ratios: dict[str, list[float]] = {field: [] for _, field, _, _ in FIGURES}
    for number, sides in rounds.items():
        warmup = number == WARMUP
        print(f"## round {number}" + (" (warm-up: left out of the ratios below)" if warmup else ""))
        ours, theirs = sides["daemon"], sides["kernel"]
        for label, field, unit, higher_faster in FIGURES:
            a, b = getattr(ours, field), getattr(theirs, field)
            line = f"  {label:26s} {figure(a, unit)} vs {figure(b, unit)}"
            if a and b:
                if not warmup:
                    ratios[field].append(a / b)
                line += f"  -> {a / b:.2f}x" + (" (higher is faster)" if higher_faster else "")
            print(line)
        found = {backend: round_results(directory, number, backend) for backend in BACKENDS}
        for backend, side in found.items():
            bands = slow_bands(side)
            if bands:
                print(f"  reads over 2 ms, {backend}, by ms: {bands}")
        for backend, side in found.items():
            ops = op_figures(side)
            if "steal_ms" in ops and "total_ms" in ops:
                print(
                    f"  the guest's reads, {backend}: its vCPU runnable but not running (steal)"
                    f" {ops['steal_ms']:.0f} of {ops['total_ms']:.0f} ms"
                )
            vcpus = dom0_vcpus(side)
            if vcpus:
                shares = ", ".join(
                    f"{name} busy {busy:.0%} idle {idle:.0%} steal {steal:.0%}"
                    for name, busy, idle, steal in vcpus
                )
                print(f"  dom0's vCPUs while {backend} served: {shares}")
        for backend, side in found.items():
            dump = side / SCHED_DUMP
            if dump.is_file():
                line = sched_summary(read_sched_trace(dump))
                print(f"  Xen's scheduler in the {backend}'s lspci loop (LAB_TRACE): {line}")
        for backend in BACKENDS:
            guest = f"{backend[0]}{number}"  # scenarios-bench.sh names its guests so
            threads = host_between(
                directory / "bench", f"LAB-MEASURE {guest} start", f"LAB-MEASURE {guest} end"
            )
            if threads:
                line = host_threads_line(threads)
                print(f"  the host while {backend} served (QEMU's threads): {line}")
        results = found["daemon"]
        events = answer_events(results)
        if events is not None:
            print(
                f"  the daemon's answers in both loops: {events['dropped']} events dropped (the"
                f" guest's next op came first), {events['late']} sent late, deferring turned off"
                f" {events['offs']} times"
            )
        for loop, first, last in (("lspci", "before", "between"), ("reads", "between", "after")):
            share = daemon_share(results, first, last)
            if share is None:
                continue
            served, service, _, wakeups, cpu, handback = share
            running = "" if cpu is None else f", {cpu:.0f} us of CPU per op"
            back = "" if handback is None else f", {handback[0]:.0f} us of it handing back"
            print(
                f"  the daemon in the {loop} loop: {service:.0f} us from wake-up or find to"
                f" answer{back}{running}; {(served - wakeups) / served:.0%} of {served} ops"
                " found while lingering"
            )
    print("\n## ours / kernel, per round")
    for label, field, _, higher_faster in FIGURES:
        note = " (higher is faster)" if higher_faster else ""
        print(f"  {label:26s} {spread(ratios[field])}{note}")
    return 0 if counted and not failed and not timeouts and "LAB-RESULT" in text else 1


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "bench").is_dir():
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(report(Path(sys.argv[1])))
