"""What of a PCI function Xen lets a domain use, read from Xen's own record.

    xl debug-keys q; xl dmesg | python3 granted.py DOMID BDF [--except-irq N]

Xen's debug key q prints, per domain, the rangesets that say what it may touch:

    (XEN) Rangesets belonging to domain 1:
    (XEN)     Interrupts { 23 }
    (XEN)     I/O Memory { febc0-febdf, febe0-febe3 }
    (XEN)     I/O Ports  { c000-c01f }

(I/O memory in page frames and ports in hex, interrupts in decimal). The function's memory and
I/O BARs come from dom0's sysfs `resource` file and its GSI from `irq`. Prints what of the
function the domain holds, one line each, and exits 0 when it holds something, 1 when nothing,
2 when the domain's rangesets are not in the log (so neither answer would be a fact). A GSI
that another function still attached to the domain shares is left out with --except-irq.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PAGE_SHIFT = 12
IORESOURCE_IO = 0x100
IORESOURCE_MEM = 0x200
SETS = {"Interrupts": 10, "I/O Memory": 16, "I/O Ports": 16}  # the base each is printed in
LINE = re.compile(r"^\s*(Interrupts|I/O Memory|I/O Ports)\s*\{(.*)\}\s*$")

Ranges = list[tuple[int, int]]


def rangesets(log: str, domid: int) -> dict[str, Ranges] | None:
    """The domain's rangesets from the last dump of them in `log`; None when there is none."""
    header = f"Rangesets belonging to domain {domid}:"
    lines = [re.sub(r"^.*?\(XEN\)", "", line) for line in log.replace("\r", "").splitlines()]
    starts = [i for i, line in enumerate(lines) if header in line]
    if not starts:
        return None
    found: dict[str, Ranges] = {}
    for line in lines[starts[-1] + 1 : starts[-1] + 8]:
        m = LINE.match(line)
        if m is None:
            continue
        base = SETS[m[1]]
        ranges: Ranges = []
        for part in m[2].replace(",", " ").split():
            low, _, high = part.partition("-")
            ranges.append((int(low, base), int(high or low, base)))
        found[m[1]] = ranges
    return found if found else None


def resources(bdf: str, sysfs: Path) -> tuple[Ranges, Ranges, int]:
    """The function's memory BARs (page frames), I/O BARs (ports) and GSI, from sysfs."""
    device = sysfs / "bus/pci/devices" / bdf
    memory: Ranges = []
    ports: Ranges = []
    for line in (device / "resource").read_text().splitlines()[:6]:  # the six BARs
        start, end, flags = (int(field, 16) for field in line.split())
        if not end:
            continue
        if flags & IORESOURCE_MEM:
            memory.append((start >> PAGE_SHIFT, end >> PAGE_SHIFT))
        elif flags & IORESOURCE_IO:
            ports.append((start, end))
    return memory, ports, int((device / "irq").read_text())


def overlaps(wanted: Ranges, held: Ranges) -> Ranges:
    return [(a, b) for a, b in wanted if any(a <= e and s <= b for s, e in held)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domid", type=int)
    parser.add_argument("bdf")
    parser.add_argument("--except-irq", type=int, action="append", default=[])
    parser.add_argument("--sysfs", type=Path, default=Path("/sys"))
    args = parser.parse_args()
    sets = rangesets(sys.stdin.read(), args.domid)
    if sets is None:
        print(f"no rangesets of domain {args.domid} in Xen's log")
        return 2
    memory, ports, irq = resources(args.bdf, args.sysfs)
    held = [
        f"I/O memory {a:#x}-{b:#x}" for a, b in overlaps(memory, sets.get("I/O Memory", []))
    ] + [f"I/O ports {a:#x}-{b:#x}" for a, b in overlaps(ports, sets.get("I/O Ports", []))]
    if irq and irq not in args.except_irq and overlaps([(irq, irq)], sets.get("Interrupts", [])):
        held.append(f"GSI {irq}")
    for item in held:
        print(f"d{args.domid} holds {item} of {args.bdf}")
    if not held:
        print(f"d{args.domid} holds nothing of {args.bdf}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
