"""Fairness between guests' service threads: a lingering thread gives way as soon as another
guest's op waits, and stops lingering while other guests are busy; a lone guest lingers as
before."""

from __future__ import annotations

import threading

from pciback.errors import XenPciError
from pciback.protocol.abi import Cmd, Flag
from pciback.protocol.connection import BackendConnection
from pciback.protocol.linger import YIELD_OFF_WAKEUPS, Linger
from pciback.protocol.neighbours import Neighbours
from pciback.protocol.ops import OpRequest, OpResult
from pciback.protocol.transport import EventChannel, SharedPage

from .simconfig import post_op

CAP = 2_000_000


def answer(req: OpRequest) -> OpResult:
    return OpResult(XenPciError.SUCCESS, 0)


def serving(page: SharedPage, neighbours: Neighbours) -> tuple[BackendConnection, EventChannel]:
    """A connection with lingering on, its thread not started (the test drives it)."""
    channel = EventChannel()
    conn = BackendConnection(
        1,
        page,
        channel.backend,
        None,  # type: ignore[arg-type]
        handler=answer,
        linger_ns=CAP,
        neighbours=neighbours,
    )
    neighbours.join(page)
    return conn, channel


def test_a_page_with_an_op_waits_for_the_others_not_for_itself() -> None:
    neighbours = Neighbours()
    mine, other = SharedPage(), SharedPage()
    neighbours.join(mine)
    neighbours.join(other)
    neighbours.join(other)  # once only
    assert len(neighbours) == 2
    assert not neighbours.waiting_besides(mine)
    post_op(mine, cmd=int(Cmd.CONF_READ), offset=0, size=4)
    assert not neighbours.waiting_besides(mine)  # its own op is its thread's to find
    post_op(other, cmd=int(Cmd.CONF_READ), offset=0, size=4)
    assert neighbours.waiting_besides(mine) and neighbours.waiting_besides(other)
    neighbours.leave(other)
    assert not neighbours.waiting_besides(mine) and len(neighbours) == 1


def test_another_guests_waiting_op_ends_the_window_and_lingering_stops_a_while() -> None:
    neighbours = Neighbours()
    page, other = SharedPage(), SharedPage()
    conn, channel = serving(page, neighbours)
    neighbours.join(other)
    try:
        post_op(other, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        post_op(page, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == 1  # its op, then no window: the other's op waits
        assert conn.linger.yields == 1 and conn.linger.misses == 0
        assert conn.linger.window() == 0
        for _ in range(YIELD_OFF_WAKEUPS - 1):
            conn.linger.woke()
        assert conn.linger.window() == 0
        conn.linger.woke()
        assert conn.linger.window() > 0  # lingering is tried again
    finally:
        channel.close()


def test_an_op_posted_by_another_guest_while_lingering_ends_the_window() -> None:
    """The other guest's op comes while the thread looks at its own page: the thread leaves at
    its next clock read, well before its window (2 ms of looks) would end."""
    neighbours = Neighbours()
    page, other = SharedPage(), SharedPage()
    conn, channel = serving(page, neighbours)
    neighbours.join(other)
    conn.linger = Linger(60_000_000_000)  # a window nothing but a yield ends in a test's time
    looks = 0
    load = page.load_flags

    def look() -> int:
        nonlocal looks
        looks += 1
        if looks == 1000:
            post_op(other, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        return load()

    page.load_flags = look
    try:
        post_op(page, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        done = threading.Event()
        served: list[int] = []

        def serve() -> None:
            served.append(conn.process_pending())
            done.set()

        worker = threading.Thread(target=serve, daemon=True)
        worker.start()
        assert done.wait(10), "the window did not end for the other guest's op"
        assert served == [1] and conn.linger.yields == 1 and conn.linger.misses == 0
        assert 1000 <= looks <= 1000 + 64
        assert not page.test_bit(Flag.PCIF_ACTIVE)
    finally:
        conn._stopping = True  # a thread still looking (the test failed) stops at once
        channel.close()


def test_a_lone_guest_lingers_as_before() -> None:
    neighbours = Neighbours()
    page = SharedPage()
    conn, channel = serving(page, neighbours)
    conn.linger = Linger(100_000)
    try:
        post_op(page, cmd=int(Cmd.CONF_READ), offset=0, size=4)
        assert conn.process_pending() == 1
        assert conn.linger.yields == 0 and conn.linger.misses == 1  # it looked, found nothing
    finally:
        channel.close()


def test_the_data_path_makes_every_guest_a_neighbour_of_the_others() -> None:
    from pciback.sim import SimHost

    from .simconfig import FIXTURES

    with SimHost() as host:
        host.add_device("0000:03:00.0", f"{FIXTURES}/virtio-net-1af4-1041.bin")
        host.add_device("0000:04:00.0", f"{FIXTURES}/virtio-net-1af4-1041.bin")
        first = host.attach(1, ["0000:03:00.0"])
        second = host.attach(2, ["0000:04:00.0"])
        shared = first.backend.neighbours
        assert shared is second.backend.neighbours and len(shared) == 2
        host.destroy_guest(2)
        assert len(shared) == 1


def test_another_guests_page_is_only_peeked_at() -> None:
    """The op path's load may let the interpreter go (a C call); a neighbour's page could be
    unmapped meanwhile, so neighbours read it with the plain peek only."""
    neighbours = Neighbours()
    mine, other = SharedPage(), SharedPage()
    neighbours.join(mine)
    neighbours.join(other)

    def forbidden() -> int:
        raise AssertionError("a neighbour's page read through its op-path load")

    other.load_flags = forbidden
    post_op(other, cmd=int(Cmd.CONF_READ), offset=0, size=4)
    assert neighbours.waiting_besides(mine)
