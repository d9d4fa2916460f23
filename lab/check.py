"""The report of a lab run (lab/lab.sh test): every scenario check of the daemon's run, the
guest consoles searched for pcifront's "pciback not responding", the guest's view of the same
device through the daemon and through Linux's xen-pciback side by side, and the benchmark as
ratios ours/kernel. Exit status 0 only when every check passed and no op timed out.

    python3 lab/check.py RUN-DIR      (RUN-DIR holds daemon/ and kernel/, as lab.sh test leaves it)
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every check the daemon's scenarios print; one missing means the run stopped before it.
EXPECTED_DAEMON = [
    "daemon-start",
    "daemon-ecam",
    "a-attach",
    "a-boot",
    "a-enumerates",
    "a-grants",
    "a-fidelity",
    "b-intx-line",
    "b-intx",
    "b-msix",
    "b-msi-attach",
    "b-msi-enumerates",
    "b-msi",
    "b-msi-detach",
    "b-msi-gone",
    "b-msi-released",
    "b-msi-grants",
    "a-hot-attach",
    "a-hot-enumerates",
    "a-hot-fidelity",
    "a-hot-msix",
    "d-restart",
    "d-config",
    "d-irq-a",
    "d-irq-b",
    "c-detach",
    "c-detach-guest",
    "c-detach-owner",
    "c-detach-xen",
    "c-detach-grants",
    "c-detach-nodes",
    "c-detach-record",
    "c-second",
    "c-second-boot",
    "c-second-enumerates",
    "c-second-trace",
    "c-second-msix",
    "c-shutdown",
    "c-shutdown-owner",
    "c-shutdown-nodes",
    "c-shutdown-xen",
    "c-destroy-owner",
    "c-destroy-nodes",
    "c-destroy-xen",
    "c-third",
    "c-third-boot",
    "c-third-enumerates",
    "c-third-config",
]
EXPECTED_KERNEL = ["k-boot", "k-enumerates", "k-irq"]
CHECK = re.compile(r"LAB-CHECK (\S+) (PASS|FAIL) ?(.*)")
INFO = re.compile(r"LAB-INFO (\S+) (PASS|FAIL)")
STAMP = re.compile(r"\[\s*(\d+\.\d+)\]")
OPS = re.compile(r"(\w+)=([\d.]+)")
NOT_RESPONDING = "pciback not responding"


@dataclass
class Run:
    name: str
    directory: Path
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    infos: dict[str, bool] = field(default_factory=dict)  # reported, not part of the verdict
    timeouts: int = 0
    finished: bool = False

    @classmethod
    def read(cls, name: str, directory: Path) -> Run:
        run = cls(name, directory)
        serial = directory / "serial.log"
        text = serial.read_text(errors="replace") if serial.is_file() else ""
        run.finished = "LAB-RESULT" in text
        for line in text.splitlines():
            match = CHECK.search(line)
            if match:
                run.checks[match[1]] = (match[2] == "PASS", match[3].strip())
            info = INFO.search(line)
            if info:
                run.infos[info[1]] = info[2] == "PASS"
        run.timeouts = text.count(NOT_RESPONDING) + sum(
            log.read_text(errors="replace").count(NOT_RESPONDING)
            for log in run.results().glob("guest-*.log")
        )
        return run

    def results(self) -> Path:
        return self.directory / "results"

    def lines(self, name: str, prefix: str) -> list[str]:
        return lines_of(self.results() / name, prefix)


def lines_of(path: Path, prefix: str) -> list[str]:
    """The lines of a result file that start with `prefix`; none when it is missing."""
    if not path.is_file():
        return []
    return [
        line for line in path.read_text(errors="replace").splitlines() if line.startswith(prefix)
    ]


def scan_seconds(results: Path) -> float | None:
    """The guest's boot-time PCI scan: pcifront's first line to the last line about the bus
    (results: the directory holding the guest's scan.txt)."""
    stamps = [
        float(m[1])
        for line in lines_of(results / "scan.txt", "LAB-SCAN")
        if (m := STAMP.search(line))
    ]
    return stamps[-1] - stamps[0] if len(stamps) >= 2 else None


def lspci_seconds(results: Path) -> list[float]:
    """Each timed lspci -xxxx -vvv of the guest's bench.txt in `results`, in seconds."""
    starts: dict[str, float] = {}
    durations = []
    for line in lines_of(results / "bench.txt", "LAB-LOOP"):
        stamp = STAMP.search(line)
        words = line.split()
        if stamp is None or len(words) < 2:
            continue
        key = words[-2]
        if words[-1] == "start":
            starts[key] = float(stamp[1])
        elif words[-1] == "end" and key in starts:
            durations.append(float(stamp[1]) - starts[key])
    return durations


def op_figures(results: Path) -> dict[str, float]:
    """The guest's timed config reads (cfgbench's figures) of bench.txt in `results`."""
    for line in lines_of(results / "bench.txt", "LAB-OPS"):
        return {k: float(v) for k, v in OPS.findall(line)}
    return {}


SLOW_BANDS = "slow ops by ms:"


def slow_bands(results: Path) -> str | None:
    """How long the guest's slow reads took, by band of ms (cfgbench's second line, as it
    prints it: "2-3:N 3-4:N ..."); None from guests that did not count them."""
    for line in lines_of(results / "bench.txt", "LAB-OPS"):
        if SLOW_BANDS in line:
            return line.split(SLOW_BANDS, 1)[1].strip()
    return None


def dom0_vcpus(results: Path) -> list[tuple[str, float, float, float]] | None:
    """dom0's vCPUs over the guest's benchmark, from /proc/stat as scenarios-bench.sh keeps it
    before and after: per vCPU, the share of the time it was busy, idle, and runnable while
    Xen ran another vCPU on its pCPU (steal); None where the snapshots are missing."""

    def ticks(name: str) -> dict[str, list[int]]:
        rows = {}
        for line in lines_of(results / name, "cpu"):
            label, *fields = line.split()
            if label != "cpu" and len(fields) >= 8 and all(f.isdigit() for f in fields):
                rows[label] = [int(f) for f in fields[:8]]
        return rows

    before, after = ticks("dom0-stat-before.txt"), ticks("dom0-stat-after.txt")
    vcpus = []
    for label in sorted(before.keys() & after.keys()):
        user, nice, system, idle, iowait, irq, softirq, steal = (
            b - a for a, b in zip(before[label], after[label], strict=True)
        )
        total = user + nice + system + idle + iowait + irq + softirq + steal
        if total > 0:
            busy = user + nice + system + irq + softirq
            vcpus.append((label, busy / total, (idle + iowait) / total, steal / total))
    return vcpus or None


def machine_speed(ours: dict[str, float], kernel: dict[str, float]) -> str | None:
    """The line that says how fast the machine was in each benchmark (cfgbench's fixed CPU
    loop in the guest, before and after its reads), and whether that alone moves the ratios:
    on a shared host the speed changes 2x within minutes, and the two benchmarks run minutes
    apart. None from guests that did not time the loop."""
    keys = ("spin_before_us", "spin_after_us")
    if not all(k in ours and k in kernel for k in keys):
        return None
    a0, a1 = (ours[k] / 1000 for k in keys)
    b0, b1 = (kernel[k] / 1000 for k in keys)
    slower = (a0 + a1) / (b0 + b1) if b0 + b1 else 1.0
    line = (
        "  the machine's speed in each benchmark (a fixed CPU loop in the guest, before and"
        f" after its reads): ours {a0:.0f}/{a1:.0f} ms, kernel {b0:.0f}/{b1:.0f} ms"
    )
    if not 0.8 <= slower <= 1.25:
        line += f" -- {slower:.2f}x as slow in ours: the ratios above carry that too"
    return line


def daemon_share(
    results: Path, first: str = "before", last: str = "after"
) -> tuple[int, float, float, int, float | None, tuple[float, float | None] | None] | None:
    """Ops the daemon served during the benchmark, its mean service time (over the ops it timed)
    and its mean busy time per op (µs), the wake-ups it took for them (fewer than ops: the rest
    were found while lingering), the service thread's CPU time per op (µs; None from a
    daemon that does not list it) and the mean hand-back of a timed op (the active bit cleared
    and the notify, µs, by wall and CPU time; None from a daemon that does not time it apart,
    the CPU None from one that does not time that), from its counters
    before and after (`pciback list --json`, list-FIRST-bench.json and list-LAST-bench.json
    in `results`)."""
    try:
        before, after = (
            json.loads((results / f"list-{when}-bench.json").read_text()) for when in (first, last)
        )
    except (OSError, ValueError):
        return None

    def totals(
        listing: dict[str, object],
    ) -> tuple[int, int, int, int, int, int | None, int | None, int | None]:
        ops = timed = service = busy = wakeups = 0
        cpu: int | None = 0
        handback: int | None = 0
        handback_cpu: int | None = 0
        guests: list[dict[str, Any]] = listing.get("guests", [])  # type: ignore[assignment]
        for guest in guests:
            counters = guest.get("ops") or {}
            ops += counters.get("ops", 0)
            # A daemon that timed every op does not list timed_ops.
            timed += counters.get("timed_ops", counters.get("ops", 0))
            service += counters.get("service_ns_total", 0)
            busy += counters.get("busy_ns_total", 0)
            wakeups += counters.get("wakeups", 0)
            thread_cpu = counters.get("thread_cpu_ns_total")
            cpu = None if cpu is None or thread_cpu is None else cpu + thread_cpu
            back = counters.get("handback_ns_total")  # since run 56
            handback = None if handback is None or back is None else handback + back
            back_cpu = counters.get("handback_cpu_ns_total")  # since run 57
            handback_cpu = (
                None if handback_cpu is None or back_cpu is None else handback_cpu + back_cpu
            )
        return ops, timed, service, busy, wakeups, cpu, handback, handback_cpu

    (o1, t1, s1, b1, w1, c1, h1, hc1), (o2, t2, s2, b2, w2, c2, h2, hc2) = (
        totals(before),
        totals(after),
    )
    if o2 <= o1 or t2 <= t1:
        return None
    ops = o2 - o1
    cpu = None if c1 is None or c2 is None else (c2 - c1) / ops / 1000
    handback: tuple[float, float | None] | None = None
    if h1 is not None and h2 is not None:
        on_cpu = None if hc1 is None or hc2 is None else (hc2 - hc1) / (t2 - t1) / 1000
        handback = ((h2 - h1) / (t2 - t1) / 1000, on_cpu)
    return ops, (s2 - s1) / (t2 - t1) / 1000, (b2 - b1) / ops / 1000, w2 - w1, cpu, handback


@dataclass
class HostThread:
    """One of QEMU's threads over a window of a run, in % of one host core: the CPU it took,
    and the time it waited for a core while runnable (the host's contention; None in runs
    whose samples lack it)."""

    name: str
    cpu: float
    waited: float | None


def host_between(directory: Path, start: str, end: str) -> list[HostThread] | None:
    """QEMU's threads, busiest first, from lab/host/threads.sh's samples between the first
    serial-log lines that match `start` and `end` (regular expressions); None when a piece is
    missing or the window is under two samples."""
    try:
        epoch = int((directory / "boot-epoch").read_text())
        samples = (directory / "host-threads.txt").read_text().splitlines()
        serial = (directory / "serial.log").read_text(errors="replace")
    except (OSError, ValueError):
        return None
    marks = []
    for what in (start, end):
        found = re.search(rf"^\s*(\d+)s .*{what}", serial, re.MULTILINE)
        if found is None:
            return None
        marks.append(epoch + int(found.group(1)))
    first: dict[str, tuple[int, int, int | None]] = {}  # tid: (epoch, ticks, waited us)
    last: dict[str, tuple[int, int, int | None, str]] = {}
    for line in samples:
        parts = line.split(" ", 4)
        if len(parts) < 4 or not parts[0].isdigit() or not parts[2].isdigit():
            continue
        waited: int | None = None
        if len(parts) == 5 and parts[3].isdigit():
            waited, name = int(parts[3]), parts[4]
        else:  # before the run delay was sampled: the name follows the ticks
            name = " ".join(parts[3:])
        when, tid, ticks = int(parts[0]), parts[1], int(parts[2])
        if marks[0] <= when <= marks[1] + 1:
            first.setdefault(tid, (when, ticks, waited))
            last[tid] = (when, ticks, waited, name)
    threads = []
    for tid, (when, ticks, waited, name) in last.items():
        since, base, waited_base = first[tid]
        if when > since:
            seconds = when - since
            share = None
            if waited is not None and waited_base is not None:
                share = (waited - waited_base) / seconds / 1e4  # µs a second, in %
            threads.append(HostThread(name, (ticks - base) / seconds, share))  # 100 ticks a second
    if not threads:
        return None
    return sorted(threads, key=lambda thread: -thread.cpu)


def host_during_bench(run: Run) -> list[HostThread] | None:
    """QEMU's threads during the guest's benchmark: from the LAB-BENCH-START line of the
    serial log to its LAB-OPS line (runs since run 58)."""
    return host_between(run.directory, "LAB-BENCH-START", "LAB-OPS")


def host_threads_line(threads: list[HostThread]) -> str:
    """QEMU's threads as the reports print them: each one's CPU, and its wait for a core."""
    shown = []
    for thread in threads:
        if thread.cpu < 1 and (thread.waited or 0) < 1:
            continue  # QEMU's idle workers
        waited = "" if thread.waited is None else f" (waited {thread.waited:.0f}%)"
        shown.append(f"{thread.name} {thread.cpu:.0f}%{waited}")
    line = f"{', '.join(shown)}; {sum(thread.cpu for thread in threads):.0f}% in all"
    waits = [thread.waited for thread in threads if thread.waited is not None]
    if waits:
        line += f", {sum(waits):.0f}% waiting for a core"
    return line


def bench_counters(results: Path, key: str) -> tuple[Any, Any] | None:
    """The first guest's `ops[key]` before and after the benchmark (`pciback list --json`);
    None when either listing is missing or has no such counter."""
    try:
        listings = [
            json.loads((results / f"list-{when}-bench.json").read_text())
            for when in ("before", "after")
        ]
        before, after = (listing["guests"][0]["ops"][key] for listing in listings)
    except (OSError, ValueError, LookupError, TypeError):
        return None
    return before, after


def service_median_bound(results: Path) -> int | None:
    """An upper bound (µs) of the median service time of the ops the daemon timed during the
    benchmark, from its histograms before and after; None when unknown. The mean is pulled up
    by the few ops that needed a wake-up, milliseconds each under emulation."""
    pair = bench_counters(results, "histogram")
    if pair is None:
        return None
    first, last = pair
    counts: dict[int, int] = {}
    ceilings: dict[int, int | None] = {}
    for sign, buckets in ((-1, first), (1, last)):
        for bucket in buckets:
            counts[bucket["from_us"]] = counts.get(bucket["from_us"], 0) + sign * bucket["ops"]
            ceilings[bucket["from_us"]] = bucket["below_us"]
    total, seen = sum(counts.values()), 0
    for start in sorted(counts):
        seen += counts[start]
        if total > 0 and 2 * seen >= total:
            return ceilings[start]
    return None


def linger_figures(results: Path) -> dict[str, object] | None:
    """The service thread's lingering over the benchmark (counts as differences, the rest as
    it stood at the end), from `pciback list --json`; None from a daemon that does not list
    it."""
    pair = bench_counters(results, "linger")
    if pair is None:
        return None
    first, last = pair
    figures = dict(last)
    for count in ("hits", "misses", "backoffs", "resumed", "yields"):
        # yields: since run 38; resumed (back-offs ended by quick wake-ups): since run 44
        figures[count] = last.get(count, 0) - first.get(count, 0)
    gap, look = last.get("gap_looks_mean"), last.get("look_ns")
    figures["gap_us"] = "?" if gap is None or look is None else round(gap * look / 1000)
    return figures


def answer_events(results: Path) -> dict[str, int] | None:
    """What became of the answers' events over the benchmark (pciback.protocol.answer_events:
    dropped, sent late, times deferring was turned off), from `pciback list --json`; None
    from a daemon that does not list them."""
    pair = bench_counters(results, "answer_events")
    if pair is None:
        return None
    first, last = pair
    return {key: last[key] - first.get(key, 0) for key in last}


def view_lines(run: Run) -> list[str]:
    """The guest's lspci -nn -xxxx -vvv of the device, less what differs by nature between two
    boots: nothing, so far (any difference is for docs/policy-vs-linux.md or a fix)."""
    return [
        line.split(" ", 2)[2] if line.count(" ") >= 2 else ""
        for line in run.lines("vvv-03.txt", "LAB-VVV")
    ]


def os_cores() -> int:
    return os.cpu_count() or 1


def figure(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} {unit}" if unit == "s" else f"{value:.0f} {unit}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "n/a"
    return f"{ours / theirs:.2f}x"


def report(directory: Path) -> int:
    daemon = Run.read("daemon", directory / "daemon")
    kernel = Run.read("kernel", directory / "kernel")
    ok = True
    print(f"# Lab run {directory}\n")
    for run, expected in ((daemon, EXPECTED_DAEMON), (kernel, EXPECTED_KERNEL)):
        passed = sum(1 for name in expected if run.checks.get(name, (False, ""))[0])
        print(
            f"## {run.name} backend: {passed}/{len(expected)} checks passed"
            + ("" if run.finished else " (the run did not finish)")
        )
        for name in expected:
            good, detail = run.checks.get(name, (False, "never reached"))
            ok &= good
            print(f"  {'PASS' if good else 'FAIL'}  {name:22s} {detail}")
        for name, good in run.infos.items():
            print(f"  ({'pass' if good else 'fail'})  {name:22s} for comparison only")
        print(f"  pcifront timeouts ({NOT_RESPONDING!r}): {run.timeouts}")
        ok &= run.timeouts == 0 and run.finished
        print()

    ours, theirs = view_lines(daemon), view_lines(kernel)
    print("## The guest's lspci -nn -xxxx -vvv: daemon vs Linux xen-pciback")
    if not ours or not theirs:
        print("  missing output of one run")
    else:
        differ = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b]
        print(f"  {len(ours)} vs {len(theirs)} lines, {len(differ)} differ")
        for i, a, b in differ[:40]:
            print(f"  line {i}:\n    daemon: {a}\n    kernel: {b}")
    print()

    print("## Benchmark (guest-side times; ours / kernel)")
    scans = scan_seconds(daemon.results()), scan_seconds(kernel.results())
    loops = lspci_seconds(daemon.results()), lspci_seconds(kernel.results())
    ops = op_figures(daemon.results()), op_figures(kernel.results())
    medians = tuple(statistics.median(x) if x else None for x in loops)
    for label, pair in (("boot-time PCI scan", scans), ("lspci -xxxx -vvv (median)", medians)):
        print(f"  {label:26s} {figure(pair[0], 's')} vs {figure(pair[1], 's')}  -> {ratio(*pair)}")
    for key, label in (
        ("median_us", "config read, median"),
        ("mean_us", "config read, mean"),
        ("p90_us", "config read, p90"),
        ("p95_us", "config read, p95"),
        ("p99_us", "config read, p99"),
        ("max_us", "config read, worst"),
    ):
        if key not in ops[0] and key not in ops[1]:
            continue  # a guest image from before the figure
        ours_us, kernel_us = ops[0].get(key), ops[1].get(key)
        print(
            f"  {label:26s} {figure(ours_us, 'us')} vs {figure(kernel_us, 'us')}"
            f"  -> {ratio(ours_us, kernel_us)}"
        )
    rate, kernel_rate = ops[0].get("ops_per_s"), ops[1].get("ops_per_s")
    print(
        f"  config ops per second      {figure(rate, '')}vs {figure(kernel_rate, '')}"
        f" -> {ratio(rate, kernel_rate)} (higher is faster)"
    )
    speed = machine_speed(ops[0], ops[1])
    if speed:
        print(speed)
    for side, figures in (("ours", ops[0]), ("kernel", ops[1])):
        if "slow_ops" in figures:
            print(
                f"  the tail, {side}: {figures['slow_ops']:.0f} reads over 2 ms took"
                f" {figures['slow_share']:.0%} of the time;"
                f" {figures['slow_after_slow']:.0f} of them right after another,"
                f" the longest run {figures['longest_slow_run']:.0f}"
            )
    for side, results in (("ours", daemon.results()), ("kernel", kernel.results())):
        bands = slow_bands(results)
        if bands:
            print(f"  the tail, {side}, by ms: {bands}")
    share = daemon_share(daemon.results())
    if share is not None and rate:
        served, service, busy, wakeups, cpu, handback = share
        bound = service_median_bound(daemon.results())
        median = "" if bound is None else f" (half of the ops under {bound} us)"
        seen = 1e6 / rate
        running = "" if cpu is None else f" (running on a CPU for {cpu:.0f} us of it)"
        back = ""
        if handback is not None:
            wall, on_cpu = handback
            back = f", of which {wall:.0f} us handing the answer back (active bit, notify"
            back += ")" if on_cpu is None else f"; {on_cpu:.0f} us of it on a CPU)"
        print(
            f"  where the time goes: the guest saw {seen:.0f} us per read on average; over the"
            f" {served} ops of the benchmark the daemon spent {service:.0f} us from wake-up to"
            f" answer on average{back}{median} and {busy:.0f} us awake per op{running}; the rest is"
            f" dom0's kernel, Xen and scheduling; {served - wakeups} of the ops"
            f" ({(served - wakeups) / served:.0%}) were found while lingering, without a wake-up"
        )
    linger = linger_figures(daemon.results())
    if linger:
        print(
            "  lingering during the benchmark: {hits} hits, {misses} misses, {backoffs} backoffs"
            " ({resumed} ended by quick wake-ups),"
            " {yields} yields to another guest;"
            " a look {look_ns} ns, a gap {gap_looks_mean} looks on average (about {gap_us} us"
            " from an answer to the guest's next op, when that op was not already there), the"
            " window {window_looks} looks at the end".format(**linger)
        )
    for side, run in (("ours", daemon), ("kernel", kernel)):
        threads = host_during_bench(run)
        if threads:
            print(
                f"  the host during the benchmark, {side} (QEMU's threads, % of one of its"
                f" {os_cores()} cores): {host_threads_line(threads)}"
            )
    for side, run in (("ours", daemon), ("kernel", kernel)):
        for line in run.lines("dom0-costs.txt", "LAB-DOM0COST"):
            costs = dict(OPS.findall(line))
            print(
                f"  dom0 after the benchmark, {side}: a device's config read (µs per 4-byte"
                f" pread) through sysfs {costs.get('pread_us', '?')}, through /proc/bus/pci"
                f" {costs.get('proc_pread_us', '?')}; a bare system call"
                f" {costs.get('syscall_us', '?')}; a Python loop step"
                f" {costs.get('python_call_us', '?')}"
            )
    for line in daemon.lines("dom0-costs.txt", "LAB-OPCOST"):
        costs = dict(OPS.findall(line))
        print(
            "  the op's pieces in this dom0, each alone (CPU µs per call): the daemon's code on a"
            f" simulated device {costs.get('serve_cached_us', '?')} (a cached register),"
            f" {costs.get('serve_live_us', '?')} (a live one, without the device read),"
            f" {costs.get('serve_quiet_us', '?')} (the cached one without its system"
            " calls: notify, and the clock reads of one op in 32; by the general way"
            f" instead of the short one, in interleaved rounds,"
            f" {costs.get('serve_quiet_general_us', '?')}; the short way then a bare system"
            f" call, {costs.get('serve_quiet_syscall_us', '?')}, against the system call alone"
            f" {costs.get('syscall_interleaved_us', '?')}; with Xen's notify after each op"
            f" instead, on an event channel of dom0's own,"
            f" {costs.get('serve_quiet_xen_us', '?')}, against that notify alone"
            f" {costs.get('xen_notify_interleaved_us', '?')});"
            f" Xen's notify {costs.get('xen_notify_us', '?')} of CPU,"
            f" {costs.get('xen_notify_wall_us', '?')} of wall time (a bare system call"
            f" {costs.get('syscall_wall_us', '?')} of wall time);"
            f" a libatomic call {costs.get('atomic_us', '?')}, a clock read"
            f" {costs.get('clock_us', '?')}, a system call {costs.get('syscall_us', '?')};"
            f" a Python call {costs.get('call_us', '?')}, with a lock taken and released"
            f" {costs.get('lock_us', '?')}, with a struct pack {costs.get('pack_us', '?')}"
        )
    print()
    print("RESULT: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(report(Path(sys.argv[1])))
