"""The shared page's flag operations and the event channel's wake-ups."""

from __future__ import annotations

import threading

import pytest

from pciback.protocol.abi import SHAREDINFO_SIZE, Flag
from pciback.protocol.transport import Doorbell, EventChannel, SharedPage


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
