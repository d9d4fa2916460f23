"""When an answer's event is sent: at once, or a little later, or not at all when the guest has
shown it no longer needs it.

The protocol's event tells a frontend asleep on its event channel that its op is answered. Linux's
pcifront never sleeps on it: it waits for each answer in SCHEDOP_poll with a timeout of
`jiffies + 3*HZ`, which Xen takes for an absolute system time in ns, a few seconds after Xen's
boot and so long past; each poll returns at once and the frontend looks at the flags word again,
until the answer is there (in the lab's Xen trace its vCPU blocked and woke 10-16 times per
op). It sees the answer when the active bit drops, and an event that comes after it has posted
its next op is thrown away (it clears its pending event before it polls). Sending the event
still costs dom0 a system call and Xen the wake-up of the guest's vCPU: under emulation in the
lab, 200-300 µs of the service thread's time per op, the one cost of the op path that Linux's
backend pays from the kernel more cheaply; between two ops of a guest reading in a burst (its
boot scan, lspci), the next op waited for it.

So while the service thread lingers after an answer (pciback.protocol.linger), the answer's
event waits: if the guest posts its next op first, it saw the answer without the event and the
event is dropped; otherwise it is sent half-way through the linger window as it stands (a
window follows four times the gap learnt between an answer and the guest's next op, so this is
about twice that gap) or when the thread stops lingering, whichever comes first: never after
the thread goes to sleep, nor left behind by an exception. Every answer is so followed, within
the window, by its event or by the guest's next op. A gap that followed a late event is the
event's, not the guest's: the linger does not learn it.

A frontend that does sleep until the event (such as the simulated one) would wait for each
answer until the deadline: after EXPIRED_BEFORE_OFF events in a row that the guest's next op
did not overtake, events go out at once for OFF_ANSWERS answers, and then deferring is tried
again. A polling guest whose ops come one at a time trips it too, at no cost to it; an event
sent because the thread stopped lingering for another reason (another guest's op waiting, an
exception) counts as late too.
"""

from __future__ import annotations

EXPIRED_BEFORE_OFF = 4
OFF_ANSWERS = 256


class AnswerEvents:
    def __init__(self) -> None:
        self.owed = False  # an answer is in the page and its event not sent
        self._off_for = 0  # answers left whose event goes out at once
        self._expired = 0  # in a row
        self.dropped = 0  # events the guest's next op made needless
        self.late = 0  # events sent after a wait (the deadline, or the end of lingering)
        self.offs = 0  # times deferring was turned off

    def defer(self) -> bool:
        """An answer is in the page and the thread is about to look for the next op: whether its
        event may wait (then it is owed), or must go now."""
        if self._off_for:
            self._off_for -= 1
            return False
        self.owed = True
        return True

    def overtaken(self) -> None:
        """The guest posted its next op while the event was owed: it saw the answer without it."""
        self.owed = False
        self.dropped += 1
        self._expired = 0

    def expired(self) -> None:
        """The owed event is being sent after all."""
        self.owed = False
        self.late += 1
        self._expired += 1
        if self._expired >= EXPIRED_BEFORE_OFF:
            self._expired = 0
            self._off_for = OFF_ANSWERS
            self.offs += 1

    def as_dict(self) -> dict[str, int]:
        """What `pciback list --json` shows."""
        return {"dropped": self.dropped, "late": self.late, "offs": self.offs}


__all__ = ["EXPIRED_BEFORE_OFF", "OFF_ANSWERS", "AnswerEvents"]
