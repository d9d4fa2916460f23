#!/bin/bash
# Step 1: fetch the hypervisor and the kernel as .deb files and unpack them (dpkg -x, no install).
# Produces: $LAB/xen (gunzipped ELF32 multiboot image: QEMU's -kernel multiboot loader cannot
# read xen.gz), $LAB/vmlinuz, $LAB/kernel/lib/modules/<kver>/.
. "$(dirname "$0")/lib.sh"
mkdir -p "$LAB/debs" && cd "$LAB/debs"
KPKG=$(kernel_pkg)
log "downloading $XEN_PKG $KPKG"
# apt-get download runs as _apt where it can; the cache directory may not be its to write.
apt-get -o APT::Sandbox::User=root download "$XEN_PKG" "$KPKG"
rm -rf "$LAB/xenpkg" "$LAB/kernel"
dpkg -x "$XEN_PKG"_*.deb "$LAB/xenpkg"
dpkg -x "$KPKG"_*.deb "$LAB/kernel"
zcat "$LAB"/xenpkg/boot/xen-*-amd64.gz > "$LAB/xen"
cp "$LAB"/kernel/boot/vmlinuz-* "$LAB/vmlinuz"
KV=$(kver)
grep -E '^CONFIG_XEN_PCIDEV_(FRONTEND|BACKEND)=' "$LAB/kernel/boot/config-$KV"
file "$LAB/xen"
log "kernel $KV, xen $(ls "$LAB"/xenpkg/boot/*.gz)"
