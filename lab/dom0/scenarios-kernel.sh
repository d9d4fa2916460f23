#!/bin/bash
# The same guest and device served by Linux's own xen-pciback and the stock toolstack (xl), for
# the side-by-side comparison (what the guest sees, how fast) with the daemon's run.
. /root/lab/lib.sh
t "backend: Linux xen-pciback"
modprobe xen-pciback || { t "modprobe xen-pciback failed"; exit 1; }
for bdf in 0000:00:03.0 0000:00:04.0 0000:00:05.0; do xl pci-assignable-add "$bdf" 2>&1; done
xl pci-assignable-list
# The device from the guest's first boot, as an xl user gives it (pci= in the guest config).
xl create "$LAB/guest.cfg" 'name="k1"' 'pci=["0000:00:03.0"]' >/dev/null 2>&1 || { t "xl create failed"; exit 1; }
check k-boot "the guest boots" wait_for 240 booted k1
check k-enumerates "the guest sees the function" gcmd k1 wait-devices 1
gcmd k1 devices
gcmd k1 scan > "$R/scan.txt"
gcmd k1 vvv 00:00.0 > "$R/vvv-03.txt"
gcmd k1 xxxx 00:00.0 > "$R/xxxx-03.txt"
echo "LAB-BENCH-START"  # the host's view of the benchmark starts here (lab/check.py)
gcmd k1 bench 00:00.0 > "$R/bench.txt"
cat "$R/bench.txt" | grep -E 'LAB-OPS'
dom0_costs | tee "$R/dom0-costs.txt"  # this phase's speed, beside the daemon phase's
# The daemon's run's driver loads, in the same order, for comparison (informational: the
# kernel backend has its own limits, e.g. after an MSI-X driver of a Linux 6.1 guest unloads,
# and e1000e's MSI self-test fails under emulation with either backend).
for mode in 1:msi 0:intx 2:msix; do
  gcmd k1 driver "${mode%%:*}" > "$R/driver-k1-${mode#*:}.txt"
  case ${mode#*:} in msix) want='msi-x';; intx) want='pcifront$|ioapic|level|edge';; *) want='msi$';; esac
  if interrupts_arrive k1 0000:00:00.0 "$want"; then echo "LAB-INFO k-${mode#*:} PASS"
  else echo "LAB-INFO k-${mode#*:} FAIL"; fi
done
check k-irq "MSI-X interrupts arrive" interrupts_arrive k1 0000:00:00.0 'msi-x'
gcmd k1 driver 1 > "$R/driver-k1-msi-after-msix.txt"
if interrupts_arrive k1 0000:00:00.0 'msi$'; then echo "LAB-INFO k-msi-after-msix PASS"
else echo "LAB-INFO k-msi-after-msix FAIL"; fi
# MSI on the xHCI controller, hot-attached with xl as an xl user would.
xl pci-attach k1 0000:00:05.0 2>&1
if gcmd k1 wait-devices 2 >/dev/null && gcmd k1 usb > "$R/usb-k1.txt"; then
  out=$(gcmd k1 irqs); echo "$out" | grep LAB-IRQ
  if echo "$out" | awk '$1 == "LAB-IRQ" && $4 ~ /msi$/ && $5 > 0 {found=1} END {exit !found}'; then
    echo "LAB-INFO k-xhci-msi PASS"; else echo "LAB-INFO k-xhci-msi FAIL"; fi
else echo "LAB-INFO k-xhci-msi FAIL"; fi
xl pci-list k1
xl destroy k1
exit $FAILED
