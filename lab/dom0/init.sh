#!/bin/bash
# PID 1 of the lab's dom0 (installed as /sbin/lab-init). No systemd: mount what the Xen tools
# need, load the Xen device modules, start xenstored and xenconsoled as Debian's init script
# does, then run the scenarios the kernel command line names (lab.run=daemon|kernel) and power
# off, or give a shell on the console.
export PATH=/opt/pciback/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
t() { echo "DOM0[$(cut -d' ' -f1 /proc/uptime)] $*"; }
mount -t proc proc /proc 2>/dev/null; mount -t sysfs sys /sys
mountpoint -q /dev || mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -o remount,rw /
mount -t tmpfs tmpfs /run; mkdir -p /run/xen /run/xenstored /var/log/xen /var/run
mount -t tmpfs tmpfs /tmp
hostname xen-dom0
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd pci-stub; do modprobe $m || t "modprobe $m failed"; done
mount -t xenfs xenfs /proc/xen
XB=$(ls -d /usr/lib/xen-*/bin | head -1)
export XENSTORED_ROOTDIR=/run/xenstored
${XENSTORED:-$(command -v xenstored || echo $XB/xenstored)} --pid-file /run/xen/xenstored.pid
for i in $(seq 50); do xenstore-read /local >/dev/null 2>&1 && break; sleep 0.2; done
$XB/xen-init-dom0 >/dev/null && t "xen-init-dom0 done"
mkdir -p /var/log/xen/console
$XB/xenconsoled --pid-file=/run/xen/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
xl info | grep -E 'xen_version|virt_caps'
# lab.dom0weight=N (DOM0_EXTRA): dom0's credit2 weight (Xen's default 256), for both backends,
# as Xen's tuning guide advises for a dom0 that serves guests' I/O.
w=$(sed -n 's/.*lab\.dom0weight=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$w" ] && xl sched-credit2 -d 0 -w "$w" && t "dom0 weight $w" && xl sched-credit2
# lab.guestcpus=LIST (DOM0_EXTRA): the pCPUs the guests may run on (xl's cpus=), for both
# backends; with XEN_EXTRA="dom0_max_vcpus=1 dom0_vcpus_pin" dom0 and the guests then never
# share a pCPU (an experiment: how much of the tail is the two competing for one).
sed -i '/^cpus = /d' /root/lab/guest.cfg
c=$(sed -n 's/.*lab\.guestcpus=\([0-9,-]*\).*/\1/p' /proc/cmdline)
[ -n "$c" ] && echo "cpus = \"$c\"" >> /root/lab/guest.cfg && t "guests on pCPUs $c"
# lab.linger=US (DOM0_EXTRA): the daemon's op_linger_us for this boot (an experiment: a shorter
# look for the next op spends less of the host on lingering).
l=$(sed -n 's/.*lab\.linger=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$l" ] && sed -i "s/^op_linger_us = .*/op_linger_us = $l/" /root/lab/pciback.toml && t "op_linger_us $l"
t "dom0 ready"
run=$(sed -n 's/.*lab\.run=\([a-z]*\).*/\1/p' /proc/cmdline)
if [ -n "$run" ] && [ -x "/root/lab/scenarios-$run.sh" ]; then
  mkdir -p /root/results
  "/root/lab/scenarios-$run.sh"; rc=$?
  cp -a /var/log/xen/console/. /root/results/ 2>/dev/null
  xl dmesg > /root/results/xl-dmesg.log 2>&1
  dmesg > /root/results/dom0-dmesg.log
  t "scenarios exit $rc"; echo "LAB-RESULT rc=$rc"
  sync; busybox poweroff -f
fi
exec setsid bash -c 'exec bash -i </dev/hvc0 >/dev/hvc0 2>&1'
