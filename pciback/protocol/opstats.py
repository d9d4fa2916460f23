"""How long a connection's ops take inside the daemon: counters cheap enough for every op.

Every op is counted; one in a few is timed (BackendConnection's `time_every`), as reading the
clock is a system call where it has no vDSO (a PV dom0). An op's service time runs from the
wake-up that found it (the moment the event channel's wait returned) or, for an op found after
another, from the moment it was found, to the return of the notify that hands the answer back
(to the active bit cleared when the answer's event waits for the guest's next op, see
pciback.protocol.answer_events). The mean, the maximum and the histogram are over the timed ops;
of each timed op's service time, the hand-back (the active bit cleared and, unless it waits, the
notify's system call, a hypercall in a real dom0) is also summed apart, by wall and by the
thread's CPU time, to tell Xen's part from the interpreter's and a hypercall's work from the
time its vCPU was not running (the CPU time of a PV guest's thread leaves out the time Xen ran
another vCPU in its place). What a guest
measures beyond that is outside the daemon: the guest's own kernel, Xen, dom0's kernel and its
scheduler, and the thread's wait for the GIL after its wake-up.

The service thread's busy time runs from each wake-up to the moment it goes to sleep again: the
ops, and what it does once they are answered (the views queued for the state writer, the
event taken and its port unmasked). Beyond the ops' service time, that work delays an op only
when the guest posts it before the thread is back asleep.

Written by the service thread alone; `as_dict` may run on any thread and then sees counters
that are each right but may be an op apart from one another.
"""

from __future__ import annotations

from typing import Any

# Bucket 0 holds ops under 1 µs, bucket k (1 <= k < BUCKETS - 1) those in [2^(k-1), 2^k) µs,
# the last one everything from 2^(BUCKETS - 2) µs (about 4.2 s) up.
BUCKETS = 24


class OpStats:
    __slots__ = (
        "busy_ns",
        "handback_cpu_ns",
        "handback_ns",
        "histogram",
        "max_ns",
        "ops",
        "service_ns",
        "timed",
        "wakeups",
    )

    def __init__(self) -> None:
        self.ops = 0  # every op served, timed or not
        self.timed = 0  # the ops of `service_ns`, `max_ns` and `histogram`
        self.wakeups = 0  # wake-ups of the service thread, whether or not they found an op
        self.service_ns = 0
        self.handback_ns = 0  # the part of `service_ns` from the answer in the page on
        self.handback_cpu_ns = 0  # the service thread's CPU time in `handback_ns`
        self.busy_ns = 0  # up to the last wake-up but one: the last one's ends with its sleep
        self.max_ns = 0
        self.histogram = [0] * BUCKETS

    def record(self, ns: int, handback_ns: int = 0, handback_cpu_ns: int = 0) -> None:
        """One op served, and timed: `ns` nanoseconds, the last `handback_ns` of them handing
        the answer back, with `handback_cpu_ns` of the thread's CPU time."""
        self.ops += 1
        self.timed += 1
        self.service_ns += ns
        self.handback_ns += handback_ns
        self.handback_cpu_ns += handback_cpu_ns
        if ns > self.max_ns:
            self.max_ns = ns
        bucket = (ns // 1000).bit_length()
        self.histogram[bucket if bucket < BUCKETS else BUCKETS - 1] += 1

    def as_dict(self) -> dict[str, Any]:
        """The counters as `pciback list --json` shows them (times in µs, except the exact
        total in ns, all over the `timed_ops`); `histogram` lists the non-empty buckets,
        `below_us` None for the last."""
        timed, total, histogram = self.timed, self.service_ns, list(self.histogram)
        return {
            "ops": self.ops,
            "wakeups": self.wakeups,
            "timed_ops": timed,
            "service_ns_total": total,
            "handback_ns_total": self.handback_ns,
            "handback_cpu_ns_total": self.handback_cpu_ns,
            "busy_ns_total": self.busy_ns,
            "service_us_mean": round(total / timed / 1000, 1) if timed else None,
            "service_us_max": round(self.max_ns / 1000, 1),
            "histogram": [
                {"from_us": bucket_floor(k), "below_us": bucket_ceiling(k), "ops": n}
                for k, n in enumerate(histogram)
                if n
            ],
        }


def bucket_floor(k: int) -> int:
    return 0 if k == 0 else 1 << (k - 1)


def bucket_ceiling(k: int) -> int | None:
    return None if k == BUCKETS - 1 else 1 << k


def percentile_ceiling(stats: dict[str, Any], fraction: float) -> int | None:
    """An upper bound (µs) of the `fraction` percentile of service time, from `as_dict`'s
    histogram; None when there is no op or it falls in the open last bucket."""
    ops = sum(bucket["ops"] for bucket in stats["histogram"])
    seen = 0
    for bucket in stats["histogram"]:
        seen += bucket["ops"]
        if ops and seen >= fraction * ops:
            ceiling: int | None = bucket["below_us"]
            return ceiling
    return None


__all__ = ["BUCKETS", "OpStats", "bucket_ceiling", "bucket_floor", "percentile_ceiling"]
