#!/bin/bash
# The real-Xen lab: Xen 4.17, a Debian 12 dom0 and PV guests nested in QEMU, built from Debian
# packages and PyPI under $LAB (default ~/.cache/pciback-lab). See lab/README.md.
#   lab/lab.sh build      everything the boots need (the slow parts once; then about 30 s)
#   lab/lab.sh test       build, then the scenarios with the daemon, the same guest with Linux's
#                         xen-pciback, and the report (lab/check.py); exit 0 when every check holds
#   lab/lab.sh bench      build, then one boot whose rounds alternate the daemon and xen-pciback
#                         on the same function (fresh guest each), and the ratios ours/kernel
#                         per round (lab/bench_report.py); LAB_ROUNDS pairs (default 3), after
#                         a warm-up round 0 left out of the ratios (LAB_WARMUP=0: none)
#   lab/lab.sh boot       an interactive dom0 on the serial console
#   lab/lab.sh check DIR  the report of a finished run again (bench-report DIR: of a bench)
. "$(dirname "$0")/host/lib.sh"
H=$HOST_DIR
build() {
  need_root
  local need=()
  for c in qemu-system-x86_64 mke2fs debugfs cpio depmod busybox gcc; do command -v $c >/dev/null || need+=($c); done
  command -v mmdebstrap >/dev/null || command -v debootstrap >/dev/null || need+=(mmdebstrap)
  [ ${#need[@]} = 0 ] || { echo "missing host tools: ${need[*]} (apt-get install qemu-system-x86 e2fsprogs cpio kmod busybox-static gcc mmdebstrap)" >&2; exit 2; }
  local t0; t0=$(date +%s)
  [ -e "$LAB/xen" ] || { log "fetch"; "$H/fetch.sh"; }
  [ -e "$LAB/rootfs/.bootstrap-done" ] || { log "rootfs (once: 1-5 min)"; "$H/build-rootfs.sh"; }
  log "initrds"; "$H/build-initrds.sh"
  log "payload"; "$H/build-payload.sh"
  log "image"; "$H/make-image.sh"
  log "built in $(( $(date +%s) - t0 )) s under $LAB"
}
case ${1:-} in
build) build ;;
boot) build; exec "$H/boot.sh" ;;
test)
  build
  OUT=${OUT:-$LAB/runs/$(date -u +%Y%m%d-%H%M%S)}
  mkdir -p "$OUT"
  for variant in daemon kernel; do
    log "boot: scenarios with the $variant backend (host load $(cut -d' ' -f1-3 /proc/loadavg))"
    s=$(date +%s)
    # Each run writes its image (state directory, logs): each boots a copy of the fresh one.
    cp --sparse=always "$LAB/dom0.ext4" "$OUT/$variant.ext4"
    IMAGE="$OUT/$variant.ext4" LAB_RUN=$variant OUT="$OUT/$variant" "$H/boot.sh" \
      > "$OUT/$variant.boot.log" 2>&1 || log "$variant: the boot did not finish (see $OUT/$variant.boot.log)"
    rm -f "$OUT/$variant.ext4"
    log "$variant run: $(( $(date +%s) - s )) s"
  done
  exec python3 "$LAB_DIR/check.py" "$OUT" ;;
bench)
  build
  OUT=${OUT:-$LAB/runs/bench-$(date -u +%Y%m%d-%H%M%S)}
  mkdir -p "$OUT"
  log "boot: ${LAB_ROUNDS:-3} rounds of each backend (host load $(cut -d' ' -f1-3 /proc/loadavg))"
  s=$(date +%s)
  cp --sparse=always "$LAB/dom0.ext4" "$OUT/bench.ext4"
  IMAGE="$OUT/bench.ext4" LAB_RUN=bench OUT="$OUT/bench" \
    DOM0_EXTRA="${DOM0_EXTRA:-} lab.rounds=${LAB_ROUNDS:-3} lab.warmup=${LAB_WARMUP:-1}${LAB_TRACE:+ lab.trace=1}" "$H/boot.sh" \
    > "$OUT/bench.boot.log" 2>&1 || log "bench: the boot did not finish (see $OUT/bench.boot.log)"
  rm -f "$OUT/bench.ext4"
  log "bench run: $(( $(date +%s) - s )) s"
  exec python3 "$LAB_DIR/bench_report.py" "$OUT" ;;
check) exec python3 "$LAB_DIR/check.py" "${2:?a run directory}" ;;
bench-report) exec python3 "$LAB_DIR/bench_report.py" "${2:?a bench run directory}" ;;
*) sed -n '2,12p' "$0"; exit 2 ;;
esac
