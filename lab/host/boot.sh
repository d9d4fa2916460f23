#!/bin/bash
# Step 6: boot Xen + dom0 in QEMU. The L1 machine (q35, an emulated VT-d so Xen can assign
# devices and remap their interrupts) has, for dom0 to give to guests, two e1000e functions
# (00:03.0, 00:04.0) and an xHCI controller with MSI only (00:05.0, MSI-X off, a USB keyboard
# on it): e1000e's driver gives MSI 100 ms to prove itself, which emulation does not meet with
# either backend, and xhci_hcd uses MSI without such a test.
#   boot.sh                          interactive: dom0's shell on the serial console (Ctrl-a x quits)
#   LAB_RUN=daemon OUT=dir boot.sh   dom0 runs the scenarios with the project's daemon, powers off;
#   LAB_RUN=kernel OUT=dir boot.sh   ... with Linux's xen-pciback; the serial log and dom0's
#                                    results (guest consoles, daemon log) end up in dir
# /dev/kvm on these machines is paravirtual and cannot run Xen: TCG (as Xen's own CI) unless
# ACCEL=kvm CPU=host on a host with real VMX/SVM (untested).
. "$(dirname "$0")/lib.sh"
ACCEL=${ACCEL:-tcg,thread=multi}
CPU=${CPU:-qemu64,+svm}           # -cpu max crashes dom0 (#PF at once)
IOMMU_DEV=${IOMMU_DEV-intel-iommu,intremap=on}
XEN_ARGS="${IOMMU_DEV:+iommu=verbose} console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 loglvl=all guest_loglvl=all noreboot ${XEN_EXTRA:-}"
# iomem=relaxed: Debian's kernel (CONFIG_IO_STRICT_DEVMEM) lets /dev/mem map no region the
# kernel holds busy, its MMCONFIG region included: the daemon's config reads go through the
# devices' ECAM pages only with it (pciback.xen.ecam; sysfs otherwise). Both backends get it.
DOM0_ARGS="console=hvc0 earlyprintk=xen root=/dev/vda rw iomem=relaxed ${LAB_RUN:+lab.run=$LAB_RUN} ${LAB_PYSPY:+lab.pyspy=1} ${DOM0_EXTRA:-}"
IOMMU=(); [ -n "$IOMMU_DEV" ] && IOMMU=(-device "$IOMMU_DEV")
IMAGE=${IMAGE:-$LAB/dom0.ext4}
# LAB_SMP=N: the L1 machine's pCPUs (an experiment: with 3, dom0's two vCPUs and a guest's one
# each have a pCPU of Xen's, though the host's two cores then run three vCPU threads).
cmd=(qemu-system-x86_64 -name pciback-lab,debug-threads=on
     -accel "$ACCEL" -machine q35 -cpu "$CPU" -m 4G -smp "${LAB_SMP:-2}"
     -nographic -no-reboot -nic none "${IOMMU[@]}"
     -device e1000e,addr=03.0 -device e1000e,addr=04.0
     -device nec-usb-xhci,id=xhci,addr=05.0,msix=off -device usb-kbd,bus=xhci.0
     -drive file="$IMAGE",if=virtio,format=raw
     -kernel "$LAB/xen" -append "$XEN_ARGS"
     -initrd "$LAB/vmlinuz $DOM0_ARGS,$LAB/dom0-initrd.cpio.gz")
log "${cmd[*]}"
[ -n "${LAB_RUN:-}" ] || exec "${cmd[@]}"
OUT=${OUT:?set OUT to a directory for the logs of the run}
mkdir -p "$OUT"; S=$OUT/serial.log
s=$(date +%s)
echo "$s" > "$OUT/boot-epoch"  # the serial log's seconds count from here
rm -f "$OUT/host-threads.txt"
( for _ in 1 2 3 4 5 6 7 8 9 10; do   # QEMU's threads, sampled (threads.sh)
    sleep 1; pid=$(pgrep -n -x qemu-system-x86) && break; done
  [ -n "${pid:-}" ] && exec "$(dirname "$0")/threads.sh" "$pid" "$OUT/host-threads.txt" ) &
timeout "${LAB_TIMEOUT:-1800}" "${cmd[@]}" </dev/null | while IFS= read -r line; do
    printf '%4ds %s\n' $(( $(date +%s) - s )) "$line"; done > "$S" || true
# dom0 leaves its results in /root/results of the image (guest consoles, the daemon's log, ...)
debugfs -R "rdump /root/results $OUT" "$IMAGE" >/dev/null 2>&1 || true
grep -aq 'LAB-RESULT' "$S" || { log "no LAB-RESULT in $S (timeout or crash)"; exit 1; }
