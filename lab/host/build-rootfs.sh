#!/bin/bash
# Step 2 (slow part, once): the dom0 root filesystem directory $LAB/rootfs:
#   Debian bookworm + xen-utils-4.17 at the hypervisor's version (bookworm-security) + python3
#   + pciutils, the dom0 kernel's modules copied in (dpkg -x, not installed). Which PCI backend
#   serves the guests (the project's daemon, or Linux's xen-pciback for the side-by-side run) is
#   chosen at boot; make-image.sh then adds the lab files and makes the ext4 image.
# Uses mmdebstrap when installed (apt-get install mmdebstrap: ~1 min here, all three suites in one
# go), else debootstrap (~4.5 min, one mirror only, so the Xen tools are upgraded afterwards).
. "$(dirname "$0")/lib.sh"
KV=$(kver)
R=$LAB/rootfs
PKGS=xen-utils-4.17,xenstore-utils,python3,python3-venv,pciutils,kmod,libatomic1,iproute2,procps,busybox-static,mount,hostname
SOURCES="deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main"
CH="env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot $R"   # no host env (PIP_*, ...)
if [ ! -e "$R/.bootstrap-done" ]; then
  rm -rf "$R"
  if command -v mmdebstrap >/dev/null; then
    log "mmdebstrap $SUITE (variant apt) into $R"
    mmdebstrap --variant=apt --include="$PKGS" "$SUITE" "$R" \
      "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
      "deb $SECURITY_MIRROR $SUITE-security main"
  else
    log "debootstrap $SUITE minbase into $R"
    debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$R" "$MIRROR"
    # debootstrap knows one mirror: bring the Xen tools to the security suite's version (the
    # hypervisor comes from there; libxenctrl must match its domctl/sysctl interface versions).
    echo "$SOURCES" > "$R/etc/apt/sources.list"
    printf '#!/bin/sh\nexit 101\n' > "$R/usr/sbin/policy-rc.d"; chmod +x "$R/usr/sbin/policy-rc.d"
    mount -t proc proc "$R/proc"; trap 'umount "$R/proc"' EXIT
    $CH apt-get update -qq
    $CH env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      ${PKGS//,/ } >/dev/null
    $CH apt-get clean
    umount "$R/proc"; trap - EXIT
  fi
  touch "$R/.bootstrap-done"
fi
$CH dpkg-query -W -f '${Package} ${Version}\n' xen-utils-4.17 libxenstore4 python3
# The dom0 kernel's modules (unpacked, not installed: no initramfs-tools/postinst here).
rm -rf "$R/lib/modules"; mkdir -p "$R/lib/modules"
cp -a "$LAB/kernel/lib/modules/$KV" "$R/lib/modules/"
# Drop what dom0 never loads here (GPU, sound, wireless, ...): ~390 MB -> ~100 MB.
for d in drivers/gpu drivers/media drivers/net/wireless drivers/infiniband drivers/staging \
         sound drivers/iio drivers/hid drivers/bluetooth net/bluetooth drivers/isdn drivers/scsi; do
  rm -rf "$R/lib/modules/$KV/kernel/$d"; done
depmod -b "$R" "$KV"
echo xen-dom0 > "$R/etc/hostname"
log "rootfs $(du -sh "$R" | cut -f1); next: make-image.sh"
