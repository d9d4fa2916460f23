"""What Xen's scheduler did while a guest of the lab benchmark ran its lspci loop
(`LAB_TRACE=1 lab/lab.sh bench`): dom0 records the runstate changes of every vCPU with
xentrace and prints them with `xenalyze --dump-all`; this module turns those lines into the
figures that say where a guest's op waits.

- The guest's waits for a pCPU (runnable, not running): how many, how long in all, and those
  over 1 ms. While each of those lasted, which vCPUs held the L1 machine's pCPUs: dom0's,
  Xen's idle vCPUs (a pCPU free, yet the guest not on it) or another guest's.
- How often the guest's vCPU went to Xen's scheduler and came back to itself: blocked (it
  left its pCPU) and kept (the scheduler ran and let it go on). Linux's pcifront waits for
  each answer in SCHEDOP_poll with a timeout of `jiffies + 3*HZ`, which Xen reads as an
  absolute system time in ns: a time seconds after Xen's boot, long past in any lab or real
  run, so each poll returns at once and the guest's vCPU keeps polling until the answer: it
  stays runnable for the whole op, through either backend.
- How long dom0 held both pCPUs at once.

A line xenalyze prints for a runstate change, and the one for a vCPU the scheduler kept:
    3.876640659 x| d0v0 runstate_change d1v0 blocked->runnable
    0.612683388 x- d0v0 runstate_continue d0v0 running->running
time in seconds from the trace's start, one mark per pCPU (x: the pCPU it happened on), the
vCPU running there, the event, the vCPU it concerns, its old and new state. Domain 32767 is
Xen's idle domain.

    python3 lab/sched_trace.py FILE   (the dump, gzipped or not; its figures on stdout)
"""

from __future__ import annotations

import gzip
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Where lab/dom0/scenarios-bench.sh leaves the dump, in each round's results of a backend.
SCHED_DUMP = "sched.txt.gz"
RECORD = re.compile(r"^\s*(\d+\.\d+) (\S+) \S+ runstate_(change|continue) d(\d+)v(\d+) \w+->(\w+)")
IDLE_DOMAIN = 32767
DOM0 = 0
LONG_WAIT_S = 0.001


@dataclass
class SchedFigures:
    guest: str | None = None  # dNvM, the one vCPU of a domain other than dom0 and idle
    span_s: float = 0.0
    waits: int = 0
    waited_s: float = 0.0
    long_waits: int = 0
    long_waited_s: float = 0.0
    # pCPU-seconds during the long waits, by who held the pCPU: "dom0", "idle", "other"
    long_wait_holders: dict[str, float] = field(default_factory=dict)
    blocked: int = 0
    kept: int = 0
    dom0_on_all_s: float = 0.0


def holder(domain: int) -> str:
    if domain == DOM0:
        return "dom0"
    if domain == IDLE_DOMAIN:
        return "idle"
    return "other"


def figures(lines: Iterable[str]) -> SchedFigures:
    """The figures of one trace's dump, read in order."""
    result = SchedFigures()
    running: dict[int, int] = {}  # pCPU -> the domain of the vCPU on it
    pcpus = 0
    waiting_since: float | None = None
    holders: dict[str, float] = {}  # pCPU-seconds of the wait under way
    dom0_all_since: float | None = None
    first: float | None = None
    last: float | None = None
    for line in lines:
        match = RECORD.match(line)
        if match is None:
            continue
        now = float(match[1])
        marks, event, domain, vcpu = match[2], match[3], int(match[4]), int(match[5])
        new = match[6]
        pcpu = marks.find("x")
        if pcpu < 0:
            continue
        pcpus = max(pcpus, len(marks))
        if first is None:
            first = now
        if last is not None and waiting_since is not None and now > last:
            for held in running.values():
                who = holder(held)
                holders[who] = holders.get(who, 0.0) + now - last
        last = now
        name = f"d{domain}v{vcpu}"
        if result.guest is None and domain not in (DOM0, IDLE_DOMAIN):
            result.guest = name
        if new == "running":
            running[pcpu] = domain
        if name == result.guest:
            if event == "continue":
                result.kept += 1
            elif new == "blocked":
                result.blocked += 1
            elif new == "runnable" and waiting_since is None:
                waiting_since = now
                holders.clear()
            elif new == "running" and waiting_since is not None:
                waited = now - waiting_since
                result.waits += 1
                result.waited_s += waited
                if waited > LONG_WAIT_S:
                    result.long_waits += 1
                    result.long_waited_s += waited
                    for who, seconds in holders.items():
                        total = result.long_wait_holders.get(who, 0.0)
                        result.long_wait_holders[who] = total + seconds
                waiting_since = None
        on_all = len(running) == pcpus and all(d == DOM0 for d in running.values())
        if on_all and dom0_all_since is None:
            dom0_all_since = now
        elif not on_all and dom0_all_since is not None:
            result.dom0_on_all_s += now - dom0_all_since
            dom0_all_since = None
    if first is not None and last is not None:
        result.span_s = last - first
    return result


def read(path: Path) -> SchedFigures:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", errors="replace") as text:
        return figures(text)


def summary(result: SchedFigures) -> str:
    """One line for a report."""
    if result.guest is None:
        return "no guest vCPU in the trace"
    held = sum(result.long_wait_holders.values())
    shares = ", ".join(
        f"{name} {seconds / held:.0%}"
        for name, seconds in sorted(result.long_wait_holders.items(), key=lambda item: -item[1])
        if seconds / held >= 0.005
    )
    return (
        f"over {result.span_s:.2f} s the guest's vCPU waited for a pCPU {result.waits} times,"
        f" {result.waited_s * 1e3:.0f} ms in all ({result.long_waits} over 1 ms:"
        f" {result.long_waited_s * 1e3:.0f} ms"
        + (f"; the pCPUs meanwhile: {shares}" if shares else "")
        + f"); it blocked {result.blocked} times and was kept running {result.kept} times;"
        f" dom0 held every pCPU {result.dom0_on_all_s * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_file():
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(summary(read(Path(sys.argv[1]))))
