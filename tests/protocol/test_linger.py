"""Lingering after an answer: the next op of a burst is served without a wake-up, a guest whose
ops come rarely makes the thread stop looking, and the window never exceeds its cap."""

from __future__ import annotations

import time

import pytest

from pciback.errors import XenPciError
from pciback.protocol import connection as connection_module
from pciback.protocol.abi import Cmd, Flag
from pciback.protocol.connection import OPS_PER_WAKEUP, BackendConnection
from pciback.protocol.linger import (
    BACKOFF_WAKEUPS,
    FIRST_LOOK_NS,
    FLOOR_NS,
    LOOKS_PER_CLOCK,
    MEASURABLE_LOOKS,
    MISSES_BEFORE_BACKOFF,
    QUICK_WAKEUPS_END_BACKOFF,
    RESUME_PROOF_HITS,
    WINDOW_PER_GAP,
    Linger,
)
from pciback.protocol.ops import OpRequest, OpResult
from pciback.protocol.transport import OP_PENDING, EventChannel, SharedPage

from .simconfig import post_op

CAP = 2_000_000


def test_the_window_follows_the_gaps_within_its_cap() -> None:
    linger = Linger(CAP)
    linger.measured(LOOKS_PER_CLOCK * 100)  # a look costs 100 ns on this imagined machine
    assert linger.look_ns == 100
    assert linger.window() == CAP // 100  # nothing learnt yet: the cap, in looks
    for _ in range(128):
        linger.hit(100)  # a guest on hardware: ~10 µs (100 looks) from an answer to its next op
    assert FLOOR_NS // 100 <= linger.window() <= WINDOW_PER_GAP * 100 + 10
    for _ in range(64):
        linger.hit(10 * CAP)  # gaps far beyond the cap never widen the window past it
    assert linger.window() == CAP // 100
    assert Linger(0).window() == 0


def test_what_a_look_costs_turns_the_cap_into_looks() -> None:
    linger = Linger(CAP)
    assert linger.window() == CAP // FIRST_LOOK_NS  # before a measure: long, cut by the first
    linger.measured(LOOKS_PER_CLOCK * 1000)
    assert linger.window_ns() == CAP
    linger.measured(LOOKS_PER_CLOCK * 1_000_000)  # one run of looks preempted for 32 ms
    assert linger.look_ns <= 1000 * 17 // 16  # barely moves the estimate
    linger.measured(LOOKS_PER_CLOCK * 1000)
    for _ in range(256):
        linger.measured(LOOKS_PER_CLOCK * 2000)  # looks became twice as dear (a busier host)
    assert 1960 <= linger.look_ns <= 2000  # slowly, but it gets there
    assert linger.window() == CAP // linger.look_ns
    linger.measured(LOOKS_PER_CLOCK * 500)  # quicker: taken at once
    assert linger.look_ns == 500
    linger.measured(0)  # a clock that did not move never makes a look free
    assert linger.look_ns >= 1


def test_a_look_cost_measured_far_too_high_is_measured_again() -> None:
    linger = Linger(CAP)
    linger.measured(LOOKS_PER_CLOCK * CAP // 8)  # the first run preempted: 8 looks per cap
    assert linger.window() >= MEASURABLE_LOOKS  # still room for the two clock reads of a measure
    linger.measured(LOOKS_PER_CLOCK * 1000)  # the next measure, in such a window: taken at once
    assert linger.look_ns == 1000
    assert linger.window() == CAP // 1000


def test_a_window_measures_again_after_a_first_measure_far_too_high(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the service loop: after a first measure of 8 looks per cap, a window with no op
    in it (a miss) still reaches a second clock read, which corrects the cost."""
    ticks = iter(range(1 << 40, 1 << 62, LOOKS_PER_CLOCK * 1000))  # 1000 ns a look, by this clock
    monkeypatch.setattr(connection_module, "perf_counter_ns", ticks.__next__)
    page = SharedPage()
    channel = EventChannel()
    conn = BackendConnection(1, page, channel.backend, None, linger_ns=CAP)  # type: ignore[arg-type]
    try:
        conn.linger.measured(LOOKS_PER_CLOCK * CAP // 8)
        assert conn._linger(1) == 0  # nothing posted: a miss
        assert conn.linger.look_ns == 1000
    finally:
        channel.close()


def test_hits_before_the_first_measure_are_learnt_in_looks() -> None:
    # The lab's case: ops found after a few dozen looks, before 64 looks in a row ever gave the
    # clock a measure; once looks are measured, the window still fits those gaps.
    linger = Linger(CAP)
    for _ in range(32):
        linger.hit(50)
    linger.measured(LOOKS_PER_CLOCK * 6000)  # 6 µs a look, as in the lab's dom0
    assert linger.window() >= WINDOW_PER_GAP * 50 - 1
    for _ in range(128):
        linger.hit(3)  # small gaps are learnt upwards and downwards alike
    for _ in range(128):
        linger.hit(9)
    assert WINDOW_PER_GAP * 9 - 1 <= linger.window() <= WINDOW_PER_GAP * 9 + 4


def test_ops_found_at_the_first_look_do_not_narrow_the_window() -> None:
    # The lab's guests: many ops are posted before the first look (the guest saw the answer
    # before it slept), the others only after the answer's event woke it, 40 looks later.
    linger = Linger(CAP)
    linger.measured(LOOKS_PER_CLOCK * 6000)
    for _ in range(200):
        for _ in range(3):
            linger.hit(0)
        linger.hit(40)
    assert linger.window() >= WINDOW_PER_GAP * 40 - 1


def test_a_miss_doubles_the_window_and_quick_answers_bring_it_down_slowly() -> None:
    linger = Linger(CAP)
    linger.measured(LOOKS_PER_CLOCK * 1000)
    for _ in range(200):
        linger.hit(10)
    learnt = linger.window()
    assert learnt == WINDOW_PER_GAP * 10
    linger.miss()
    assert linger.window() == 2 * learnt  # the gaps grew: so does the window, at once
    linger.hit(10)
    assert linger.window() > learnt  # one op in the old rhythm does not undo it
    for _ in range(200):
        linger.hit(10)
    assert linger.window() <= learnt + 1  # many do
    for _ in range(20):
        linger.miss()
        linger.hit(10_000_000)
    assert linger.window() == CAP // 1000  # never past the cap


class LatePage(SharedPage):
    """A page whose guest posts its next op right after each answer, but where it becomes
    visible only after a few more looks at the flags word: the gap between an answer and the
    next op of a burst, counted in looks instead of time."""

    def __init__(self, ops: int, looks: int) -> None:
        super().__init__()
        self.left = ops
        self.looks = looks
        self._hidden = 0
        self._load = self.load_flags
        self.load_flags = self._late_load

    def post(self) -> None:
        if self.left:
            self.left -= 1
            post_op(self, cmd=int(Cmd.CONF_READ), offset=0, size=4)
            self._hidden = self.looks

    def _late_load(self) -> int:
        flags = self._load()
        if flags & OP_PENDING and self._hidden:
            self._hidden -= 1
            return flags & ~OP_PENDING
        return flags


def connection(linger_ns: int, page: LatePage) -> tuple[BackendConnection, EventChannel]:
    channel = EventChannel()

    def handler(req: OpRequest) -> OpResult:
        return OpResult(XenPciError.SUCCESS, 0)

    conn = BackendConnection(1, page, channel.backend, None, handler=handler)  # type: ignore[arg-type]
    conn.linger = Linger(linger_ns)
    finish = page.finish_op

    def answered() -> object:  # the guest sees each answer in the flags word (pcifront polls it)
        result = finish()
        page.post()
        return result

    page.finish_op = answered
    return conn, channel


def test_a_burst_is_served_in_one_wake_up_when_lingering() -> None:
    page = LatePage(ops=9, looks=3)
    conn, channel = connection(CAP, page)
    try:
        post_op(page, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == 10  # the first op and the nine that followed it
        assert conn.linger.hits == 9 and not page.test_bit(Flag.PCIF_ACTIVE)
    finally:
        channel.close()


def test_without_lingering_the_next_op_waits_for_a_wake_up() -> None:
    page = LatePage(ops=9, looks=3)
    conn, channel = connection(0, page)
    try:
        post_op(page, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == 1
        page._hidden = 0  # by the time the guest's event wakes the thread, the op is there
        assert conn.process_pending() == 1
    finally:
        channel.close()


def test_a_window_without_an_op_ends_and_counts_a_miss() -> None:
    page = LatePage(ops=0, looks=0)  # a single op: nothing follows
    conn, channel = connection(FLOOR_NS, page)
    try:
        post_op(page, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == 1
        assert conn.linger._misses == 1
    finally:
        channel.close()


def test_looking_reads_the_clock_once_per_measure_not_per_look(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page = LatePage(ops=0, looks=0)
    conn, channel = connection(CAP, page)
    looks = clock_reads = 0
    load = page.load_flags

    def counting_load() -> int:
        nonlocal looks
        looks += 1
        return load()

    def counting_clock() -> int:
        nonlocal clock_reads
        clock_reads += 1
        return time.perf_counter_ns()

    page.load_flags = counting_load
    monkeypatch.setattr(connection_module, "perf_counter_ns", counting_clock)
    try:
        post_op(page, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == 1
        assert conn.linger._misses == 1  # the whole window looked at, nothing found
        assert looks > 4 * LOOKS_PER_CLOCK
        assert clock_reads <= looks // LOOKS_PER_CLOCK + 3  # the op's own three at most
    finally:
        channel.close()


def test_the_daemon_lists_each_guests_lingering() -> None:
    linger = Linger(CAP)
    linger.measured(LOOKS_PER_CLOCK * 1000)
    linger.hit(10)
    for _ in range(MISSES_BEFORE_BACKOFF):
        linger.miss()
    assert linger.as_dict() == {
        "hits": 1,
        "misses": MISSES_BEFORE_BACKOFF,
        "backoffs": 1,
        "resumed": 0,
        "yields": 0,
        "look_ns": 1000,
        "gap_looks_mean": 10.0,
        "window_looks": 0,  # backing off
    }


def test_a_back_off_ends_at_two_quick_wake_ups_in_a_row() -> None:
    # A guest reading in a loop whose vCPU was preempted for a while: four misses in a row,
    # then its ops come again within the cap of each sleep; looking for them pays again.
    linger = Linger(CAP)
    linger.measured(LOOKS_PER_CLOCK * 1000)
    for _ in range(MISSES_BEFORE_BACKOFF):
        linger.miss()
    assert linger.window() == 0
    linger.woke(CAP // 2)
    assert linger.window() == 0  # one quick wake-up may be chance
    linger.woke(CAP - 1)
    assert linger.window() > 0
    assert linger.as_dict()["resumed"] == 1


def test_a_back_off_lasts_while_the_guest_sleeps_longer_than_the_cap() -> None:
    linger = Linger(CAP)
    linger.measured(LOOKS_PER_CLOCK * 1000)
    for _ in range(MISSES_BEFORE_BACKOFF):
        linger.miss()
    # Quick wake-ups that are never two in a row (a long or an unknown sleep between) end
    # nothing: the back-off runs its course, counted in wake-ups.
    sleeps = (CAP // 2, CAP * 3, CAP // 2, None)
    for i in range(BACKOFF_WAKEUPS - 1):
        linger.woke(sleeps[i % len(sleeps)])
        assert linger.window() == 0
    linger.woke(CAP * 3)
    assert linger.window() > 0
    assert linger.as_dict()["resumed"] == 0


def _back_off(linger: Linger) -> None:
    for _ in range(MISSES_BEFORE_BACKOFF):
        linger.miss()
    assert linger.window() == 0


def _wake_ups_until_lingering(linger: Linger, slept_ns: int) -> int:
    count = 0
    while not linger.window():
        linger.woke(slept_ns)
        count += 1
    return count


def test_a_back_off_ended_early_that_misses_again_is_followed_by_a_longer_one() -> None:
    # On a host short of CPU every window misses: ending each back-off at its first quick
    # wake-ups would spin four more windows each time.
    linger = Linger(CAP)
    linger.measured(LOOKS_PER_CLOCK * 1000)
    _back_off(linger)
    assert _wake_ups_until_lingering(linger, CAP // 2) == QUICK_WAKEUPS_END_BACKOFF
    linger.hit(3)  # fewer hits than RESUME_PROOF_HITS before the misses come back
    _back_off(linger)
    assert _wake_ups_until_lingering(linger, CAP // 2) == 2 * BACKOFF_WAKEUPS
    assert linger.as_dict()["resumed"] == 1


def test_a_back_off_ended_early_that_pays_leaves_the_next_one_short() -> None:
    linger = Linger(CAP)
    linger.measured(LOOKS_PER_CLOCK * 1000)
    _back_off(linger)
    _wake_ups_until_lingering(linger, CAP // 2)
    for _ in range(RESUME_PROOF_HITS):
        linger.hit(3)
    _back_off(linger)
    assert _wake_ups_until_lingering(linger, CAP // 2) == QUICK_WAKEUPS_END_BACKOFF


def test_quick_wake_ups_do_not_end_a_yield() -> None:
    # A busy neighbour is why the thread stopped lingering, not an idle guest: its own quick
    # wake-ups say nothing of the neighbour.
    linger = Linger(CAP)
    linger.measured(LOOKS_PER_CLOCK * 1000)
    linger.yielded()
    for _ in range(8):
        linger.woke(1_000)
    assert linger.window() == 0
    assert linger.as_dict()["resumed"] == 0


class BimodalPage(LatePage):
    """Three ops in four posted before the first look, the fourth 40 looks late."""

    def post(self) -> None:
        super().post()
        self._hidden = 40 if self.left % 4 == 0 else 0


def test_a_burst_of_quick_and_slow_answers_is_served_in_few_wake_ups() -> None:
    page = BimodalPage(ops=399, looks=0)
    conn, channel = connection(CAP, page)
    conn.linger.measured(LOOKS_PER_CLOCK * 1000)  # looks here cost what this machine says
    try:
        post_op(page, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        served = wake_ups = 0
        while served < 400 and wake_ups < 400:
            served += conn.process_pending()
            wake_ups += 1
        assert served == 400
        assert wake_ups <= 400 // OPS_PER_WAKEUP + 2  # only the budget ends a wake-up
        assert conn.linger.misses == 1  # only after the last op, which nothing follows
    finally:
        channel.close()
