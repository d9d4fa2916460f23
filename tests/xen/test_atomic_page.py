"""The shared page over foreign memory: flags through libatomic, ops through the connection."""

from __future__ import annotations

import mmap
import os
import threading
from typing import Any

import pytest

from pciback.errors import XenPciError
from pciback.protocol.abi import PAGE_SIZE, Cmd, Flag
from pciback.protocol.connection import BackendConnection
from pciback.protocol.ops import OpRequest, OpResult
from pciback.protocol.transport import OP_PENDING, EventChannel
from pciback.xen import atomic
from pciback.xen._loader import XenUnavailable
from pciback.xen.atomic import AtomicWord, BitAction, bit_op, word_of
from pciback.xen.gnttab import XenSharedPage


def _need_libatomic() -> None:
    try:
        atomic.library()
    except XenUnavailable as exc:
        pytest.skip(str(exc))


def test_bit_ops_return_the_old_bit_and_touch_only_theirs() -> None:
    _need_libatomic()
    buf = bytearray(8)
    buf[0:4] = (0x8000_0002).to_bytes(4, "little")
    word = word_of(buf)
    assert bit_op(word, 0, BitAction.SET) is False
    assert bit_op(word, 0, BitAction.SET) is True
    assert bit_op(word, 1, BitAction.CLEAR) is True
    assert bit_op(word, 1, BitAction.CLEAR) is False
    assert bit_op(word, 31, BitAction.TEST) is True
    assert int.from_bytes(buf[0:4], "little") == 0x8000_0001
    with pytest.raises(ValueError, match="bit 32"):
        bit_op(word, 32, BitAction.SET)


def test_the_atomic_word_tests_sets_and_clears_its_bits() -> None:
    _need_libatomic()
    buffer = bytearray(8)
    buffer[0:4] = (0x8000_0004).to_bytes(4, "little")
    word = AtomicWord(buffer)
    assert word.test(2) and word.test(31) and not word.test(0)
    assert word.set(0) is False and word.set(0) is True
    assert word.clear(2) is True and word.clear(2) is False
    assert int.from_bytes(buffer[0:4], "little") == 0x8000_0001
    for operation in (word.test, word.set, word.clear):
        with pytest.raises(ValueError, match="bit 32"):
            operation(32)


def test_concurrent_updates_of_different_bits_lose_nothing() -> None:
    """Each thread owns one bit and flips it; every old value it sees must be its own last
    write (a lost update elsewhere in the word would not show here, but one of its own
    would)."""
    _need_libatomic()
    buf = bytearray(4)
    word = word_of(buf)
    errors: list[int] = []

    def flip(bit: int) -> None:
        for _ in range(5000):
            if bit_op(word, bit, BitAction.SET) or not bit_op(word, bit, BitAction.CLEAR):
                errors.append(bit)

    threads = [threading.Thread(target=flip, args=(b,)) for b in (0, 2, 5, 31)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert buf == bytearray(4)


def test_another_cpu_flipping_its_bit_in_shared_memory_loses_nothing() -> None:
    """As with a guest: a second process (another CPU where there is one) flips bit 2 of a
    shared page while this one flips bit 0; no flip of either is lost or seen twice."""
    _need_libatomic()
    shared = mmap.mmap(-1, PAGE_SIZE)  # MAP_SHARED | MAP_ANONYMOUS: the child sees it too
    word = word_of(shared)
    rounds = 20000
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        bad = 0
        for _ in range(rounds):
            if bit_op(word, 2, BitAction.SET) or not bit_op(word, 2, BitAction.CLEAR):
                bad += 1
        os._exit(min(bad, 100))
    bad = 0
    for _ in range(rounds):
        if bit_op(word, 0, BitAction.SET) or not bit_op(word, 0, BitAction.CLEAR):
            bad += 1
    _, status = os.waitpid(pid, 0)
    assert (bad, os.waitstatus_to_exitcode(status)) == (0, 0)
    assert shared[:4] == bytes(4)
    del word
    shared.close()


def test_unaligned_or_short_words_are_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        word_of(memoryview(bytearray(16))[1:9])
    with pytest.raises(ValueError, match="4 bytes"):
        word_of(bytearray(2))


@pytest.mark.usefixtures("no_libraries")
def test_missing_libatomic_is_named() -> None:
    with pytest.raises(XenUnavailable, match=r"libatomic not found .*libatomic1"):
        bit_op(word_of(bytearray(4)), 0, BitAction.TEST)


def test_the_backend_changes_only_the_bits_it_owns() -> None:
    _need_libatomic()
    page = XenSharedPage(bytearray(PAGE_SIZE))
    with pytest.raises(ValueError, match="PCIF_ACTIVE"):
        page.set_bit(Flag.PCIF_ACTIVE)
    with pytest.raises(ValueError, match="PCIB_AERHANDLER"):
        page.clear_bit(Flag.PCIB_AERHANDLER)
    assert page.set_bit(Flag.PCIB_ACTIVE) is False
    assert page.test_bit(Flag.PCIB_ACTIVE)
    assert page.clear_bit(Flag.PCIB_ACTIVE) is True


def test_closing_unmaps_once_and_leaves_an_idle_page() -> None:
    _need_libatomic()
    buf = bytearray(PAGE_SIZE)
    released: list[int] = []
    page = XenSharedPage(buf, lambda: released.append(1))
    bit_op(word_of(buf), Flag.PCIF_ACTIVE, BitAction.SET)  # the guest raised an op
    assert page.test_bit(Flag.PCIF_ACTIVE)
    page.close()
    page.close()
    assert released == [1]
    assert not page.test_bit(Flag.PCIF_ACTIVE)  # a late reader sees nothing pending
    assert page.buffer is not buf


def test_the_op_paths_flag_callables_go_through_the_atomics_of_the_mapped_page() -> None:
    _need_libatomic()
    buf = bytearray(PAGE_SIZE)
    page = XenSharedPage(buf)
    word = word_of(buf)
    bit_op(word, Flag.PCIB_AERHANDLER, BitAction.SET)  # the guest's own bit
    bit_op(word, Flag.PCIF_ACTIVE, BitAction.SET)  # and an op
    assert page.load_flags() & OP_PENDING
    page.finish_op()
    assert not bit_op(word, Flag.PCIF_ACTIVE, BitAction.TEST)
    assert bit_op(word, Flag.PCIB_AERHANDLER, BitAction.TEST)  # untouched
    assert not page.load_flags() & OP_PENDING
    bit_op(word, Flag.PCIF_ACTIVE, BitAction.SET)
    page.close()  # rebinds: the callables fetched now read the idle spare page
    assert page.load_flags() == 0
    page.finish_op()
    assert bit_op(word, Flag.PCIF_ACTIVE, BitAction.TEST)  # the unmapped page is left alone


def test_a_connection_serves_an_op_on_the_atomic_page() -> None:
    _need_libatomic()
    buf = bytearray(PAGE_SIZE)
    page = XenSharedPage(buf)
    seen: list[OpRequest] = []

    def handler(req: OpRequest) -> OpResult:
        seen.append(req)
        return OpResult(XenPciError.SUCCESS, value=0x1AF4)

    channel = EventChannel()
    conn = BackendConnection(3, page, channel.backend, devices=None, handler=handler)  # type: ignore[arg-type]
    guest: Any = page.info
    guest.op.cmd = Cmd.CONF_READ
    guest.op.offset = 0
    guest.op.size = 2
    bit_op(word_of(buf), Flag.PCIF_ACTIVE, BitAction.SET)  # as pcifront's set_bit
    try:
        assert conn.process_pending() == 1
    finally:
        channel.close()
    assert seen[0].cmd == Cmd.CONF_READ and seen[0].size == 2
    assert int(guest.op.value) == 0x1AF4 and int(guest.op.err) == 0
    assert not bit_op(word_of(buf), Flag.PCIF_ACTIVE, BitAction.TEST)
