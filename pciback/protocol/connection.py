"""The backend end of one guest's PV PCI connection: it services ops and sends AER requests.

A service thread sleeps on the event channel. On each wake-up it runs the pending op if the
frontend raised _XEN_PCIF_active, and releases an AER request waiting for the frontend to drop
_XEN_PCIB_active. One op at a time per connection; each is snapshotted, dispatched, written
back, and only then is the active bit cleared and the frontend notified.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pciback.protocol.abi import Flag
from pciback.protocol.dispatch import DeviceLookup, dispatch
from pciback.protocol.ops import OpRequest, OpResult
from pciback.protocol.transport import EventPort, SharedPage

log = logging.getLogger(__name__)

# A guest can keep re-raising the active bit; after this many ops in one wake-up the thread
# goes back to sleep (with a self-kick) so `close` is never starved.
OPS_PER_WAKEUP = 64


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
    ) -> None:
        """`after_batch` runs on the service thread after each wake-up that served ops, once
        the frontend has its answers: work there delays the next op, never this one's reply."""
        self.domid = domid
        self.page = page
        self.port = port
        self.devices = devices
        # Replaceable for the transport benchmark (a no-op handler) and for tests.
        self.handler = handler or (lambda req: dispatch(req, self.devices))
        self.after_batch = after_batch
        self.ops_served = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._aer_lock = threading.Lock()
        self._aer_pending = False
        self._aer_answered = threading.Event()

    # -- service ---------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, name=f"pciback-dom{self.domid}", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.port.kick_self()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.port.wait(None)
            if self._stop.is_set():
                return
            if self.port.closed:  # the guest's end went first; nothing can wake us again
                log.info("dom%d: event channel closed; service stops", self.domid)
                return
            try:
                if self.process_pending() and self.after_batch is not None:
                    self.after_batch()
            except Exception:  # the thread must outlive a bug, or the guest hangs
                log.exception("dom%d: servicing the shared page failed", self.domid)

    def process_pending(self) -> int:
        """What one wake-up does; returns the number of ops served."""
        served = 0
        while self.page.test_bit(Flag.PCIF_ACTIVE) and not self._stop.is_set():
            if served == OPS_PER_WAKEUP:
                self.port.kick_self()
                break
            self.serve_one()
            served += 1
        if self._aer_pending and not self.page.test_bit(Flag.PCIB_ACTIVE):
            self._aer_answered.set()
        return served

    def serve_one(self) -> None:
        req = OpRequest.snapshot(self.page)
        result = self.handler(req)
        result.write_back(self.page)
        self.page.clear_bit(Flag.PCIF_ACTIVE)
        self.ops_served += 1
        self.port.notify()

    # -- AER -------------------------------------------------------------------------------------
    def has_aer_handler(self) -> bool:
        return self.page.test_bit(Flag.PCIB_AERHANDLER)

    def aer_request(self, cmd: int, state: int, target: AerTarget, timeout: float) -> int | None:
        """Post an AER request and wait for the frontend's answer (its `aer_op.err`, a
        pci_ers_result); None when the frontend did not answer within `timeout` seconds."""
        with self._aer_lock:
            aer = self.page.info.aer_op
            aer.cmd = cmd
            aer.err = state
            aer.domain = target.domain
            aer.bus = target.bus
            aer.devfn = target.devfn
            self._aer_answered.clear()
            try:
                # Pending only once the bit is up: the service thread, if an op wakes it in
                # between, would otherwise see the bit down and take that for the answer.
                self.page.set_bit(Flag.PCIB_ACTIVE)
                self._aer_pending = True
                if not self.page.test_bit(Flag.PCIB_ACTIVE):  # answered before it was pending
                    self._aer_answered.set()
                self.port.notify()
                answered = self._aer_answered.wait(timeout)
                if not answered and self.page.clear_bit(Flag.PCIB_ACTIVE):
                    log.warning("dom%d: frontend did not answer AER request", self.domid)
                    return None
                return int(self.page.info.aer_op.err)
            finally:
                self._aer_pending = False
