"""How the simulated pcifront waits for an answer: on its event channel itself while no AER
handler is registered, through its interrupt thread once one is; either way it neither hangs on
a backend that never answers nor misses an answer."""

from __future__ import annotations

import threading
import time

import pytest

from pciback.errors import XenPciError
from pciback.generated.names import COMMON_HEADER
from pciback.protocol.abi import Cmd, Flag
from pciback.protocol.ops import OpRequest, OpResult, snapshot
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim import FrontendClosed
from pciback.sim.frontend import SimFrontend

VENDOR_ID = COMMON_HEADER.VENDOR_ID


ADDR = "0000:00:01.2"


class EchoBackend:
    """A backend thread that answers each op with its offset plus one (and records it)."""

    def __init__(self, page: SharedPage, channel: EventChannel) -> None:
        self.page, self.port = page, channel.backend
        self.seen: list[OpRequest] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while self.port.wait(None):
            if not self.page.test_bit(Flag.PCIF_ACTIVE):
                continue
            req = snapshot(self.page)
            self.seen.append(req)
            OpResult(XenPciError.SUCCESS, req.offset + 1).write_back(self.page)
            self.page.clear_bit(Flag.PCIF_ACTIVE)
            self.port.notify()


def frontend(timeout: float = 5.0) -> tuple[SimFrontend, SharedPage, EventChannel]:
    page, channel = SharedPage(), EventChannel()
    front = SimFrontend(page, channel.frontend, timeout=timeout)
    front.start()
    return front, page, channel


@pytest.mark.parametrize("aer_handler", [False, True])
def test_every_op_gets_its_own_answer(aer_handler: bool) -> None:
    front, page, channel = frontend()
    backend = EchoBackend(page, channel)
    if aer_handler:
        front.set_aer_handler(lambda request: None)
    try:
        for offset in range(0, 256, 4):
            assert front.conf_read(ADDR, offset, 4) == offset + 1
        req = backend.seen[-1]
        assert (req.cmd, req.domain, req.bus, req.devfn, req.size) == (
            Cmd.CONF_READ,
            0,
            0,
            1 << 3 | 2,
            4,
        )
        assert len(backend.seen) == 64
    finally:
        front.close()
        channel.close()


def test_the_op_and_its_msix_entries_reach_the_page_as_pcifront_lays_them_out() -> None:
    front, page, channel = frontend()
    backend = EchoBackend(page, channel)
    try:
        front.do_op(Cmd.ENABLE_MSIX, ADDR, value=3, entries=[5, 9, 200])
        req = backend.seen[-1]
        assert (req.cmd, req.value) == (Cmd.ENABLE_MSIX, 3)
        assert req.msix_entries(3) == ((5, 0), (9, 0), (200, 0))
    finally:
        front.close()
        channel.close()


def test_a_backend_that_never_answers_times_the_op_out() -> None:
    front, _, channel = frontend(timeout=0.2)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        front.conf_read(ADDR, VENDOR_ID.offset, 4)
    assert 0.2 <= time.monotonic() - start < 5
    front.close()
    channel.close()


@pytest.mark.parametrize("aer_handler", [False, True])
def test_closing_the_frontend_ends_an_op_waiting_for_an_answer(aer_handler: bool) -> None:
    front, _, channel = frontend(timeout=30)
    if aer_handler:
        front.set_aer_handler(lambda request: None)
    outcome: list[BaseException] = []

    def op() -> None:
        try:
            front.conf_read(ADDR, VENDOR_ID.offset, 4)
        except BaseException as exc:  # the outcome, whatever it is, is what is tested
            outcome.append(exc)

    waiter = threading.Thread(target=op)
    waiter.start()
    time.sleep(0.1)  # the op is posted and waiting
    front.close()
    waiter.join(10)
    assert not waiter.is_alive()
    channel.close()
    assert len(outcome) == 1 and isinstance(outcome[0], FrontendClosed)
