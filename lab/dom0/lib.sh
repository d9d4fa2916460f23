# Helpers of the dom0 scenario scripts (sourced). Guests are driven by typing `lab TAG CMD` on
# their console (xenconsoled's pty) and reading the answer from the console log.
export PATH=/opt/pciback/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LAB=/root/lab
R=/root/results
CONSOLES=/var/log/xen/console
FAILED=0
mkdir -p "$R"

t() { echo "DOM0[$(cut -d' ' -f1 /proc/uptime)] $*"; }

# check NAME DETAIL COMMAND...: run COMMAND; one LAB-CHECK line either way.
check() {
  local name=$1 detail=$2; shift 2
  if "$@"; then echo "LAB-CHECK $name PASS $detail"
  else echo "LAB-CHECK $name FAIL $detail"; FAILED=1; fi
}

# wait_for SECONDS COMMAND...: poll (slowly: every process start costs under TCG) until it succeeds.
# A status of 2 from COMMAND means it can never succeed: give up at once.
wait_for() {
  local limit=$1 i=0 rc; shift
  while true; do
    "$@"; rc=$?
    [ $rc = 0 ] && return 0
    [ $rc = 2 ] && return 1
    i=$((i + 1)); [ $i -ge "$limit" ] && return 1; sleep 1
  done
}

# The project's daemon in the background ($DAEMON), its log appended to $R/daemon.log.
start_daemon() {
  # lab.nice=N on dom0's command line (DOM0_EXTRA): the daemon at that niceness (an experiment:
  # how much of our tail is dom0's other processes taking the daemon's CPU).
  local n
  n=$(sed -n 's/.*lab\.nice=\(-\{0,1\}[0-9]*\).*/\1/p' /proc/cmdline)
  # Driving the real /sys is refused unless asked for (a development machine must be safe).
  PCIBACK_ALLOW_SYSFS_WRITES=1 nice -n "${n:-0}" pciback daemon --config "$LAB/pciback.toml" \
    >> "$R/daemon.log" 2>&1 &
  DAEMON=$!
  if wait_for 120 daemon_up; then return 0; fi
  t "the daemon did not come up; its log:"; tail -20 "$R/daemon.log"; return 1
}
daemon_up() {
  kill -0 "$DAEMON" 2>/dev/null || return 2   # it exited: wait_for stops only on success...
  test -S /var/lib/pciback/control.sock && pciback list >/dev/null 2>&1
}

domid() { xl domid "$1" 2>/dev/null; }
console_log() { echo "$CONSOLES/guest-$1.log"; }

# create NAME: a paused guest (xl create -p), so a device can be attached before it first runs.
create() {
  xl create -p "$LAB/guest.cfg" "name=\"$1\"" >/dev/null 2>&1 || { t "xl create $1 failed"; return 1; }
  t "created $1 as domain $(domid "$1") (paused)"
}

# wait_line SECONDS TEXT FILE: until a line of FILE holds TEXT, by bash builtins alone. gcmd
# waits so while a guest measures: the wait_for loop started grep and sleep every second, tens
# of ms of dom0's CPU each under emulation, taken beside the backend being measured.
wait_line() {
  local end=$((SECONDS + $1)) text=$2 line part= fd nap
  until [ -e "$3" ]; do [ $SECONDS -ge $end ] && return 1; sleep 1; done
  [ -p /run/lab-nap ] || mkfifo /run/lab-nap
  exec {fd}<"$3" {nap}<>/run/lab-nap  # nobody writes the fifo: a read of it waits its timeout
  while true; do
    while IFS= read -r -u "$fd" line; do
      line=$part$line; part=
      [[ $line == *"$text"* ]] && { exec {fd}<&- {nap}<&-; return 0; }
    done
    part=$part$line  # a line still being written: the rest comes with the next read
    [ $SECONDS -ge $end ] && break
    read -r -t 1 -u "$nap" line
  done
  exec {fd}<&- {nap}<&-
  return 1
}

log_has() { grep -aq -- "$1" "$2" 2>/dev/null || return 1; }   # never 2: no log yet is "not yet"
booted() { log_has DOMU-READY "$(console_log "$1")"; }

# gcmd NAME CMD [ARGS]: run `lab` in the guest; its output (LAB- lines, \r stripped) on
# stdout; the status is the command's in the guest (124 when it did not answer in time).
gcmd() {
  local name=$1 d tty log tag
  shift
  d=$(domid "$name") || return 1
  tty=$(xenstore-read "/local/domain/$d/console/tty" 2>/dev/null) || return 1
  log=$(console_log "$name")
  tag="c$(date +%s%N)"   # gcmd runs in $(...) subshells too: no counter would survive
  printf 'lab %s %s\n' "$tag" "$*" > "$tty"
  wait_line "${GCMD_TIMEOUT:-300}" "LAB-END $tag " "$log" || { t "$name: no answer to $*"; return 124; }
  tr -d '\r' < "$log" | awk -v b="LAB-BEGIN $tag " -v e="LAB-END $tag " \
    'index($0, b) == 1 {on = 1} on && /^LAB-/ {print} index($0, e) == 1 {exit}'
  tr -d '\r' < "$log" | grep -a "^LAB-END $tag " | grep -q 'rc=0 '
}

# The IRQ count and delivery kind of a guest function from `lab irqs` output on stdin.
# The guest's kernel writes to the same console: a message can land right after a count
# ("25[  282.75] clocksource: ..."), so only the count's digits are taken.
irq_count() { awk -v d="$1" '$1 == "LAB-IRQ" && $2 == d {v = $5; sub(/[^0-9].*/, "", v); print v}'; }
irq_kind() { awk -v d="$1" '$1 == "LAB-IRQ" && $2 == d {print $4}'; }

# interrupts_arrive NAME GUEST-ADDR KIND-REGEX: the function's interrupt count rises over a few
# seconds (the e1000e watchdog raises one every 2 s once the link is up) and they are delivered
# as KIND (msi-x, msi, or an IO-APIC line for INTx).
interrupts_arrive() {
  local name=$1 addr=$2 want=$3 a b kind
  a=$(gcmd "$name" irqs | tee -a "$R/irqs.log" | irq_count "$addr")
  sleep "${IRQ_WAIT:-10}"
  b=$(gcmd "$name" irqs | tee -a "$R/irqs.log" | irq_count "$addr")
  kind=$(gcmd "$name" irqs | irq_kind "$addr")
  echo "interrupts of $name $addr: ${a:-?} -> ${b:-?} ($kind)"
  [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ] && echo "$kind" | grep -Eq -- "$want"
}

# The guest address the daemon gave a physical function in domain D (from `pciback list`).
guest_address() {
  pciback list --json | python3 -c '
import json, sys
d, phys = int(sys.argv[1]), sys.argv[2]
for g in json.load(sys.stdin)["guests"]:
    if g["domid"] == d:
        for guest, p in g["devices"].items():
            if p == phys:
                print(guest)
' "$1" "$2"
}

owner() {
  pciback list --json | python3 -c '
import json, sys
for dev in json.load(sys.stdin)["devices"]:
    if dev["address"] == sys.argv[1]:
        print("none" if dev["owner"] is None else dev["owner"])
' "$1"
}

# Xen's own view of a function: its owning domain and its MSI IRQs (debug key Q).
xen_view() {
  xl debug-keys Q
  xl dmesg | grep -a "${1#0000:} - " | tail -1
}

# The guest's kernel writes to the same console: a message can land right after a line's last
# byte ("c30: 00 ... 00[  167.36] random: crng init done"), and is cut off first.
hexlines() {
  sed -e 's/\[ *[0-9]*\.[0-9]*\] .*$//' \
    | sed -n 's/^.*\(\b[0-9a-f][0-9a-f][0-9a-f]*: \([0-9a-f][0-9a-f] \)\{15\}[0-9a-f][0-9a-f]\)$/\1/p'
}

# fidelity NAME GUEST-ADDR BDF: the guest's lspci -xxxx of the function, byte for byte, equals
# what the simulated host serves for a dump of the same function taken here through sysfs.
fidelity() {
  local name=$1 addr=$2 bdf=$3 f
  f=$R/fidelity-$name-${bdf//:/_}
  gcmd "$name" xxxx "$addr" | sed 's/^LAB-XXXX [^ ]* //' > "$f.guest.txt"
  lspci -xxxx -s "$bdf" > "$f.dom0-dump.txt"
  pciback view "$f.dom0-dump.txt" --host-irq "$(cat "/sys/bus/pci/devices/$bdf/irq")" > "$f.sim.txt"
  diff <(hexlines < "$f.guest.txt") <(hexlines < "$f.sim.txt") > "$f.diff"
  local lines; lines=$(hexlines < "$f.guest.txt" | wc -l)
  echo "fidelity $name $addr ($bdf): $lines lines compared, $(grep -c '^<' "$f.diff") differ"
  [ "$lines" -ge 256 ] && [ ! -s "$f.diff" ]
}

# What dom0 and Xen see of a function's interrupts: its capabilities' control registers and
# Xen's MSI state (debug key M), for the record of each driver load.
physical_irq_state() {
  lspci -vv -s "$1" | grep -E 'Control:|MSI|Interrupt'
  xl debug-keys M; xl dmesg | grep -a -E 'MSI|msi' | tail -12
}

# What the daemon's work costs in this dom0, in microseconds: a 4-byte pread of a function's
# sysfs config (a system call and a config cycle), the same through /proc/bus/pci, a bare
# system call, and an iteration of an empty Python loop (the interpreter's speed here).
dom0_costs() {
  /opt/pciback/bin/python3 - "$A" <<'PY'
import os, sys, time
fd = os.open(f"/sys/bus/pci/devices/{sys.argv[1]}/config", os.O_RDONLY)
def per(n, fn):
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n * 1e6
pread = per(300, lambda i: os.pread(fd, 4, (i % 64) * 4))
# The same bytes through procfs (no kernfs layer): worth a port of its own if much cheaper.
domain, bus, rest = sys.argv[1].split(":")
proc = os.open(f"/proc/bus/pci/{bus}/{rest}", os.O_RDONLY)
proc_pread = per(300, lambda i: os.pread(proc, 4, (i % 64) * 4))
syscall = per(300, lambda i: os.getppid())
loop = per(20000, lambda i: None)
print(f"LAB-DOM0COST pread_us={pread:.1f} proc_pread_us={proc_pread:.1f} syscall_us={syscall:.1f}"
      f" python_call_us={loop:.2f}")
PY
  /opt/pciback/bin/python3 /root/lab/opcost.py   # the op's pieces, each alone (LAB-OPCOST)
}
