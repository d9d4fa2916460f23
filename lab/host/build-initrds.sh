#!/bin/bash
# Step 3 (seconds): two busybox initramfs images, from busybox-static (a host package) and the
# unpacked kernel's modules:
#   $LAB/dom0-initrd.cpio.gz  loads virtio-blk + ext4, mounts /dev/vda, switch_root to the lab's init
#   $LAB/domU-initrd.cpio.gz  the PV guest: xen-pcifront, the e1000e driver, lspci, the guest's
#                             side of the scenarios (lab/domU) and cfgbench (per-op latency)
. "$(dirname "$0")/lib.sh"
KV=$(kver)
BB=$(command -v busybox)
file -L "$BB" | grep -q 'statically linked' || { echo "need busybox-static" >&2; exit 1; }
depmod -b "$LAB/kernel" "$KV"
mods() { # the .ko files (dependencies first) for module names $@
  for m in "$@"; do modprobe -d "$LAB/kernel" -S "$KV" --show-depends "$m" | awk '/^insmod/{print $2}'; done | awk '!seen[$0]++'; }
mkinitrd() { # dir out
  (cd "$1" && find . | cpio -o -H newc --quiet) | gzip -1 > "$2"; log "$2 $(du -h "$2" | cut -f1)"; }
skel() { # dir
  rm -rf "$1"; mkdir -p "$1"/{bin,sbin,proc,sys,dev,tmp,mnt,lib/mods,newroot}
  cp "$BB" "$1/bin/busybox"; ln -s busybox "$1/bin/sh"; }

# dom0 initramfs
D=$LAB/initrd-dom0; skel "$D"
for k in $(mods virtio_pci virtio_blk ext4); do cp "$k" "$D/lib/mods/"; echo "$(basename "$k")"; done > "$D/lib/mods/order"
cat > "$D/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /lib/mods/order); do insmod /lib/mods/$m 2>/dev/null; done
root=/dev/vda; for a in $(cat /proc/cmdline); do case $a in root=*) root=${a#root=};; esac; done
i=0; while [ ! -b $root ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
mount -t ext4 $root /newroot || { echo "initrd: cannot mount $root"; exec sh; }
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/lab-init
INIT
chmod +x "$D/init"; mkinitrd "$D" "$LAB/dom0-initrd.cpio.gz"

# domU initramfs
U=$LAB/initrd-domU; skel "$U"
for k in $(mods xen-pcifront); do cp "$k" "$U/lib/mods/"; done
mkdir -p "$U/lib/mods/drv"
for k in $(mods e1000e); do cp "$k" "$U/lib/mods/drv/"; echo "$(basename "$k")"; done > "$U/lib/mods/drv/order"
mkdir -p "$U/lib/mods/usb"
for k in $(mods xhci-pci); do cp "$k" "$U/lib/mods/usb/"; echo "$(basename "$k")"; done > "$U/lib/mods/usb/order"
install -m 0755 "$LAB_DIR/domU/init.sh" "$U/init"
install -m 0755 "$LAB_DIR/domU/lab.sh" "$U/bin/lab"
gcc -O2 -static -o "$U/bin/cfgbench" "$LAB_DIR/domU/cfgbench.c"
R=$LAB/rootfs   # lspci and its libraries, from the dom0 rootfs
mkdir -p "$U/usr/bin" "$U/usr/share/misc"
cp "$R/usr/bin/lspci" "$U/usr/bin/"
cp "$R/usr/share/misc/pci.ids" "$U/usr/share/misc/" 2>/dev/null || true
for lib in $(chroot "$R" ldd /usr/bin/lspci | awk '/=>/{print $3} /ld-linux/{print $1}'); do
  mkdir -p "$U$(dirname "$lib")"; cp -L "$R$lib" "$U$lib"; done
[ -e "$U/lib64" ] || ln -s lib "$U/lib64" 2>/dev/null || true
mkinitrd "$U" "$LAB/domU-initrd.cpio.gz"
