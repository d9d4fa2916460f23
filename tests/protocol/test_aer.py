"""AER: requests to the frontend over the page, with and without a handler, and the timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pciback.generated.names import COMMON_HEADER
from pciback.protocol.abi import ChannelState, Cmd, ErsResult, Flag
from pciback.protocol.aer import AerOutcome, recover
from pciback.protocol.connection import AerAborted, AerTarget, BackendConnection
from pciback.protocol.ops import OpRequest, OpResult
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim import SimGuest, SimHost
from pciback.sim.device import SimDevice
from pciback.sim.frontend import AerRequest

from .simconfig import nic_config

VENDOR_ID = COMMON_HEADER.VENDOR_ID

ADDR = "0000:03:00.0"
SEIZE_RESETS = 1  # the stub pool resets a device when it takes it from the host


def attach(host: SimHost, mode: str = "passthrough") -> tuple[SimGuest, SimDevice]:
    device = host.add_device(ADDR, nic_config(), bar_sizes={0: 0x4000})
    guest = host.attach(7, [ADDR], mode="vpci" if mode == "vpci" else "passthrough")
    assert device.resets == SEIZE_RESETS
    return guest, device


def answers(*replies: int | None) -> Callable[[AerRequest], int | None]:
    queue = list(replies)
    return lambda request: queue.pop(0)


def assert_killed(host: SimHost, guest: SimGuest, device: SimDevice) -> None:
    assert host.hypervisor.killed == [7]
    # Recovery gave up and reset the device; the reaped guest's release reset it again.
    assert device.resets == SEIZE_RESETS + 2
    assert host.owner(ADDR) is None
    assert host.hypervisor.pirqs_of(7) == []
    assert guest.closed


def test_without_a_handler_the_guest_is_killed_and_the_device_reset(host: SimHost) -> None:
    guest, device = attach(host)
    guest.enable_msi(ADDR)
    outcome = host.inject_aer(ADDR)
    assert outcome.killed and outcome.steps == ()
    assert guest.frontend.aer_requests == []  # nothing was asked of it
    assert_killed(host, guest, device)


def test_a_handler_that_recovers_is_asked_to_resume(host: SimHost) -> None:
    guest, device = attach(host)
    guest.set_aer_handler(answers(ErsResult.RECOVERED, ErsResult.RECOVERED))
    outcome = host.inject_aer(ADDR, ChannelState.IO_NORMAL)
    assert not outcome.killed and outcome.recovered
    assert outcome.steps == (
        (Cmd.AER_DETECTED, ErsResult.RECOVERED),
        (Cmd.AER_RESUME, ErsResult.RECOVERED),
    )
    first = guest.frontend.aer_requests[0]
    assert (first.cmd, first.state, first.domain, first.bus, first.devfn) == (
        Cmd.AER_DETECTED,
        ChannelState.IO_NORMAL,
        0,
        3,
        0,
    )
    assert host.owner(ADDR) == 7 and device.resets == SEIZE_RESETS and host.hypervisor.killed == []
    assert not guest.page.test_bit(Flag.PCIB_ACTIVE)
    # the guest keeps working
    assert guest.conf_read(ADDR, VENDOR_ID.offset, VENDOR_ID.width) == 0x8086


def test_can_recover_goes_through_mmio(host: SimHost) -> None:
    guest, _ = attach(host)
    guest.set_aer_handler(answers(ErsResult.CAN_RECOVER, ErsResult.RECOVERED, 0))
    outcome = host.inject_aer(ADDR)
    assert [cmd for cmd, _ in outcome.steps] == [Cmd.AER_DETECTED, Cmd.AER_MMIO, Cmd.AER_RESUME]
    assert not outcome.killed


def test_need_reset_resets_the_device_then_asks_slot_reset(host: SimHost) -> None:
    guest, device = attach(host)
    resets_seen: list[int] = []

    def handler(request: AerRequest) -> int:
        resets_seen.append(device.resets - SEIZE_RESETS)
        if request.cmd is Cmd.AER_DETECTED:
            return ErsResult.NEED_RESET
        return ErsResult.RECOVERED

    guest.set_aer_handler(handler)
    pirqs = guest.enable_msix(ADDR, [2, 4])
    outcome = host.inject_aer(ADDR)
    assert [cmd for cmd, _ in outcome.steps] == [
        Cmd.AER_DETECTED,
        Cmd.AER_SLOTRESET,
        Cmd.AER_RESUME,
    ]
    assert resets_seen == [0, 1, 1]
    assert not outcome.killed and host.hypervisor.killed == []
    # The reset's state restore gives the device back the interrupts the guest still holds.
    assert device.msix_entries == (2, 4)
    assert host.hypervisor.pirqs_of(7) == sorted(pirqs)


@pytest.mark.parametrize("answer", [ErsResult.NONE, ErsResult.DISCONNECT, 77, -1])
def test_an_answer_that_cannot_recover_kills(host: SimHost, answer: int) -> None:
    guest, device = attach(host)
    guest.set_aer_handler(answers(answer))
    outcome = host.inject_aer(ADDR)
    assert outcome.killed and len(outcome.steps) == 1
    assert_killed(host, guest, device)


def test_a_frontend_that_never_answers_times_out_and_is_killed(host: SimHost) -> None:
    guest, device = attach(host)
    guest.set_aer_handler(answers(None))
    page = guest.page
    outcome = host.inject_aer(ADDR)
    assert outcome.steps == ((Cmd.AER_DETECTED, None),)
    assert not page.test_bit(Flag.PCIB_ACTIVE)  # the backend took its request back
    assert_killed(host, guest, device)


def test_removing_the_handler_clears_its_flag(host: SimHost) -> None:
    guest, device = attach(host)
    guest.set_aer_handler(answers(ErsResult.RECOVERED))
    assert guest.page.test_bit(Flag.PCIB_AERHANDLER)
    guest.set_aer_handler(None)
    assert not guest.page.test_bit(Flag.PCIB_AERHANDLER)
    assert host.inject_aer(ADDR).killed
    assert_killed(host, guest, device)


def test_the_request_names_the_guest_visible_address(host: SimHost) -> None:
    guest, _ = attach(host, mode="vpci")
    guest.set_aer_handler(answers(ErsResult.RECOVERED, ErsResult.RECOVERED))
    host.inject_aer(ADDR)
    request = guest.frontend.aer_requests[0]
    assert (request.domain, request.bus, request.devfn) == (0, 0, 0)
    assert guest.devices == ["0000:00:00.0"]


def test_ops_are_served_while_an_aer_request_is_pending(host: SimHost) -> None:
    guest, _ = attach(host)
    asked = threading.Event()

    def hang(request: AerRequest) -> None:
        asked.set()

    guest.set_aer_handler(hang)
    outcomes: list[AerOutcome] = []
    recovery = threading.Thread(target=lambda: outcomes.append(host.inject_aer(ADDR)))
    recovery.start()
    assert asked.wait(5)
    # answered while the backend waits
    assert guest.conf_read(ADDR, VENDOR_ID.offset, VENDOR_ID.width) == 0x8086
    recovery.join(5)
    assert outcomes[0].killed


def test_an_op_served_just_as_an_aer_request_is_posted_is_not_taken_for_the_answer() -> None:
    """The service thread may run (woken by an op) between the backend marking a request
    pending and raising _XEN_PCIB_active: it must not see the bit down and call that the
    frontend's answer."""
    page, channel = SharedPage(), EventChannel()
    conn = BackendConnection(1, page, channel.backend, devices=None)  # type: ignore[arg-type]
    real_set_bit = page.set_bit

    def set_bit_after_a_wakeup(bit: Flag) -> bool:
        conn.process_pending()  # what the service thread does when an op woke it right now
        return real_set_bit(bit)

    page.set_bit = set_bit_after_a_wakeup  # type: ignore[method-assign]
    try:
        answer = conn.aer_request(
            Cmd.AER_DETECTED, int(ChannelState.IO_FROZEN), AerTarget(0, 0, 0), timeout=0.2
        )
    finally:
        channel.close()
    assert answer is None  # nobody answered: a timeout, not our own request read back


def _recover_in_background(host: SimHost) -> tuple[threading.Thread, list[object]]:
    """inject_aer on a thread of its own; what it returned or raised lands in the list."""
    ended: list[object] = []

    def run() -> None:
        try:
            ended.append(host.inject_aer(ADDR))
        except AerAborted as exc:
            ended.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, ended


def test_a_device_detached_and_given_to_another_guest_during_the_wait_is_left_alone() -> None:
    # A recovery waits for the guest for minutes; meanwhile the device went to dom8. Giving up
    # then would kill dom7, which no longer holds it, and reset dom8's device.
    with SimHost(aer_timeout=30.0, op_timeout=5.0) as host:
        guest, device = attach(host)
        asked = threading.Event()
        guest.set_aer_handler(lambda request: asked.set())  # never answers
        started = time.monotonic()
        thread, ended = _recover_in_background(host)
        assert asked.wait(5)
        host.detach(7, ADDR)
        host.attach(8, [ADDR])
        resets = device.resets
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 10  # seen during the wait, not after its 30 s
        assert len(ended) == 1 and isinstance(ended[0], AerAborted)
        assert host.hypervisor.killed == []
        assert device.resets == resets
        assert host.owner(ADDR) == 8
        assert host.guest(8).conf_read(ADDR, VENDOR_ID.offset, VENDOR_ID.width) == 0x8086


def test_stopping_the_daemon_ends_a_recovery_at_once_with_no_kill(tmp_path: Path) -> None:
    with SimHost(aer_timeout=30.0, op_timeout=5.0, state_dir=tmp_path) as host:
        guest, device = attach(host)
        asked = threading.Event()
        guest.set_aer_handler(lambda request: asked.set())
        thread, ended = _recover_in_background(host)
        assert asked.wait(5)
        started = time.monotonic()
        host.stop_daemon()
        thread.join(10)
        assert not thread.is_alive() and time.monotonic() - started < 5
        assert len(ended) == 1 and isinstance(ended[0], AerAborted)
        assert host.hypervisor.killed == []
        assert device.resets == SEIZE_RESETS
        assert not guest.page.test_bit(Flag.PCIB_ACTIVE)  # the request was withdrawn
        host.start_daemon()
        assert host.owner(ADDR) == 7  # the guest kept its device across the restart


def test_a_closed_connection_refuses_a_new_request() -> None:
    page, channel = SharedPage(), EventChannel()
    conn = BackendConnection(1, page, channel.backend, devices=None)  # type: ignore[arg-type]
    try:
        conn.close()
        with pytest.raises(AerAborted):
            conn.aer_request(Cmd.AER_DETECTED, 1, AerTarget(0, 0, 0), timeout=5)
        assert not page.test_bit(Flag.PCIB_ACTIVE)  # nothing was posted
    finally:
        channel.close()


def test_a_reset_is_not_done_once_the_device_changed_hands() -> None:
    # The guest answered need_reset, and the device left it before the reset: nothing is reset,
    # nobody killed, and slot_reset is never asked.
    page, channel = SharedPage(), EventChannel()
    conn = BackendConnection(1, page, channel.backend, devices=None)  # type: ignore[arg-type]
    done: list[str] = []
    theirs = [True]

    def answer(
        cmd: int, state: int, target: AerTarget, timeout: float, still_wanted: object
    ) -> int:
        theirs[0] = False  # the device leaves while the guest answers
        return int(ErsResult.NEED_RESET)

    conn.has_aer_handler = lambda: True  # type: ignore[method-assign]
    conn.aer_request = answer  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(AerAborted):
            recover(
                conn,
                AerTarget(0, 0, 0),
                ChannelState.IO_FROZEN,
                reset_device=lambda: done.append("reset"),
                kill_guest=lambda: done.append("kill"),
                still_wanted=lambda: theirs[0],
            )
        assert done == []
    finally:
        channel.close()


def test_an_aer_handler_reads_config_space_while_it_answers(host: SimHost) -> None:
    # A driver's error handler reads its device (its status, its AER registers) before it
    # answers: the frontend's interrupt thread makes that op itself.
    guest, _ = attach(host)
    seen: list[int] = []

    def handler(request: AerRequest) -> int:
        seen.append(guest.conf_read(ADDR, VENDOR_ID.offset, VENDOR_ID.width))
        return int(ErsResult.RECOVERED)

    guest.set_aer_handler(handler)
    outcome = host.inject_aer(ADDR, ChannelState.IO_NORMAL)
    assert seen == [0x8086, 0x8086]  # detected, then resume
    assert outcome.recovered  # an op waiting out its timeout would have cost the answer


def test_an_op_is_answered_while_the_interrupt_thread_is_busy_in_a_handler() -> None:
    with SimHost(aer_timeout=30.0, op_timeout=5.0) as host:  # the handler may take its time
        _answered_while_busy(host)


def _answered_while_busy(host: SimHost) -> None:
    guest, _ = attach(host)
    asked, release = threading.Event(), threading.Event()
    released: list[bool] = []

    def slow_handler(request: AerRequest) -> int:
        asked.set()
        released.append(release.wait(5))
        return int(ErsResult.RECOVERED)

    guest.set_aer_handler(slow_handler)
    recovery = threading.Thread(target=lambda: host.inject_aer(ADDR, ChannelState.IO_NORMAL))
    recovery.start()
    try:
        assert asked.wait(5)
        serve = guest.backend.handler

        def late(req: OpRequest) -> OpResult:
            time.sleep(0.05)  # the answer comes after the frontend has begun to wait
            return serve(req)

        guest.backend.handler = late
        assert guest.conf_read(ADDR, VENDOR_ID.offset, VENDOR_ID.width) == 0x8086
    finally:
        release.set()
        recovery.join(10)
    # The op was answered while the handler still waited: it was released, not timed out.
    assert released[0] is True
