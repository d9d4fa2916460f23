#!/bin/bash
# The benchmark of the two backends in one boot (lab/lab.sh bench): rounds that alternate the
# project's daemon and Linux's xen-pciback on the same function, each round a fresh guest whose
# boot-time scan, lspci loop and timed config reads are kept in $R/bench/ROUND-BACKEND/.
# Between boots of the lab the host's speed moves 2x and the two backends' boots ran minutes
# apart; here each pair runs back to back, in the order ABBA (the daemon first in odd rounds),
# so a drift of the host's speed within the boot falls on both sides alike.
# lab.rounds=N on dom0's command line (DOM0_EXTRA) sets the number of pairs (default 3), and
# lab.warmup=1 runs a round 0 first, which the report shows but leaves out of the ratios: under
# emulation the daemon's first minutes after boot run slower than the rest (QEMU translates
# the interpreter's code as it first runs), which the kernel backend's few paths barely feel.
. /root/lab/lib.sh
A=0000:00:03.0
ROUNDS=$(sed -n 's/.*lab\.rounds=\([0-9]*\).*/\1/p' /proc/cmdline)
ROUNDS=${ROUNDS:-3}
FIRST=1; grep -qw lab.warmup=1 /proc/cmdline && FIRST=0

released() { [ "$(owner "$A")" = none ]; }
backend_gone() { ! xenstore-ls "/local/domain/0/backend/pci/$1" >/dev/null 2>&1; }
in_pool() { pciback assignable-list 2>/dev/null | grep -q "$A"; }

# lab.trace=1 (LAB_TRACE=1 lab/lab.sh bench): Xen's scheduler traced during the lspci loop,
# the runstate changes only (TRC_SCHED_MIN: the other scheduler events are twenty times as many
# and their tracing slows the loop), read out once a second; xenalyze's dump of them is kept
# gzipped for the report (lab/sched_trace.py), made once the guest's measures are over.
TRACING=; grep -qw lab.trace=1 /proc/cmdline && TRACING=1
# xenalyze turns TSC cycles into seconds at the speed Xen found at boot (read before later
# messages push it out of Xen's console ring).
CPU_MHZ=$(xl dmesg | sed -n 's/.*Detected \([0-9]*\)[.0-9]* MHz processor.*/\1/p' | head -1)
trace_start() {
  [ -n "$TRACING" ] || return 0
  xentrace -D -e 0x00021000 -S 1024 -s 1000 "$1/sched.trc" > "$1/xentrace.log" 2>&1 &
  TRACER=$!
  sleep 1  # xentrace sets up its buffers before the loop starts
}
trace_stop() {
  [ -n "${TRACER:-}" ] || return 0
  kill -INT "$TRACER"; wait "$TRACER"; TRACER=
}
trace_dump() {
  [ -e "$1/sched.trc" ] || return 0
  [ -n "$CPU_MHZ" ] || { t "no CPU speed in xl dmesg: the trace is left undumped"; return 1; }
  xenalyze --dump-all --cpu-hz="${CPU_MHZ}M" "$1/sched.trc" 2>> "$1/xentrace.log" \
    | grep runstate_ | gzip > "$1/sched.txt.gz" && rm -f "$1/sched.trc"
}

# counters WHEN DIR: the daemon's counters (when it serves) before, between and after the
# guest's two loops.
counters() { [ -z "${DAEMON:-}" ] || pciback list --json > "$2/list-$1-bench.json"; }

# The guest's figures: its boot-time scan, an lspci loop, then single reads timed one by one.
measure() {
  local name=$1 dir=$2
  booted "$name" || wait_for 240 booted "$name" || { t "$name did not boot"; return 1; }
  gcmd "$name" wait-devices 1 > /dev/null || { t "$name does not see $A"; return 1; }
  gcmd "$name" scan > "$dir/scan.txt"
  counters before "$dir"
  trace_start "$dir"
  echo "LAB-MEASURE $name start"  # the window of the host's samples (lab/bench_report.py)
  grep '^cpu' /proc/stat > "$dir/dom0-stat-before.txt"  # dom0's vCPUs: busy, idle, stolen
  gcmd "$name" lspci-loop > "$dir/bench.txt"
  trace_stop
  counters between "$dir"
  gcmd "$name" ops >> "$dir/bench.txt"
  grep '^cpu' /proc/stat > "$dir/dom0-stat-after.txt"
  echo "LAB-MEASURE $name end"
  trace_dump "$dir"
  counters after "$dir"
  grep -E 'LAB-OPS' "$dir/bench.txt"
}

# The daemon takes the function (hide= at its start), serves a guest, and gives it back to no
# driver when it stops, for the kernel's round to take.
daemon_round() {
  local name=d$1 dir=$2 rc=0 id
  start_daemon || return 1
  in_pool || pciback assignable-add "$A" || { t "the daemon could not take $A"; rc=1; }
  if [ $rc = 0 ] && create "$name"; then
    id=$(domid "$name")
    if pciback attach "$id" "$A"; then
      xl unpause "$name"; measure "$name" "$dir" || rc=1
    else rc=1; fi
    xl destroy "$name"
    wait_for 60 released || { t "$A not released"; rc=1; }
    wait_for 60 backend_gone "$id" || { t "d$id's backend directory left"; rc=1; }
  else rc=1; fi
  pciback assignable-remove "$A" || { t "the daemon kept $A"; rc=1; }
  kill -TERM "$DAEMON"; wait "$DAEMON"; DAEMON=
  return $rc
}

# Linux's xen-pciback takes the function as an xl user gives it (pci= in the guest's config),
# and the module leaves again when the guest is gone.
kernel_round() {
  local name=k$1 dir=$2 rc=0
  modprobe xen-pciback || { t "modprobe xen-pciback failed"; return 1; }
  xl pci-assignable-add "$A" 2>&1 || rc=1
  if [ $rc = 0 ] && xl create "$LAB/guest.cfg" "name=\"$name\"" "pci=[\"$A\"]" >/dev/null 2>&1; then
    measure "$name" "$dir" || rc=1
    xl destroy "$name"
  else t "xl create $name failed"; rc=1; fi
  xl pci-assignable-remove "$A" 2>&1 || rc=1
  modprobe -r xen-pciback || { t "xen-pciback stays loaded"; rc=1; }
  return $rc
}

t "benchmark: $ROUNDS rounds (from round $FIRST), the daemon and xen-pciback alternating on $A"
for round in $(seq "$FIRST" "$ROUNDS"); do
  order="daemon kernel"; [ $((round % 2)) = 0 ] && order="kernel daemon"
  for backend in $order; do
    dir=$R/bench/$round-$backend; mkdir -p "$dir"
    echo "LAB-ROUND $round $backend start"
    if "${backend}_round" "$round" "$dir"; then echo "LAB-ROUND $round $backend done"
    else echo "LAB-ROUND $round $backend FAIL"; FAILED=1; break 2; fi
  done
done
grep -c 'pciback not responding' "$CONSOLES"/guest-*.log
exit $FAILED
