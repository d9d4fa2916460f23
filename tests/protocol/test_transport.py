"""The shared page's flag operations and the event channel's wake-ups."""

from __future__ import annotations

import threading
import time

import pytest

from pciback.protocol.abi import SHAREDINFO_SIZE, Cmd, Flag
from pciback.protocol.connection import BackendConnection
from pciback.protocol.transport import Doorbell, EventChannel, SharedPage

from .simconfig import post_op


def test_flag_operations_report_the_previous_state() -> None:
    page = SharedPage()
    assert page.set_bit(Flag.PCIF_ACTIVE) is False
    assert page.set_bit(Flag.PCIF_ACTIVE) is True
    page.set_bit(Flag.PCIB_ACTIVE)
    assert int(page.info.flags) == 0b101
    assert page.clear_bit(Flag.PCIF_ACTIVE) is True
    assert page.clear_bit(Flag.PCIF_ACTIVE) is False
    assert page.test_bit(Flag.PCIB_ACTIVE) and not page.test_bit(Flag.PCIF_ACTIVE)
    assert int(page.info.flags) == 0b100


def test_the_page_is_the_buffer() -> None:
    buf = bytearray(4096)
    page = SharedPage(buf)
    page.info.op.value = 0x11223344
    assert buf[4 + 28 : 4 + 32] == bytes([0x44, 0x33, 0x22, 0x11])
    with pytest.raises(ValueError):
        SharedPage(bytearray(SHAREDINFO_SIZE - 1))


def test_doorbell_rings_coalesce_until_consumed() -> None:
    bell = Doorbell()
    try:
        assert bell.wait(0) is False
        bell.ring()
        bell.ring()
        assert bell.wait(0) is True
        assert bell.wait(0) is False
    finally:
        bell.close()


def test_each_port_wakes_the_other_end() -> None:
    channel = EventChannel()
    try:
        channel.frontend.notify()
        assert channel.frontend.wait(0) is False
        assert channel.backend.wait(0) is True
        channel.backend.notify()
        assert channel.frontend.wait(0) is True
        channel.backend.kick_self()
        assert channel.backend.wait(0) is True
    finally:
        channel.close()


def test_a_sleeper_is_woken_from_another_thread() -> None:
    channel = EventChannel()
    woke: list[bool] = []
    sleeper = threading.Thread(target=lambda: woke.append(channel.backend.wait(10)))
    sleeper.start()
    channel.frontend.notify()
    sleeper.join(10)
    channel.close()
    assert woke == [True]


def test_concurrent_bit_updates_are_not_lost() -> None:
    page = SharedPage()
    rounds = 2000

    def flip(bit: Flag) -> None:
        for _ in range(rounds):
            page.set_bit(bit)
            page.clear_bit(bit)
        page.set_bit(bit)

    threads = [threading.Thread(target=flip, args=(b,)) for b in Flag]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(page.info.flags) == 0b111


def _sleeping(bell: Doorbell, woke: list[bool]) -> threading.Thread:
    sleeper = threading.Thread(target=lambda: woke.append(bell.wait(None)))
    sleeper.start()
    while bell._sleepers == 0:  # until it is inside select: closing must not pull the fd away
        time.sleep(0.001)
    return sleeper


def test_closing_a_doorbell_under_a_sleeper_wakes_it_without_ebadf() -> None:
    bell = Doorbell()
    woke: list[bool] = []
    sleeper = _sleeping(bell, woke)
    bell.close()  # returns only once the sleeper has left select
    assert woke == [False]
    sleeper.join(10)
    assert not sleeper.is_alive()
    assert bell.wait(None) is False  # a closed bell never sleeps, even without a timeout
    bell.ring()  # and ringing it touches no fd


def test_a_guest_closing_its_channel_first_ends_the_service_thread_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    died: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    page, channel = SharedPage(), EventChannel()
    conn = BackendConnection(1, page, channel.backend, _NoDevices())
    conn.start()
    post_op(page, cmd=Cmd.CONF_READ, size=4)
    channel.frontend.notify()
    while page.test_bit(Flag.PCIF_ACTIVE):  # served: the thread is back asleep on its bell
        time.sleep(0.001)
    thread = conn._thread
    assert thread is not None
    channel.close()  # the wrong order: the guest's end goes while the backend still waits
    thread.join(10)
    assert not thread.is_alive() and died == []
    conn.close()  # the backend's own teardown afterwards is harmless


class _NoDevices:
    def lookup(self, domain: int, bus: int, devfn: int) -> None:
        return None
