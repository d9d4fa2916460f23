#!/bin/bash
# The same guest and device served by Linux's own xen-pciback and the stock toolstack (xl), for
# the side-by-side comparison (what the guest sees, how fast) with the daemon's run.
. /root/lab/lib.sh
t "backend: Linux xen-pciback"
modprobe xen-pciback || { t "modprobe xen-pciback failed"; exit 1; }
for bdf in 0000:00:03.0 0000:00:04.0; do xl pci-assignable-add "$bdf" 2>&1; done
xl pci-assignable-list
# The device from the guest's first boot, as an xl user gives it (pci= in the guest config).
xl create "$LAB/guest.cfg" 'name="k1"' 'pci=["0000:00:03.0"]' >/dev/null 2>&1 || { t "xl create failed"; exit 1; }
check k-boot "the guest boots" wait_for 240 booted k1
check k-enumerates "the guest sees the function" gcmd k1 wait-devices 1
gcmd k1 devices
gcmd k1 scan > "$R/scan.txt"
gcmd k1 vvv 00:00.0 > "$R/vvv-03.txt"
gcmd k1 xxxx 00:00.0 > "$R/xxxx-03.txt"
gcmd k1 bench 00:00.0 > "$R/bench.txt"
cat "$R/bench.txt" | grep -E 'LAB-OPS'
gcmd k1 driver 2 > "$R/driver-k1-msix.txt"
check k-msix "MSI-X interrupts arrive" interrupts_arrive k1 0000:00:00.0 'msi-x'
# The same driver loads as the daemon's run, for comparison (not part of the verdict: the
# kernel backend has its own limits, e.g. after an MSI-X driver of a Linux 6.1 guest unloads).
gcmd k1 driver 1 > "$R/driver-k1-msi.txt"
interrupts_arrive k1 0000:00:00.0 'msi$' && echo "LAB-INFO k-msi PASS" || echo "LAB-INFO k-msi FAIL"
gcmd k1 driver 0 > "$R/driver-k1-intx.txt"
interrupts_arrive k1 0000:00:00.0 'pcifront$|ioapic|level|edge' && echo "LAB-INFO k-intx PASS" || echo "LAB-INFO k-intx FAIL"
xl pci-list k1
xl destroy k1
exit $FAILED
