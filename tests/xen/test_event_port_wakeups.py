"""What one wake-up of the Xen event port costs in system calls, in what order, and that it does
no more than an event needs: each system call of a PV dom0 goes through the hypervisor."""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from pciback.errors import XenPciError
from pciback.protocol.abi import PAGE_SIZE, Cmd, Flag
from pciback.protocol.connection import BackendConnection
from pciback.protocol.ops import OpResult
from pciback.xen import atomic, evtchn
from pciback.xen._loader import XenUnavailable
from pciback.xen.atomic import BitAction, bit_op, word_of
from pciback.xen.evtchn import XenEventPort
from pciback.xen.gnttab import XenSharedPage
from tests.xen.fakes import FakeEvtchn

_read = os.read  # the stand-in's own read, not one of the port's


class Syscalls:
    def __init__(self) -> None:
        self.made: list[str] = []

    def count(self, name: str) -> None:
        self.made.append(name)

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.made)

    def clear(self) -> None:
        self.made.clear()


class CountingEvtchn(FakeEvtchn):
    """FakeEvtchn with every call that is a system call in libxenevtchn counted: pending is a
    read(2), unmask a write(2), notify an ioctl(2)."""

    def __init__(self, syscalls: Syscalls, *, pending_fails: bool = False) -> None:
        super().__init__()
        self.syscalls = syscalls
        self.pending_fails = pending_fails

    def xenevtchn_pending(self, xce: Any) -> int:
        self.syscalls.count("read")
        if self.pending_fails:  # another reader took the event first
            evtchn.ffi.errno = errno.EAGAIN
            return -1
        _read(xce.fd, 8)
        return int(xce.port)

    def xenevtchn_unmask(self, xce: Any, port: int) -> int:
        self.syscalls.count("write")
        return super().xenevtchn_unmask(xce, port)

    def xenevtchn_notify(self, xce: Any, port: int) -> int:
        self.syscalls.count("ioctl")
        return super().xenevtchn_notify(xce, port)


@pytest.fixture
def syscalls(monkeypatch: pytest.MonkeyPatch) -> Syscalls:
    """The port's own poll, read and write counted (monkeypatched before it is made)."""
    calls = Syscalls()
    real_poll, real_read, real_write = select.poll, os.read, os.write

    class CountingPoll:
        def __init__(self) -> None:
            self._poll = real_poll()

        def register(self, fd: int, mask: int) -> None:
            self._poll.register(fd, mask)

        def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
            calls.count("poll")
            return self._poll.poll(timeout)

    def counting_read(fd: int, n: int) -> bytes:
        calls.count("read")
        return real_read(fd, n)

    def counting_write(fd: int, data: Any) -> int:
        calls.count("write")
        return real_write(fd, data)

    monkeypatch.setattr(select, "poll", CountingPoll)
    monkeypatch.setattr(os, "read", counting_read)
    monkeypatch.setattr(os, "write", counting_write)
    return calls


@pytest.fixture
def port(syscalls: Syscalls) -> Iterator[tuple[XenEventPort, CountingEvtchn]]:
    fake = CountingEvtchn(syscalls)
    port = XenEventPort(5, 3, lib=fake)
    yield port, fake
    port.close()


def _need_libatomic() -> None:
    try:
        atomic.library()
    except XenUnavailable as exc:
        pytest.skip(str(exc))


def test_an_event_is_taken_and_unmasked_by_the_next_wait(
    port: tuple[XenEventPort, CountingEvtchn], syscalls: Syscalls
) -> None:
    xen_port, fake = port
    fake.deliver(xen_port.local_port)  # the hypervisor's doing, not the port's
    syscalls.clear()
    before = time.perf_counter_ns()
    assert xen_port.wait(1.0)
    assert before <= xen_port.slept_ns <= xen_port.woke_ns <= time.perf_counter_ns()
    assert syscalls.made == ["poll"]  # the wake-up returns at once
    assert xen_port.wait(0) is False
    assert syscalls.made == ["poll", "read", "write", "poll"]
    assert fake.calls == [("bind", 5, 3), ("unmask", 40)]


def test_a_kick_is_taken_with_one_read_and_unmasks_nothing(
    port: tuple[XenEventPort, CountingEvtchn], syscalls: Syscalls
) -> None:
    xen_port, fake = port
    xen_port.kick_self()
    syscalls.clear()
    assert xen_port.wait(1.0)
    assert syscalls.made == ["poll", "read"]  # no select before the read
    assert xen_port.wait(0) is False  # the kick was consumed
    assert ("unmask", 40) not in fake.calls


def test_a_port_the_kernel_did_not_deliver_is_not_unmasked(syscalls: Syscalls) -> None:
    fake = CountingEvtchn(syscalls, pending_fails=True)
    xen_port = XenEventPort(5, 3, lib=fake)
    try:
        fake.deliver(xen_port.local_port)
        syscalls.clear()
        assert xen_port.wait(1.0)
        xen_port.wait(0)
        assert syscalls.made[:3] == ["poll", "read", "poll"]
        assert "write" not in syscalls.made
        assert ("unmask", 40) not in fake.calls
    finally:
        xen_port.close()


def test_each_op_costs_four_system_calls_and_is_answered_before_two_of_them(
    port: tuple[XenEventPort, CountingEvtchn], syscalls: Syscalls
) -> None:
    """poll, xenevtchn_notify (ioctl), then, at the next wait, xenevtchn_pending (read) and
    xenevtchn_unmask (write): the least an op costs with a service thread that sleeps between
    ops, and only the poll comes before the answer."""
    _need_libatomic()
    xen_port, fake = port
    buffer = bytearray(PAGE_SIZE)
    page = XenSharedPage(buffer)
    answer = OpResult(XenPciError.SUCCESS, 0x1AF4)
    no_devices: Any = None
    conn = BackendConnection(3, page, xen_port, no_devices, lambda req: answer)
    page.info.op.cmd = Cmd.CONF_READ
    per_op = []
    for _ in range(4):
        bit_op(word_of(buffer), Flag.PCIF_ACTIVE, BitAction.SET)  # the guest's op and event
        fake.deliver(xen_port.local_port)
        syscalls.clear()
        assert xen_port.wait(None)
        assert conn.process_pending(xen_port.woke_ns) == 1
        per_op.append(list(syscalls.made))
    assert per_op[0] == ["poll", "ioctl"]
    assert per_op[1:] == [["read", "write", "poll", "ioctl"]] * 3  # the last event's, then this
    assert int(page.info.op.value) == 0x1AF4
    assert conn.stats.ops == 4


class BlockingNotify(FakeEvtchn):
    """A notify that stays in the library until the test lets it go, as an ioctl(2) that the
    hypervisor is slow to return from."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def xenevtchn_notify(self, xce: Any, port: int) -> int:
        self.entered.set()
        assert self.release.wait(5)
        assert ("close", port) not in self.calls, "the handle was closed under a notify"
        return super().xenevtchn_notify(xce, port)


def test_close_waits_for_a_notify_under_way_and_later_notifies_do_nothing() -> None:
    lib = BlockingNotify()
    port = XenEventPort(1, 7, lib=lib)
    notifier = threading.Thread(target=port.notify)
    notifier.start()
    assert lib.entered.wait(5)
    closer = threading.Thread(target=port.close)
    closer.start()
    closer.join(0.05)
    assert closer.is_alive()  # the handle is still in use
    lib.release.set()
    notifier.join(5)
    closer.join(5)
    assert not closer.is_alive()
    assert ("close", port.local_port) in lib.calls
    port.notify()  # after close: nothing reaches the library
    assert lib.notified == [port.local_port]


class _NoLock:
    """A lock that fails the test when taken: in CPython 3.11 each acquire reads the clock, a
    system call in a PV dom0."""

    def __enter__(self) -> None:
        raise AssertionError("a lock was taken on the wake-up path")

    def __exit__(self, *exc: object) -> None:
        pass

    acquire = __enter__


def test_a_wake_up_takes_no_lock(port: tuple[XenEventPort, CountingEvtchn]) -> None:
    xen_port, fake = port
    real_lock = xen_port._lock
    xen_port._lock = _NoLock()  # type: ignore[assignment]
    try:
        fake.deliver(xen_port.local_port)
        assert xen_port.wait(1.0)
        assert xen_port.wait(0) is False  # takes the event and unmasks: still no lock
    finally:
        xen_port._lock = real_lock


class BlockingPending(FakeEvtchn):
    """xenevtchn_pending blocks until released, and checks that the handle is still open."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def xenevtchn_pending(self, xce: Any) -> int:
        self.entered.set()
        assert self.release.wait(5)
        assert not any(call[0] == "close" for call in self.calls), "closed under a wait"
        return super().xenevtchn_pending(xce)


def test_close_waits_for_a_wait_taking_its_event_and_a_later_wait_returns_at_once() -> None:
    lib = BlockingPending()
    port = XenEventPort(1, 7, lib=lib)
    lib.deliver(port.local_port)
    assert port.wait(1.0)  # the event is taken at the next wait, which blocks in pending
    waiter = threading.Thread(target=port.wait, args=(5.0,))
    waiter.start()
    assert lib.entered.wait(5)
    closer = threading.Thread(target=port.close)
    closer.start()
    closer.join(0.05)
    assert closer.is_alive()  # the waiter still uses the handle
    lib.release.set()
    waiter.join(5)
    closer.join(5)
    assert not waiter.is_alive() and not closer.is_alive()
    assert port.wait(5.0) is False  # closed: no sleep at all
