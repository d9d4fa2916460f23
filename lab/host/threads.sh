#!/bin/bash
# Samples the host CPU time of each of QEMU's threads once a second while it runs, so the report
# can tell how busy the host was during each benchmark (TCG runs a vCPU per host thread; on a
# 2-core host two busy vCPUs and QEMU's main loop contend for the cores, and a vCPU thread the
# host preempts is time the L1 machine cannot see). With it, the time each thread waited for a
# host core while runnable (schedstat's run delay): the contention itself, as the host saw it.
# Run by boot.sh; costs a few reads of /proc.
#   threads.sh PID FILE    one line per thread and second:
#                          epoch tid user+system-ticks waited-us name
#                          (waited-us missing where /proc has no schedstat)
pid=$1 out=$2
while kill -0 "$pid" 2>/dev/null; do
  now=$(date +%s)
  for task in /proc/"$pid"/task/*; do
    read -r stat < "$task/stat" 2>/dev/null || continue
    read -r name < "$task/comm" 2>/dev/null || continue
    # ns runnable, not running; left out where the host keeps no schedstat (the report then
    # says nothing of waits rather than 0)
    waited=; read -r _ delay _ < "$task/schedstat" 2>/dev/null && waited=" $(( delay / 1000 ))"
    set -- ${stat##*) }   # after "pid (comm) ": state is $1, utime ${12}, stime ${13}
    echo "$now ${task##*/} $(( ${12} + ${13} ))$waited $name"
  done >> "$out"
  sleep 1
done
