"""How long a service thread keeps looking at the shared page for the guest's next op before it
goes to sleep on the event channel.

Ops come in bursts: a boot-time scan or an lspci reads hundreds of dwords back to back, one op
at a time. Sleeping between two of them costs a hypervisor event to dom0, a scheduler wake-up
and three system calls (poll, the event's read, the port's unmask), far more than looking at
the flags word for a moment; Linux's in-kernel backend pays none of it. So after answering, the
thread looks for the next op for a window learnt from the gaps it saw between an answer and
the next op (a multiple of their moving average, within a cap).

An op found while lingering is a hit; a window that ends without one is a miss. After a few
misses in a row the thread stops lingering for a number of wake-ups, then tries again: a guest
whose ops come rarely costs no spinning, and the cap bounds what any guest can make the thread
spin for one op.
"""

from __future__ import annotations

MISSES_BEFORE_BACKOFF = 4
BACKOFF_WAKEUPS = 64
WINDOW_PER_GAP = 4  # the window, in average gaps: room for a gap of four times the usual
FLOOR_NS = 20_000  # a window never shorter: the first gaps are learnt from it


class Linger:
    def __init__(self, cap_ns: int) -> None:
        """`cap_ns`: the longest window; 0 never lingers."""
        self.cap_ns = max(0, cap_ns)
        self._average_ns = self.cap_ns // WINDOW_PER_GAP  # learnt from hits
        self._misses = 0
        self._off_for = 0  # wake-ups left without lingering
        self.hits = 0

    def window_ns(self) -> int:
        """How long to look for the next op now; 0: sleep at once."""
        if not self.cap_ns or self._off_for:
            return 0
        return min(self.cap_ns, max(FLOOR_NS, WINDOW_PER_GAP * self._average_ns))

    def hit(self, gap_ns: int) -> None:
        """An op was found `gap_ns` after the previous answer."""
        self.hits += 1
        self._misses = 0
        self._average_ns += (max(0, gap_ns) - self._average_ns) // 8

    def miss(self) -> None:
        """A window ended without an op."""
        self._misses += 1
        if self._misses >= MISSES_BEFORE_BACKOFF:
            self._misses = 0
            self._off_for = BACKOFF_WAKEUPS

    def woke(self) -> None:
        """A wake-up from sleep: one fewer before lingering is tried again."""
        if self._off_for:
            self._off_for -= 1
