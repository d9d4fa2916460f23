"""The backend end of one guest's PV PCI connection: it services ops and sends AER requests.

A service thread sleeps on the event channel. On each wake-up it runs the pending op if the
frontend raised _XEN_PCIF_active, and releases an AER request waiting for the frontend to drop
_XEN_PCIB_active. One op at a time per connection; each is snapshotted, dispatched, written
back, and only then is the active bit cleared and the frontend notified. After answering, the
thread may look at the page a little longer for the next op before it sleeps (see
pciback.protocol.linger): the guest's notification of an op found that way is taken at the
next wait, which then finds nothing to do. While it looks, the answer's event waits, and is
dropped if the guest's next op comes first (pciback.protocol.answer_events).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns, thread_time_ns

from pciback.protocol.abi import Flag
from pciback.protocol.answer_events import AnswerEvents
from pciback.protocol.dispatch import DeviceLookup, dispatch
from pciback.protocol.linger import LOOKS_PER_CLOCK, Linger
from pciback.protocol.neighbours import Neighbours
from pciback.protocol.ops import OpRequest, OpResult, snapshot
from pciback.protocol.opstats import OpStats
from pciback.protocol.transport import OP_PENDING, EventPort, SharedPage

log = logging.getLogger(__name__)

# A guest can keep re-raising the active bit; after this many ops in one wake-up the thread
# goes back to sleep (with a self-kick) so `close` is never starved.
OPS_PER_WAKEUP = 64
# One op in TIME_EVERY is timed (a power of two): see `_serve_one`. Three clock reads per timed
# op, each a system call in a PV dom0 (42-88 µs in the lab): one op in 8 cost every op about
# 18 µs on average; 32 still times a few hundred ops of a boot scan or an lspci.
TIME_EVERY = 32
_CLOCK_MASK = LOOKS_PER_CLOCK - 1
# How often a waiting AER request asks whether it is still wanted (`aer_request`).
AER_RECHECK_S = 0.5


def no_config_ops(page: SharedPage) -> bool:
    """`config_ops` when there is none: every op goes to the handler."""
    return False


class AerAborted(Exception):
    """An AER request given up for a reason other than the guest: the connection closed (a
    detach, the daemon stopping) or the device changed hands. Nothing more may be done to the
    guest or the device on that recovery's behalf."""


@dataclass(frozen=True, slots=True)
class AerTarget:
    """The guest-visible address an AER request names."""

    domain: int
    bus: int
    devfn: int


class BackendConnection:
    def __init__(
        self,
        domid: int,
        page: SharedPage,
        port: EventPort,
        devices: DeviceLookup,
        handler: Callable[[OpRequest], OpResult] | None = None,
        after_batch: Callable[[], None] | None = None,
        linger_ns: int = 0,
        time_every: int = TIME_EVERY,
        neighbours: Neighbours | None = None,
    ) -> None:
        """`after_batch` runs on the service thread after each wake-up that served ops, once
        the frontend has its answers: work there delays the next op, never this one's reply.
        `linger_ns`: the longest look for a next op before sleeping (0: none). `time_every`:
        one op in so many is timed (a power of two; 1: every op). `neighbours`: the pages of
        the other guests this thread shares the interpreter with, whose waiting ops end its
        lingering (pciback.protocol.neighbours); this page joins them while the thread runs.
        `config_ops`, set once built: a short way for config ops that answers the op on the
        page and says whether it did (pciback.daemon.config_ops); the handler answers the
        rest, and every op while none is set."""
        if time_every < 1 or time_every & (time_every - 1):
            raise ValueError(f"time_every = {time_every}: expected a power of two")
        self.domid = domid
        self.page = page
        self.port = port
        self.devices = devices
        self._handler = handler or (lambda req: dispatch(req, self.devices))
        self.config_ops: Callable[[SharedPage], bool] = no_config_ops
        self.after_batch = after_batch
        self.stats = OpStats()
        self._time_mask = time_every - 1
        self.linger = Linger(linger_ns)
        self.events = AnswerEvents()
        self.neighbours = Neighbours() if neighbours is None else neighbours
        self._busy_since = 0  # the last wake-up (perf_counter_ns), 0 before the first
        # Set once, by `close`; read on every op, where a plain attribute costs less than
        # threading.Event.is_set (a Python call).
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._aer_lock = threading.Lock()
        self._aer_pending = False
        self._aer_answered = threading.Event()
        self._aer_aborted = False  # set once, by `abort_aer`

    @property
    def handler(self) -> Callable[[OpRequest], OpResult]:
        """What answers an op. Replaceable (a recording wraps it; the transport benchmark and
        tests put their own); replacing it turns `config_ops` off, which would bypass it."""
        return self._handler

    @handler.setter
    def handler(self, handler: Callable[[OpRequest], OpResult]) -> None:
        self._handler = handler
        self.config_ops = no_config_ops

    # -- service ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self.neighbours.join(self.page)
            self._thread = threading.Thread(
                target=self._serve, name=f"pciback-dom{self.domid}", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self.abort_aer()
        with self._aer_lock:  # an aborted request has left the page before it can be unmapped
            pass
        self.neighbours.leave(self.page)  # before the page can be unmapped
        self.port.kick_self()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _serve(self) -> None:
        port = self.port
        while not self._stopping:
            port.wait(None)
            self._account_busy(port)
            self.linger.woke(port.woke_ns - port.slept_ns)
            if self._stopping:
                return
            if port.closed:  # the guest's end went first; nothing can wake us again
                log.info("dom%d: event channel closed; service stops", self.domid)
                return
            try:
                if self.process_pending(port.woke_ns or None) and self.after_batch is not None:
                    self.after_batch()
            except Exception:  # the thread must outlive a bug, or the guest hangs
                log.exception("dom%d: servicing the shared page failed", self.domid)

    def _account_busy(self, port: EventPort) -> None:
        """After a wait: the wake-up before it was busy until this wait went to sleep."""
        if self._busy_since:
            self.stats.busy_ns += max(0, port.slept_ns - self._busy_since)
        self._busy_since = port.woke_ns

    def process_pending(self, woke_ns: int | None = None) -> int:
        """What one wake-up does; returns the number of ops served. `woke_ns`: when the wake-up
        happened (perf_counter_ns), where the first op's service time starts if it is timed;
        when it is found if None."""
        page = self.page
        self.stats.wakeups += 1
        served = 0
        start = woke_ns
        try:
            while page.load_flags() & OP_PENDING and not self._stopping:
                if served == OPS_PER_WAKEUP:
                    self.port.kick_self()
                    break
                if self.events.owed:  # the guest saw the last answer: this is its next op
                    self.events.overtaken()
                lingering = served + 1 < OPS_PER_WAKEUP and self.linger.window() > 0
                self._serve_one(start, lingering)
                start = None
                served += 1
            if served and served < OPS_PER_WAKEUP:
                served += self._linger(OPS_PER_WAKEUP - served)
        finally:  # never left behind when the thread stops looking, whatever stopped it
            if self.events.owed:
                self.events.expired()
                self.port.notify()
        if self._aer_pending and not page.test_bit(Flag.PCIB_ACTIVE):
            self._aer_answered.set()
        return served

    def _linger(self, budget: int) -> int:
        """Look for the guest's next op for the linger window after an answer, serving what
        comes (at most `budget` ops); returns how many were served. The window is counted in
        looks; the clock is read once every LOOKS_PER_CLOCK of them, to learn what a look
        costs (see pciback.protocol.linger). Another guest's waiting op, seen before the
        first look or at a clock read, ends the window (pciback.protocol.neighbours)."""
        page, linger, neighbours, events = self.page, self.linger, self.neighbours, self.events
        load = page.load_flags
        window = linger.window()
        deadline = window // 2  # for an answer's owed event, see pciback.protocol.answer_events
        if window and neighbours.waiting_besides(page):
            linger.yielded()
            return 0
        served = looks = 0
        mark = 0  # the clock at the last measure of this run of looks; 0: none yet
        waited = False  # the last answer's event went out late: the gap is not the guest's own
        while window and served < budget and not self._stopping:
            if load() & OP_PENDING:
                if events.owed:
                    events.overtaken()
                linger.hit(0 if waited else looks)  # 0: a hit that teaches no gap
                waited = False
                self._serve_one(None, served + 1 < budget)
                served += 1
                looks = mark = 0
                window = linger.window()
                deadline = window // 2
                continue
            looks += 1
            if looks >= deadline and events.owed:
                events.expired()
                self.port.notify()
                waited = True
            if looks >= window:
                linger.miss()
                break
            if not looks & _CLOCK_MASK:
                if neighbours.waiting_besides(page):  # its thread needs the interpreter
                    linger.yielded()
                    break
                now = perf_counter_ns()
                if mark:
                    linger.measured(now - mark)
                    window = linger.window()
                    deadline = window // 2
                mark = now
        return served

    def serve_one(self) -> None:
        """Serve the op the page holds (its active bit is set)."""
        self._serve_one(None)

    def _serve_one(self, start: int | None, lingering: bool = False) -> None:
        """The op, its answer, the active bit cleared and the frontend notified, in that order;
        when `lingering` (the thread looks for the guest's next op next), the event may wait for
        it instead (pciback.protocol.answer_events).
        One op in `time_every` (see __init__) is timed, from `start` (the wake-up that found
        it) or from now when None, to the notify's return (or the bit cleared when it waits),
        with a third clock read where the answer is in the page, and the thread's CPU clock
        read on either side of the hand-back (apart: see OpStats): reading a clock is a system
        call where it has no vDSO (a PV dom0), dearer than most of an op, so untimed ops only
        count."""
        stats = self.stats
        if stats.ops & self._time_mask:
            stats.ops += 1
            start = None
        elif start is None:
            start = perf_counter_ns()
        page = self.page
        if not self.config_ops(page):
            self._handler(snapshot(page)).write_back(page)
        answered = answered_cpu = 0
        if start is not None:
            answered, answered_cpu = perf_counter_ns(), thread_time_ns()
        page.finish_op()  # atomic, and only once the answer is in the page
        if not (lingering and self.events.defer()):
            self.port.notify()
        if start is not None:
            end_cpu, end = thread_time_ns(), perf_counter_ns()
            stats.record(end - start, end - answered, end_cpu - answered_cpu)

    @property
    def ops_served(self) -> int:
        return self.stats.ops

    def thread_cpu_ns(self) -> int | None:
        """The CPU time the service thread has used so far (ops, lingering, wake-ups), read from
        any thread through the service thread's CPU clock, at no cost to the op path; None when
        it does not run. Against `stats.busy_ns` it tells how long the thread was awake without
        running: preempted, or waiting for the GIL."""
        thread = self._thread
        ident = None if thread is None else thread.ident
        if ident is None:
            return None
        try:
            return time.clock_gettime_ns(time.pthread_getcpuclockid(ident))
        except (OSError, AttributeError):  # the thread just ended; or no such clock here
            return None

    # -- AER -------------------------------------------------------------------------------------
    def has_aer_handler(self) -> bool:
        return self.page.test_bit(Flag.PCIB_AERHANDLER)

    def abort_aer(self) -> None:
        """End the AER request waiting now, and refuse every later one, with AerAborted: the
        connection is going away, and a recovery that went on would act on a guest or a
        device it no longer speaks for."""
        self._aer_aborted = True
        self._aer_answered.set()

    def aer_request(
        self,
        cmd: int,
        state: int,
        target: AerTarget,
        timeout: float,
        still_wanted: Callable[[], bool] | None = None,
    ) -> int | None:
        """Post an AER request and wait for the frontend's answer (its `aer_op.err`, a
        pci_ers_result); None when the frontend did not answer within `timeout` seconds.
        AerAborted when `abort_aer` came first or during the wait, or when `still_wanted`,
        asked every AER_RECHECK_S of the wait, says the request no longer is (the device
        changed hands: a wait lasts minutes)."""
        with self._aer_lock:
            # Checked under the lock that `close` passes through before the page can go.
            if self._aer_aborted:
                raise AerAborted(f"dom{self.domid}: the connection is closing")
            aer = self.page.info.aer_op
            aer.cmd = cmd
            aer.err = state
            aer.domain = target.domain
            aer.bus = target.bus
            aer.devfn = target.devfn
            self._aer_answered.clear()
            if self._aer_aborted:  # came before the clear, which would have hidden it
                raise AerAborted(f"dom{self.domid}: the connection is closing")
            try:
                # Pending only once the bit is up: the service thread, if an op wakes it in
                # between, would otherwise see the bit down and take that for the answer.
                self.page.set_bit(Flag.PCIB_ACTIVE)
                self._aer_pending = True
                if not self.page.test_bit(Flag.PCIB_ACTIVE):  # answered before it was pending
                    self._aer_answered.set()
                self.port.notify()
                answered = self._wait_for_answer(timeout, still_wanted)
                if self._aer_aborted or answered is None:
                    # The page may be unmapped next: the request is withdrawn, not answered.
                    self.page.clear_bit(Flag.PCIB_ACTIVE)
                    why = (
                        "closed" if self._aer_aborted else "no longer serves the device asked about"
                    )
                    raise AerAborted(f"dom{self.domid}: the connection {why} during the request")
                if not answered and self.page.clear_bit(Flag.PCIB_ACTIVE):
                    log.warning("dom%d: frontend did not answer AER request", self.domid)
                    return None
                return int(self.page.info.aer_op.err)
            finally:
                self._aer_pending = False

    def _wait_for_answer(
        self, timeout: float, still_wanted: Callable[[], bool] | None
    ) -> bool | None:
        """Whether the answer came within `timeout`; None once `still_wanted` says no."""
        if still_wanted is None:
            return self._aer_answered.wait(timeout)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if self._aer_answered.wait(max(0.0, min(left, AER_RECHECK_S))):
                return True
            if not still_wanted():
                return None
            if left <= AER_RECHECK_S:
                return False
