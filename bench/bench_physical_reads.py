"""Physical config reads per guest config read, over every fixture dump.

A read of a real device's config file is a system call (about 17 us natively, 200 us and more
in an emulated dom0) where the engine's own work is a few microseconds at most: the reads the
backend makes of the device are what a guest's scan costs. This replays the workload of
pciback.sim.guest_scan (the PCI core's boot scan, a virtio-pci driver's probe, lspci -vvv)
through a view over each dump and prints, per phase, the guest reads, the physical reads they
caused, the ratio, and the worst single guest read. It counts; it asserts nothing.
"""

from __future__ import annotations

from required import missing

from pciback.sim.fixtures import fixture_dir
from pciback.sim.guest_scan import PhaseCount, dumps, replay, view_of


def main() -> None:
    found = dumps()
    if not found:
        raise missing(f"no config dump in {fixture_dir()}")
    totals: dict[str, PhaseCount] = {}
    print(f"{'dump':44s} {'phase':13s} {'guest':>6s} {'phys':>6s} {'ratio':>6s} {'worst':>5s}")
    for dump in found:
        view, device = view_of(dump)
        for count in replay(view, device):
            total = totals.setdefault(count.name, PhaseCount(count.name))
            total.guest_reads += count.guest_reads
            total.guest_writes += count.guest_writes
            total.physical_reads += count.physical_reads
            total.write_reads += count.write_reads
            if count.worst > total.worst:
                total.worst, total.worst_at = count.worst, count.worst_at
            print(
                f"{dump.name[:44]:44s} {count.name:13s} {count.guest_reads:6d}"
                f" {count.physical_reads:6d} {count.ratio:6.2f} {count.worst:5d}"
            )
    print()
    print("all dumps:")
    for total in totals.values():
        offset, size = total.worst_at
        print(
            f"  {total.name:13s} guest reads {total.guest_reads:6d}  physical reads"
            f" {total.physical_reads:6d}  ratio {total.ratio:5.2f}  worst guest read"
            f" {total.worst} physical (at {offset:#x}/{size});  guest writes"
            f" {total.guest_writes}, physical reads they caused {total.write_reads}"
        )


if __name__ == "__main__":
    main()
