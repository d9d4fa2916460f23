#!/bin/sh
# The guest's side of the lab's scenarios: `lab TAG COMMAND [ARGS]`. Every command prints
# LAB-BEGIN TAG first and LAB-END TAG rc=N last; its lines in between start with LAB-<KIND>.
# dom0 waits for LAB-END TAG in the console log.
tag=$1; cmd=$2; shift 2
now() { cut -d' ' -f1 /proc/uptime; }
mark() { echo "<7>$*" > /dev/kmsg; }   # a dmesg timestamp; level 7 stays off the console
devices() { ls /sys/bus/pci/devices 2>/dev/null; }
netdev_of() { ls "/sys/bus/pci/devices/$1/net" 2>/dev/null | head -1; }
# The name a function's interrupts carry in /proc/interrupts: its netdev, or its driver's.
irq_name_of() {
  n=$(netdev_of "$1"); [ -n "$n" ] && { echo "$n"; return; }
  case $(basename "$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)" 2>/dev/null) in
    xhci_hcd) echo xhci_hcd ;;
  esac; }
run_as() { cmd=$1; shift; run "$@"; }   # one command as a step of another
run() {
case $cmd in
wait-devices)  # N [SECONDS]: until N PCI functions are visible (hot add and remove)
  want=$1; limit=${2:-180}; i=0
  while [ "$(devices | wc -l)" != "$want" ] && [ $i -lt $((limit * 2)) ]; do sleep 0.5; i=$((i+1)); done
  echo "LAB-DEVICES $(devices | tr '\n' ' ')t=$(now)"
  [ "$(devices | wc -l)" = "$want" ];;
devices)
  for d in $(devices); do
    echo "LAB-DEV $d $(cat /sys/bus/pci/devices/$d/vendor):$(cat /sys/bus/pci/devices/$d/device) driver=$(basename "$(readlink /sys/bus/pci/devices/$d/driver 2>/dev/null)" 2>/dev/null) net=$(netdev_of $d)"
  done;;
xxxx)  # ADDR: the guest's lspci -xxxx of one function
  lspci -xxxx -s "$1" | sed "s/^/LAB-XXXX $1 /";;
vvv)   # ADDR: lspci -xxxx -vvv (what the side-by-side with Linux's backend compares)
  lspci -nn -xxxx -vvv -s "$1" | sed "s/^/LAB-VVV $1 /";;
scan)  # the boot-time scan as the guest kernel logged it
  dmesg | grep -E 'pcifront|pci_bus 0000:00|pci 0000:00' | sed 's/^/LAB-SCAN /';;
bench)  # ADDR [ROUNDS]: lspci-loop, then ops (below)
  run_as lspci-loop "${2:-5}"; run_as ops;;
lspci-loop)  # [ROUNDS]: lspci -xxxx -vvv timed by kmsg marks, ROUNDS times (default 5)
  rounds=${1:-5}; n=1
  while [ $n -le "$rounds" ]; do
    mark "LAB-LSPCI $n start"; lspci -xxxx -vvv > /dev/null 2>&1; mark "LAB-LSPCI $n end"; n=$((n+1))
  done
  dmesg | grep 'LAB-LSPCI' | sed 's/^/LAB-LOOP /';;
ops)  # single config reads of the first function timed one by one (cfgbench)
  cfgbench "/sys/bus/pci/devices/$(ls /sys/bus/pci/devices | head -1)/config" 2000 | sed 's/^/LAB-OPS /';;
driver)  # MODE: (re)load e1000e with IntMode MODE (0 INTx, 1 MSI, 2 MSI-X), bring links up
  grep -q '^e1000e ' /proc/modules && rmmod e1000e
  mark "LAB-DRIVER-MARK $1"
  for m in $(cat /lib/mods/drv/order); do
    case $m in e1000e.ko) insmod /lib/mods/drv/$m IntMode=$1,$1 ;; *) insmod /lib/mods/drv/$m 2>/dev/null ;; esac
  done
  i=0; while [ $i -lt 60 ]; do
    all=1; for d in $(devices); do [ -n "$(netdev_of $d)" ] || all=0; done
    [ $all = 1 ] && break; sleep 0.5; i=$((i+1)); done
  for d in $(devices); do n=$(netdev_of $d); [ -n "$n" ] && ip link set "$n" up; done
  sleep 3
  dmesg | sed -n '/LAB-DRIVER-MARK/,$p' | grep -iE 'e1000e|pcifront|msi|irq|gsi' | sed 's/^/LAB-DRIVER /';;
rmmod)
  rmmod e1000e;;
usb)  # load the xHCI driver; its controller's port events raise the first interrupts
  mark "LAB-USB-MARK"
  for m in $(cat /lib/mods/usb/order); do insmod /lib/mods/usb/$m 2>/dev/null; done
  sleep 5
  dmesg | sed -n '/LAB-USB-MARK/,$p' | grep -iE 'xhci|usb|msi|irq' | head -20 | sed 's/^/LAB-USB /';;
irqs)  # per function: its netdev, how its interrupts are delivered, their total count
  for d in $(devices); do
    n=$(irq_name_of $d); [ -n "$n" ] || { echo "LAB-IRQ $d none - 0"; continue; }
    grep -E " $n(-|\$)" /proc/interrupts | sed "s/^/LAB-IRQLINE $d /"
    total=$(grep -E " $n(-|\$)" /proc/interrupts | awk '{s+=$2} END {print s+0}')
    kind=$(grep -E " $n(-|\$)" /proc/interrupts | awk '{print $4}' | head -1)
    echo "LAB-IRQ $d $n ${kind:-none} $total"
  done;;
heartbeat)  # config space still answers
  for d in $(devices); do
    if lspci -x -s "${d#0000:}" > /dev/null 2>&1 && [ "$(cat /sys/bus/pci/devices/$d/vendor)" != 0xffff ]; then
      echo "LAB-HB $d ok"; else echo "LAB-HB $d fail"; fi
  done;;
*) echo "LAB-ERROR unknown command $cmd"; false;;
esac
}
echo "LAB-BEGIN $tag t=$(now)"
run "$@"
echo "LAB-END $tag rc=$? t=$(now)"
