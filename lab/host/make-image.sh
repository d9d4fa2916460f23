#!/bin/bash
# Step 5 (about 10 s): the lab's files and the project (a venv, installed offline from the
# payload's wheels) into the dom0 rootfs, then $LAB/dom0.ext4 straight from the directory
# (mke2fs -d: no loop mount). Run again after any change to lab/dom0, lab/domU or the project.
. "$(dirname "$0")/lib.sh"
R=$LAB/rootfs
[ -e "$R/.bootstrap-done" ] || { echo "run build-rootfs.sh first" >&2; exit 1; }
CH="env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot $R"
install -m 0755 "$LAB_DIR/dom0/init.sh" "$R/sbin/lab-init"
rm -f "$R/etc/modprobe.d/no-xen-pciback.conf"   # the backend is chosen at boot (lab.backend=)
rm -rf "$R/root/lab"; mkdir -p "$R/root/lab"
cp "$LAB/domU-initrd.cpio.gz" "$LAB/vmlinuz" "$R/root/lab/"
cp -a "$LAB_DIR/dom0/." "$R/root/lab/"
cp -a "$LAB/payload/wheels" "$R/root/lab/"
rm -rf "$R/opt/pciback"
$CH python3 -m venv /opt/pciback
$CH /opt/pciback/bin/pip install -q --no-index --find-links /root/lab/wheels pciback py-spy
$CH /opt/pciback/bin/pciback --version >&2
rm -rf "$R/var/lib/pciback" "$R/var/log/xen/console" "$R/root/results"
SIZE_MB=$(( $(du -sm "$R" | cut -f1) + 512 ))
rm -f "$LAB/dom0.ext4"
mke2fs -q -t ext4 -L dom0root -d "$R" "$LAB/dom0.ext4" "${SIZE_MB}M"
log "dom0.ext4 ${SIZE_MB}M ($(du -sh "$LAB/dom0.ext4" | cut -f1) allocated)"
