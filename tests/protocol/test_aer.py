"""AER: requests to the frontend over the page, with and without a handler, and the timeout."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from pciback.protocol.abi import ChannelState, Cmd, ErsResult, Flag
from pciback.protocol.aer import AerOutcome
from pciback.protocol.connection import AerTarget, BackendConnection
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim import SimGuest, SimHost
from pciback.sim.device import SimDevice
from pciback.sim.frontend import AerRequest

from .simconfig import nic_config

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
    assert guest.conf_read(ADDR, 0, 2) == 0x8086  # the guest keeps working


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
    assert guest.conf_read(ADDR, 0, 2) == 0x8086  # answered while the backend waits
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
