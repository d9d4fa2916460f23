"""The pages of every guest one data path serves, for a lingering service thread to see whether
another guest's op is waiting.

Each guest has its own service thread, and the threads share one interpreter. A thread that
lingers (pciback.protocol.linger) spins on its guest's page and holds the interpreter all the
while: another guest's thread, woken by its event, waits for the interpreter until the spin
ends, and on a small host for a CPU too. Measured (bench/bench_fairness.py), a guest flooding
ops raised a paced guest's 99th-percentile latency 16-43 times. So lingering is for a guest
that is busy alone: a lingering thread looks at the other guests' pages along with its own,
and as soon as another op waits it goes to sleep, leaving the interpreter and the CPU to the
thread that serves that op. No guest can then make another wait for more than one of its ops.

The pages are kept as a tuple, replaced whole on each change, so that the look loop reads it
without a lock while guests come and go. Another guest's page is read with `peek_flags`, which
keeps the interpreter lock throughout: a page leaves before it is unmapped, and an unmapping
thread needs the lock to rebind the page first, so a reader never touches unmapped memory.
The bit is the guest's to set, so a guest that raises it and never notifies makes others
yield: they then only sleep between ops, as without lingering, which costs them no op.
"""

from __future__ import annotations

import threading

from pciback.protocol.transport import OP_PENDING, SharedPage


class Neighbours:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # one change at a time; readers take none
        self._pages: tuple[SharedPage, ...] = ()

    def join(self, page: SharedPage) -> None:
        with self._lock:
            if all(p is not page for p in self._pages):
                self._pages = (*self._pages, page)

    def leave(self, page: SharedPage) -> None:
        with self._lock:
            self._pages = tuple(p for p in self._pages if p is not page)

    def __len__(self) -> int:
        return len(self._pages)

    def waiting_besides(self, own: SharedPage) -> bool:
        """Whether a page other than `own` holds an op that no thread has taken yet."""
        for page in self._pages:  # noqa: SIM110 - any() of a generator: a frame per look
            if page is not own and page.peek_flags() & OP_PENDING:
                return True
        return False


__all__ = ["Neighbours"]
