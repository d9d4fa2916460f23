"""How long a service thread keeps looking at the shared page for the guest's next op before it
goes to sleep on the event channel.

Ops come in bursts: a boot-time scan or an lspci reads hundreds of dwords back to back, one op
at a time. Sleeping between two of them costs a hypervisor event to dom0, a scheduler wake-up
and three system calls (poll, the event's read, the port's unmask), far more than looking at
the flags word for a moment; Linux's in-kernel backend pays none of it. So after answering, the
thread looks for the next op for a window learnt from the gaps it saw between an answer and
the next op: it follows a multiple of their moving average up at once and down slowly, and
doubles at each miss, within a cap. The gaps are bimodal: a guest that sees the answer before
it has gone to sleep posts its next op at once (found at the first look), one that slept needs
the answer's event first. Only the second kind teaches the gap: an average over both would
shrink the window below it and never learn it back, since a miss teaches no gap.

The window is counted in looks at the flags word, not read off a clock: where the clock has no
vDSO (a PV dom0, whose clock source is Xen's) every clock read is a system call, dearer than a
look. The clock is read once every LOOKS_PER_CLOCK looks, to learn what a look costs, and so to
turn the cap and the floor, which are times, into looks. The cap in looks never drops below
what one measure needs (MEASURABLE_LOOKS), so that a cost measured too high is measured again.

An op found while lingering is a hit; a window that ends without one is a miss; one ended for
another guest's waiting op is a yield (pciback.protocol.neighbours), which teaches nothing.
After a few misses in a row the thread stops lingering for a number of wake-ups, then tries
again: a guest whose ops come rarely costs no spinning, and the cap bounds what any guest can
make the thread spin for one op. Such a back-off ends early when the guest is busy again: two
wake-ups in a row that each came within the cap of going to sleep are ops a look of the cap
would have found. In the lab a guest reading in a loop hit four misses in a row when its vCPU
was preempted for a few ms, and the back-off that followed served the next 64 of its ops each
through a wake-up, half of all the wake-ups of a benchmark (run 43). An early end is a trial:
when the lingering it brings back misses again before RESUME_PROOF_HITS hits, the next back-off
is twice as long and runs its course. On a host short of CPU (lab run 45: dom0 a sixth of its
speed) every window missed, and a back-off ended early each time spun four more windows.
"""

from __future__ import annotations

import math

MISSES_BEFORE_BACKOFF = 4
BACKOFF_WAKEUPS = 64
QUICK_WAKEUPS_END_BACKOFF = 2  # in a row, each within the cap of the sleep before it
RESUME_PROOF_HITS = 64  # hits after a back-off ended early that show lingering pays again
LONGEST_BACKOFF_WAKEUPS = 1024
WINDOW_PER_GAP = 4  # the window, in average gaps: room for a gap of four times the usual
FLOOR_NS = 20_000  # a window never shorter: the first gaps are learnt from it
# After a yield: while another guest is busy too, lingering takes a CPU its thread needs, and
# the next op of a flooding guest would only yield again (bench/bench_fairness.py: a victim's
# p99 under flood 3.5x its own alone with 64 wake-ups off, 2.4-2.7x with 256-1024).
YIELD_OFF_WAKEUPS = 1024
LOOKS_PER_CLOCK = 32  # a power of two: the look loop tests it with a mask
# The fewest looks a window may be cut to by the cap: a measure needs two clock reads in one
# window, LOOKS_PER_CLOCK looks apart. Without it, a look cost measured far too high (the
# first run of looks preempted) turned the cap into fewer looks than a measure needs, and no
# later measure could correct it: in lab run 51 one measure of 99 µs a look (15-22 µs in other
# runs) held all boot long, the window shrank to 50 looks, and half the ops needed a wake-up.
# A window this long may outlast the cap in time, by at most this many looks.
MEASURABLE_LOOKS = 2 * LOOKS_PER_CLOCK + 1
# What a look is taken to cost until one is measured: far below any machine's, so the first
# window, counted with it, is long in looks and is cut to the cap by the first measurement.
FIRST_LOOK_NS = 1


class Linger:
    def __init__(self, cap_ns: int) -> None:
        """`cap_ns`: the longest window; 0 never lingers."""
        self.cap_ns = max(0, cap_ns)
        self.look_ns = FIRST_LOOK_NS  # learnt by `measured`
        self._cap_looks = self.cap_ns // self.look_ns
        self._floor_looks = min(self._cap_looks, FLOOR_NS // self.look_ns)
        # Learnt from hits, in looks: a time would need the cost of a look, and the hits that
        # come before the first measure of it would be learnt with a wrong one. None: no hit.
        self._average_looks: float | None = None
        self._window = math.inf  # in looks, before the cap and the floor
        self._misses = 0  # in a row
        self._off_for = 0  # wake-ups left without lingering
        self._backing_off = False  # the wake-ups off are a back-off (not a yield's)
        self._quick = 0  # wake-ups in a row, during a back-off, that came within the cap
        self._backoff_wakeups = BACKOFF_WAKEUPS  # the next back-off's length
        self._may_resume = True  # whether quick wake-ups may end the back-off under way
        self._trial_hits: int | None = None  # hits since a back-off ended early; None: none on
        self.hits = 0
        self.misses = 0  # in all
        self.backoffs = 0
        self.resumed = 0  # back-offs ended early by quick wake-ups
        self.yields = 0  # windows ended for another guest's op (pciback.protocol.neighbours)

    def window(self) -> int:
        """How many looks for the next op now; 0: sleep at once."""
        if not self._cap_looks or self._off_for:
            return 0
        return max(self._floor_looks, min(self._cap_looks, int(min(self._window, 1 << 62))))

    def window_ns(self) -> int:
        """The window as a time, at what a look costs as last measured."""
        return self.window() * self.look_ns

    def measured(self, ns: int) -> None:
        """LOOKS_PER_CLOCK looks, one after the other, took `ns` nanoseconds in all. A quicker
        run than the estimate is taken at once; a slower one moves it up by a sixteenth at
        most: a run of looks is slowed by every interrupt, preemption and GIL hand-off that
        falls into it (under emulation often), and an estimate that followed those would cut
        the window, in looks, far below the cap."""
        look_ns = max(1, ns // LOOKS_PER_CLOCK)
        if look_ns > self.look_ns and self.look_ns != FIRST_LOOK_NS:
            look_ns = self.look_ns + max(1, min(look_ns - self.look_ns, self.look_ns) // 16)
        if look_ns == self.look_ns:
            return
        self.look_ns = look_ns
        self._cap_looks = max(self.cap_ns // look_ns, MEASURABLE_LOOKS) if self.cap_ns else 0
        self._floor_looks = min(self._cap_looks, FLOOR_NS // look_ns)

    def hit(self, looks: int) -> None:
        """An op was found after `looks` looks that did not find it."""
        self.hits += 1
        self._misses = 0
        if self._trial_hits is not None:
            self._trial_hits += 1
            if self._trial_hits >= RESUME_PROOF_HITS:  # lingering pays again: trial over
                self._trial_hits = None
                self._backoff_wakeups = BACKOFF_WAKEUPS
        if looks <= 0:  # there at the first look: it says nothing of how long to look
            return
        if self._average_looks is None:
            self._average_looks = looks
        else:
            self._average_looks += (looks - self._average_looks) / 8
        wanted = WINDOW_PER_GAP * self._average_looks
        current = min(self._window, self._cap_looks)
        if wanted >= current:
            self._window = wanted
        else:  # down slowly: one quick answer must not undo what the misses taught
            self._window = current - (current - wanted) / 16

    def miss(self) -> None:
        """A window ended without an op: the next one is twice as long, within the cap."""
        self._window = min(2 * self.window(), self._cap_looks)
        self.misses += 1
        self._misses += 1
        if self._misses >= MISSES_BEFORE_BACKOFF:
            self._misses = 0
            failed_trial = self._trial_hits is not None
            if failed_trial:  # lingering was brought back early and did not pay
                self._backoff_wakeups = min(2 * self._backoff_wakeups, LONGEST_BACKOFF_WAKEUPS)
            self._trial_hits = None
            self._may_resume = not failed_trial
            self._off_for = self._backoff_wakeups
            self._backing_off = True
            self._quick = 0
            self.backoffs += 1

    def yielded(self) -> None:
        """A window ended, or was not begun, for another guest's waiting op. Neither a hit nor a
        miss, it teaches nothing of this guest's gaps; but while other guests are busy too, a
        spinning thread takes a CPU their threads need (pciback.protocol.neighbours), so the
        thread stops lingering for YIELD_OFF_WAKEUPS wake-ups."""
        self.yields += 1
        self._off_for = YIELD_OFF_WAKEUPS
        self._backing_off = False  # a busy neighbour, not an idle guest: quick wake-ups stay

    def woke(self, slept_ns: int | None = None) -> None:
        """A wake-up from sleep, after `slept_ns` asleep (None: not known): one fewer before
        lingering is tried again; none at all when a back-off sees the guest busy again."""
        if not self._off_for:
            return
        self._off_for -= 1
        if not self._backing_off or not self._may_resume or not self._off_for:
            return
        if slept_ns is None or not 0 <= slept_ns < self.cap_ns:
            self._quick = 0
            return
        self._quick += 1
        if self._quick >= QUICK_WAKEUPS_END_BACKOFF:
            self._off_for = 0
            self._trial_hits = 0
            self.resumed += 1

    def as_dict(self) -> dict[str, int | float | None]:
        """What `pciback list --json` shows: the counts, and the window as it stands."""
        average = self._average_looks
        return {
            "hits": self.hits,
            "misses": self.misses,
            "backoffs": self.backoffs,
            "resumed": self.resumed,
            "yields": self.yields,
            "look_ns": self.look_ns,
            "gap_looks_mean": None if average is None else round(average, 1),
            "window_looks": self.window(),
        }
