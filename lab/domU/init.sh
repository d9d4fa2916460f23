#!/bin/sh
# PID 1 of the lab's PV guest (busybox): load xen-pcifront, then a shell on the console. dom0
# drives the scenarios by typing `lab ...` commands on this console (dom0's lab/dom0/lib.sh)
# and reads the answers from the console log xenconsoled keeps.
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# `xl shutdown` makes the kernel run /sbin/poweroff; busybox's would only signal PID 1 (this
# script's shell), which ignores it.
rm -f /sbin/poweroff; printf '#!/bin/sh\nexec busybox poweroff -f\n' > /sbin/poweroff; chmod +x /sbin/poweroff
echo "DOMU-UP uptime=$(cut -d' ' -f1 /proc/uptime)"
insmod /lib/mods/xen-pcifront.ko && echo "DOMU: xen-pcifront loaded"
export PS1='domU# ' HOME=/ PATH=/bin:/sbin:/usr/bin
echo "DOMU-READY"
exec setsid cttyhack sh
