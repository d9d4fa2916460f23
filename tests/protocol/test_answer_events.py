"""An answer's event while the service thread lingers: dropped when the guest's next op shows it
saw the answer without it (Linux's pcifront polls the flags word), sent late otherwise, and
sent at once again for a while to a guest that waits for it."""

from __future__ import annotations

import pytest

from pciback.errors import XenPciError
from pciback.protocol import connection as connection_module
from pciback.protocol.abi import Cmd, Flag
from pciback.protocol.answer_events import EXPIRED_BEFORE_OFF, OFF_ANSWERS, AnswerEvents
from pciback.protocol.connection import OPS_PER_WAKEUP, BackendConnection
from pciback.protocol.linger import LOOKS_PER_CLOCK, Linger
from pciback.protocol.ops import OpRequest, OpResult
from pciback.protocol.transport import EventChannel, SharedPage

from .simconfig import post_op

LINGER_CAP_NS = 2_000_000


class Guest(SharedPage):
    """A guest that posts `ops` more ops after its first, each `gap` looks at the flags word
    after it notices the answer before: in the flags word (`polls`, as Linux's pcifront) or
    by the event. Records what the backend did, in order: answers, events, looks."""

    def __init__(self, ops: int, gap: int, polls: bool) -> None:
        super().__init__()
        self.left, self.gap, self.polls = ops, gap, polls
        self.log: list[str] = []
        self._posting_in: int | None = None
        finish = self.finish_op

        def answered() -> object:
            result = finish()
            self.log.append("answer")
            if self.polls:
                self._post_later()
            return result

        self.finish_op = answered
        self._load = self.load_flags
        self.load_flags = self._look

    def event(self) -> None:
        self.log.append("event")
        if not self.polls:
            self._post_later()

    def _post_later(self) -> None:
        if self.left:
            self.left -= 1
            self._posting_in = self.gap

    def _look(self) -> int:
        self.log.append("look")
        if self._posting_in is not None:
            if self._posting_in:
                self._posting_in -= 1
            else:
                self._posting_in = None
                post_op(self, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        return self._load()

    def events_after_answers(self) -> list[int]:
        """For each answer, the looks between it and its event; -1 where the next answer came
        first (no event)."""
        found: list[int] = []
        looks: int | None = None
        for entry in self.log:
            if entry == "answer":
                if looks is not None:
                    found.append(-1)
                looks = 0
            elif entry == "look" and looks is not None:
                looks += 1
            elif entry == "event" and looks is not None:
                found.append(looks)
                looks = None
        if looks is not None:
            found.append(-1)
        return found


def serving(guest: Guest, linger_ns: int = LINGER_CAP_NS) -> tuple[BackendConnection, EventChannel]:
    channel = EventChannel()

    def handler(req: OpRequest) -> OpResult:
        return OpResult(XenPciError.SUCCESS, 0)

    conn = BackendConnection(1, guest, channel.backend, None, handler=handler)  # type: ignore[arg-type]
    conn.linger = Linger(linger_ns)
    notify = channel.backend.notify

    def notified() -> None:
        notify()
        guest.event()

    conn.port.notify = notified  # type: ignore[method-assign]
    return conn, channel


def serve_until(conn: BackendConnection, guest: Guest, answers: int) -> None:
    """Post the guest's first op and run wake-ups until `answers` ops are answered."""
    post_op(guest, cmd=int(Cmd.CONF_READ), offset=0, size=4)
    served = 0
    while served < answers:
        got = conn.process_pending()
        assert got, "an op the guest posted was left unanswered"
        served += got


def test_a_polling_guests_burst_needs_one_event_its_last() -> None:
    guest = Guest(ops=9, gap=3, polls=True)
    conn, channel = serving(guest)
    try:
        post_op(guest, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == 10
        after = guest.events_after_answers()
        assert after[:9] == [-1] * 9  # each answer's next op came before its event
        assert after[9] >= 0  # the last one's event was sent, before the thread went to sleep
        assert guest.log.count("event") == 1
        assert conn.events.as_dict() == {"dropped": 9, "late": 1, "offs": 0}
        assert not guest.test_bit(Flag.PCIF_ACTIVE)
    finally:
        channel.close()


def test_an_event_waits_half_the_window_as_it_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock by which each run of LOOKS_PER_CLOCK looks takes 1 µs a look: the first measure
    # turns the first window (the cap counted at a look of 1 ns) into 2000 looks.
    ticks = iter(range(0, 10**12, LOOKS_PER_CLOCK * 1000))
    monkeypatch.setattr(connection_module, "perf_counter_ns", lambda: next(ticks))
    guest = Guest(ops=0, gap=0, polls=True)  # one op, nothing follows it
    conn, channel = serving(guest)
    try:
        post_op(guest, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == 1
        assert conn.linger.window() == LINGER_CAP_NS // 1000
        # The wake-up's own look for a next op, then half the window's.
        assert guest.events_after_answers() == [1 + conn.linger.window() // 2]
    finally:
        channel.close()


def test_ops_found_at_the_wake_up_drop_the_events_before_them() -> None:
    guest = Guest(ops=5, gap=0, polls=True)  # each next op there at the very next look
    conn, channel = serving(guest)
    try:
        post_op(guest, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == 6
        assert guest.events_after_answers() == [-1] * 5 + [guest.events_after_answers()[-1]]
        assert conn.events.as_dict() == {"dropped": 5, "late": 1, "offs": 0}
    finally:
        channel.close()


def test_only_late_events_in_a_row_turn_deferring_off() -> None:
    events = AnswerEvents()
    for outcome in (
        ["late"] * (EXPIRED_BEFORE_OFF - 1) + ["dropped"] + ["late"] * (EXPIRED_BEFORE_OFF - 1)
    ):
        assert events.defer()
        events.expired() if outcome == "late" else events.overtaken()
    assert events.offs == 0
    assert events.defer()
    events.expired()
    assert events.offs == 1 and not events.defer()


def test_an_owed_event_is_sent_when_the_thread_stops() -> None:
    guest = Guest(ops=0, gap=0, polls=True)
    conn, channel = serving(guest)
    looked = guest.load_flags

    def look_then_stop() -> int:
        if guest.log.count("look") == 5:
            conn._stopping = True  # as close() sets it
        return looked()

    guest.load_flags = look_then_stop
    try:
        post_op(guest, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == 1
        assert guest.log.count("event") == 1 and not conn.events.owed
    finally:
        channel.close()


def test_an_owed_event_is_sent_when_lingering_raises() -> None:
    guest = Guest(ops=0, gap=0, polls=True)
    conn, channel = serving(guest)

    def broken(own: SharedPage) -> bool:
        raise RuntimeError("a bug in the look for other guests' ops")

    conn.neighbours.waiting_besides = broken  # type: ignore[method-assign]
    try:
        post_op(guest, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        with pytest.raises(RuntimeError):
            conn.process_pending()
        # Sent after the wake-up's own look for a next op, before any look of the linger.
        assert guest.events_after_answers() == [1] and not conn.events.owed
    finally:
        channel.close()


def test_a_guest_waiting_for_events_gets_them_at_once_after_a_few_late_ones() -> None:
    guest = Guest(ops=EXPIRED_BEFORE_OFF + 20, gap=0, polls=False)
    conn, channel = serving(guest)
    try:
        serve_until(conn, guest, EXPIRED_BEFORE_OFF + 21)
        after = guest.events_after_answers()
        assert -1 not in after  # every answer had its event: this guest waits for them
        # Deferred (sent after looks) until EXPIRED_BEFORE_OFF in a row, then at once.
        assert all(looks > 0 for looks in after[:EXPIRED_BEFORE_OFF])
        assert after[EXPIRED_BEFORE_OFF:] == [0] * (len(after) - EXPIRED_BEFORE_OFF)
        assert conn.events.offs == 1 and conn.events.late == EXPIRED_BEFORE_OFF
        # The waits for the late events were not the guest's gaps: the linger learnt none.
        assert conn.linger.as_dict()["gap_looks_mean"] is None
    finally:
        channel.close()


def test_deferring_is_tried_again_after_its_answers_off() -> None:
    guest = Guest(ops=0, gap=0, polls=True)
    conn, channel = serving(guest)
    events = conn.events
    for _ in range(EXPIRED_BEFORE_OFF):
        assert events.defer()
        events.expired()
    assert [events.defer() for _ in range(OFF_ANSWERS)] == [False] * OFF_ANSWERS
    assert events.defer()  # tried again
    events.overtaken()
    assert events.as_dict() == {"dropped": 1, "late": EXPIRED_BEFORE_OFF, "offs": 1}
    channel.close()


def test_without_lingering_each_answer_has_its_event_at_once() -> None:
    guest = Guest(ops=3, gap=0, polls=True)
    conn, channel = serving(guest, linger_ns=0)
    try:
        serve_until(conn, guest, 4)
        assert guest.events_after_answers() == [0, 0, 0, 0]
        assert conn.events.as_dict() == {"dropped": 0, "late": 0, "offs": 0}
    finally:
        channel.close()


def test_an_owed_event_is_sent_when_the_wake_ups_budget_ends() -> None:
    guest = Guest(ops=OPS_PER_WAKEUP + 5, gap=0, polls=True)
    conn, channel = serving(guest)
    try:
        post_op(guest, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == OPS_PER_WAKEUP
        after = guest.events_after_answers()
        # The budget's last answer: its event went at once, the next op may wait a wake-up.
        assert after[OPS_PER_WAKEUP - 1] == 0
        assert guest.log[-1] == "event" or guest.log[-2:] == ["event", "look"]
    finally:
        channel.close()


def test_an_owed_event_is_sent_when_another_guests_op_ends_the_lingering() -> None:
    guest = Guest(ops=0, gap=0, polls=True)
    conn, channel = serving(guest)
    other = SharedPage()
    conn.neighbours.join(guest)
    conn.neighbours.join(other)
    try:
        post_op(guest, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        post_op(other, cmd=int(Cmd.CONF_READ), offset=0, size=4)  # waiting for its thread
        assert conn.process_pending() == 1
        assert guest.log.count("event") == 1
        assert not conn.events.owed
    finally:
        channel.close()
