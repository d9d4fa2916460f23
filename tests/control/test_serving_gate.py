"""The gate between a guest's ops and the rare changes other threads make to its devices: no op
overlaps a change, an op that meets a change waits for it, and a change waits for the op under
way; all without a lock taken per op."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pciback.daemon.serving_gate import ServingGate
from pciback.generated.names import COMMON_HEADER
from pciback.sim import SimHost
from pciback.sim.fixtures import fixture

VENDOR_ID = COMMON_HEADER.VENDOR_ID


def op(gate: ServingGate, body: Callable[[], object]) -> None:
    """The op side, as the data path runs each op."""
    gate.serve(lambda _: body(), None)


def test_ops_and_changes_from_two_threads_never_overlap() -> None:
    gate = ServingGate()
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    stop = threading.Event()

    def enter(who: str) -> None:
        inside.append(who)
        if len(inside) > 1:
            overlaps.append(tuple(inside))
        time.sleep(0)  # let the other thread run while this one is inside
        inside.remove(who)

    def changes() -> None:
        while not stop.is_set():
            with gate:
                enter("change")

    changer = threading.Thread(target=changes)
    changer.start()
    try:
        for _ in range(3000):
            op(gate, lambda: enter("op"))
    finally:
        stop.set()
        changer.join()
    assert overlaps == []
    assert not gate.held and not gate.op


def test_a_change_waits_for_the_op_under_way() -> None:
    gate = ServingGate()
    in_op, release, changed = threading.Event(), threading.Event(), threading.Event()

    def slow_op() -> None:
        in_op.set()
        release.wait(5)

    server = threading.Thread(target=op, args=(gate, slow_op))
    server.start()
    assert in_op.wait(5)

    def change() -> None:
        with gate:
            changed.set()

    changer = threading.Thread(target=change)
    changer.start()
    assert not changed.wait(0.05)  # the op is still inside
    release.set()
    assert changed.wait(5)
    server.join()
    changer.join()


def test_an_op_that_meets_a_change_waits_for_it() -> None:
    gate = ServingGate()
    served = threading.Event()
    with gate:
        server = threading.Thread(target=op, args=(gate, served.set))
        server.start()
        assert not served.wait(0.05)  # held back by the change
    assert served.wait(5)
    server.join()
    assert not gate.held and not gate.op


def test_the_data_path_holds_a_guests_op_while_its_devices_change() -> None:
    address = "0000:03:00.0"
    with SimHost(op_timeout=5.0) as host:
        host.add_device(address, fixture("virtio-net-1af4-1041.bin"))
        guest = host.attach(1, [address])
        expected = guest.conf_read(address, VENDOR_ID.offset, 4)
        devices = guest.backend.devices
        answers: list[int] = []
        reader = threading.Thread(
            target=lambda: answers.append(guest.conf_read(address, VENDOR_ID.offset, 4))
        )
        with devices.serving:  # type: ignore[attr-defined]  # the daemon's DeviceLookup
            reader.start()
            reader.join(0.1)
            assert reader.is_alive() and answers == []  # posted, not served
        reader.join(5)
        assert answers == [expected]
