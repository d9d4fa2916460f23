"""The two halves of a PV PCI connection: a shared page and an event channel.

The page is guest memory: the backend may read any field at any time, but it must treat every
value as untrusted and as able to change between two reads. The flags word is the only field
both sides modify, so it is changed only through atomic bit operations (`set_bit`, `clear_bit`),
as Xen's test_and_set_bit on the real page; in the simulation a lock stands in for the bus lock.

The event channel is a pair of doorbells. `notify()` rings the peer; `wait()` sleeps on one's
own. A doorbell is an eventfd (a pipe where there is none), so a daemon can poll many of them,
as it would poll a libxenevtchn file descriptor.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from pciback.protocol.abi import (
    FLAGS_OFFSET,
    FLAGS_SIZE,
    OP_OFFSET,
    OP_SIZE,
    PAGE_SIZE,
    SHAREDINFO_SIZE,
    Flag,
    ffi,
)

# The flags word as a memoryview item: the native unsigned int, which must be its size.
_FLAGS_FORMAT: Final = "I"
if memoryview(bytes(FLAGS_SIZE)).cast(_FLAGS_FORMAT).itemsize != FLAGS_SIZE:
    raise ImportError("the flags word is not a native unsigned int")

#: The bit of the flags word (`SharedPage.load_flags()`) that says an op awaits the backend.
OP_PENDING: Final = 1 << Flag.PCIF_ACTIVE


# How long a rare waiter pauses between two looks at what it waits for: the things waited for
# (an op, a notify) last tens of µs natively, a few ms under emulation.
FIRST_PAUSE_S = 0.00005
LONGEST_PAUSE_S = 0.002


def wait_while(busy: Callable[[], object]) -> None:
    """Sleep until `busy()` is false, pausing longer each time (up to LONGEST_PAUSE_S): for a
    rare caller waiting out a fast path that takes no lock (see pciback.daemon.serving_gate)."""
    pause = FIRST_PAUSE_S
    while busy():
        time.sleep(pause)
        pause = min(2 * pause, LONGEST_PAUSE_S)


class SharedPage:
    """`struct xen_pci_sharedinfo` over a page-sized writable buffer."""

    def __init__(self, buffer: Any = None) -> None:
        self._flags_lock = threading.Lock()
        self._bind(bytearray(PAGE_SIZE) if buffer is None else buffer)

    def _bind(self, buffer: Any) -> None:
        """Lay the views over `buffer`: `info` (cffi, for everything but the op path), the flags
        word and the op's bytes (memoryviews, for the op path), and the op path's callables."""
        bytes_view = memoryview(buffer).cast("B")
        if len(bytes_view) < SHAREDINFO_SIZE:
            raise ValueError(f"a shared page needs {SHAREDINFO_SIZE} bytes")
        self.buffer = buffer
        self.info: Any = ffi.from_buffer("struct xen_pci_sharedinfo *", buffer)
        self._flags = bytes_view[FLAGS_OFFSET : FLAGS_OFFSET + FLAGS_SIZE].cast(_FLAGS_FORMAT)
        self._op = bytes_view[OP_OFFSET : OP_OFFSET + OP_SIZE]
        # What the service loop does on every op, as callables that run no Python frame of
        # their own where the page allows it: under emulation (the lab) each Python frame and
        # line costs tens of µs. Bound again with the buffer, so a caller fetches them from the
        # page at each use and never keeps one past a rebinding (XenSharedPage.close).
        #: The op's bytes, copied out of the page in one go (one memcpy): a new bytes object
        #: whatever the buffer is, where slicing a memoryview buffer would copy nothing.
        self.copy_op: Callable[[], bytes] = self._op.tobytes
        #: The op as 32-bit words, native order (the op is made of them), for writing an answer
        #: field in place: cheaper than a struct pack into the buffer.
        self.op_words: memoryview = self._op.cast(_FLAGS_FORMAT)
        #: The flags word as it is now (test _XEN_PCIF_active with OP_PENDING).
        self.load_flags: Callable[[], int] = partial(self._flags.__getitem__, 0)
        #: Hand the answered op back: clear _XEN_PCIF_active (atomically).
        self.finish_op: Callable[[], object] = partial(self.clear_bit, Flag.PCIF_ACTIVE)
        #: The flags word for another thread's glance (pciback.protocol.neighbours): a plain
        #: read that never lets the interpreter lock go, so the page cannot be unmapped under
        #: it (the op path's `load_flags` may be a C call that does), and no ordering promise.
        self.peek_flags: Callable[[], int] = partial(self._flags.__getitem__, 0)

    def test_bit(self, bit: Flag) -> bool:
        return bool(self._flags[0] >> bit & 1)

    def set_bit(self, bit: Flag) -> bool:
        """Set `bit`; return whether it was set before (test_and_set_bit)."""
        with self._flags_lock:
            old = self._flags[0]
            self._flags[0] = old | (1 << bit)
        return bool(old >> bit & 1)

    def clear_bit(self, bit: Flag) -> bool:
        """Clear `bit`; return whether it was set before (test_and_clear_bit)."""
        with self._flags_lock:
            old = self._flags[0]
            self._flags[0] = old & ~(1 << bit) & 0xFFFFFFFF
        return bool(old >> bit & 1)


_ONE = (1).to_bytes(8, "little")  # what an eventfd is written to count one


def _readable(fd: int, timeout: float | None) -> bool:
    """Sleep until `fd` is readable or `timeout` seconds pass (None: no limit). poll(2), not
    select(2): select refuses descriptors from 1024 on, which a dom0 serving some 500 guests
    reaches. A poll object per call: two threads may wait on one doorbell, and one poll object
    refuses concurrent use."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0.0, timeout * 1000)))


class Doorbell:
    """A level-free wake-up: rings accumulate until the owner's next `wait` consumes them.

    Closing is safe while a thread sleeps in `wait`: the fd is closed only once every sleeper
    has left, since a poll on a closed fd reports POLLNVAL and one on a reused fd would wake
    on, and read from, somebody else's file. A closed doorbell's `wait` returns False at once.
    """

    def __init__(self) -> None:
        self._closed = False
        self._sleepers = 0
        # Ringing, consuming and closing exclude each other: a ring after close could hit a
        # reused fd, and a sleeper must never consume the ring that tells it the bell closed.
        self._lock = threading.Lock()
        self._left = threading.Condition(self._lock)
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            self._rfd, self._wfd = fd, fd
        else:  # pragma: no cover - non-Linux hosts
            self._rfd, self._wfd = os.pipe()
            os.set_blocking(self._rfd, False)

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self._rfd

    def ring(self) -> None:
        with self._lock:
            if not self._closed:
                self._ring()

    def _ring(self) -> None:
        try:  # noqa: SIM105 - rung on every op: try/except costs less than contextlib.suppress
            os.write(self._wfd, _ONE)
        except BlockingIOError:
            pass  # a saturated counter still wakes the owner

    def wait(self, timeout: float | None) -> bool:
        """Sleep until rung or `timeout` seconds pass; True when rung. Consumes pending rings.
        False at once, whatever `timeout`, once the doorbell is closed."""
        with self._lock:
            if self._closed:
                return False
            self._sleepers += 1
        try:
            ready = _readable(self._rfd, timeout)
        except BaseException:
            self._leave()
            raise
        with self._lock:
            self._sleepers -= 1
            if self._closed:
                self._left.notify_all()
                return False
            if not ready:
                return False
            with contextlib.suppress(BlockingIOError):  # another reader took the rings
                os.read(self._rfd, 8)
            return True

    def drain(self) -> bool:
        """Consume pending rings without sleeping: one read(2) where `wait(0)` makes a poll
        first. True when there were any; False, too, once the doorbell is closed."""
        with self._lock:
            if self._closed:
                return False
            try:
                os.read(self._rfd, 8)
            except BlockingIOError:
                return False
            return True

    def _leave(self) -> None:
        with self._lock:
            self._sleepers -= 1
            self._left.notify_all()

    def close(self) -> None:
        """Wake every sleeper, wait for them to leave `wait`, then close the fd."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # Left unconsumed (sleepers check `_closed` before reading), so every sleeper,
            # including one just entering poll, sees the fd readable and leaves.
            self._ring()
            self._left.wait_for(lambda: self._sleepers == 0)
            os.close(self._rfd)
            if self._wfd != self._rfd:
                os.close(self._wfd)


class EventPort:
    """One end of an event channel: rings the peer's doorbell, sleeps on its own."""

    # When the last `wait` went to sleep and when it stopped sleeping (perf_counter_ns): where
    # the service thread's busy time ends and where its ops' service time starts
    # (pciback.protocol.opstats).
    slept_ns = 0
    woke_ns = 0

    def __init__(self, own: Doorbell, peer: Doorbell) -> None:
        self._own = own
        self._peer = peer

    def notify(self) -> None:
        self._peer.ring()

    def wait(self, timeout: float | None) -> bool:
        self.slept_ns = time.perf_counter_ns()
        rung = self._own.wait(timeout)
        self.woke_ns = time.perf_counter_ns()
        return rung

    def kick_self(self) -> None:
        """Wake this end's own waiter (used to stop a service thread)."""
        self._own.ring()

    @property
    def closed(self) -> bool:
        """The channel was closed: `wait` no longer sleeps, a service loop should end."""
        return self._own.closed

    def fileno(self) -> int:
        return self._own.fileno()


class EventChannel:
    """An interdomain event channel as two connected ports."""

    def __init__(self) -> None:
        self._backend_bell = Doorbell()
        self._frontend_bell = Doorbell()
        self.backend = EventPort(self._backend_bell, self._frontend_bell)
        self.frontend = EventPort(self._frontend_bell, self._backend_bell)

    def close(self) -> None:
        self._backend_bell.close()
        self._frontend_bell.close()
