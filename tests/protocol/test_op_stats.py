"""The per-connection op counters: what each op adds, where its time starts, and how the daemon
shows them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pciback.cli.control import _op_summary
from pciback.errors import XenPciError
from pciback.generated.names import COMMON_HEADER
from pciback.protocol import connection as connection_module
from pciback.protocol.abi import Cmd, Flag
from pciback.protocol.connection import TIME_EVERY, BackendConnection
from pciback.protocol.ops import OpResult
from pciback.protocol.opstats import BUCKETS, OpStats, percentile_ceiling
from pciback.protocol.transport import EventChannel, SharedPage
from pciback.sim import SimHost

from .simconfig import nic_config, post_op

VENDOR_ID = COMMON_HEADER.VENDOR_ID

ADDR = "0000:03:00.0"


def test_each_op_lands_in_its_log2_microsecond_bucket() -> None:
    stats = OpStats()
    for ns in (0, 999, 1_000, 1_999, 2_000, 3_999, 4_000, 1_500_000, 10**12):
        stats.record(ns)
    shown = stats.as_dict()
    assert shown["ops"] == shown["timed_ops"] == 9 and shown["service_ns_total"] == sum(
        (0, 999, 1_000, 1_999, 2_000, 3_999, 4_000, 1_500_000, 10**12)
    )
    assert shown["service_us_max"] == 10**9
    assert shown["histogram"] == [
        {"from_us": 0, "below_us": 1, "ops": 2},
        {"from_us": 1, "below_us": 2, "ops": 2},
        {"from_us": 2, "below_us": 4, "ops": 2},
        {"from_us": 4, "below_us": 8, "ops": 1},
        {"from_us": 1024, "below_us": 2048, "ops": 1},
        {"from_us": 1 << (BUCKETS - 2), "below_us": None, "ops": 1},  # the open last bucket
    ]
    assert percentile_ceiling(shown, 0.5) == 4
    assert percentile_ceiling(shown, 0.85) == 2048
    assert percentile_ceiling(shown, 0.99) is None
    assert OpStats().as_dict()["service_us_mean"] is None


def test_the_summary_line_names_count_mean_and_bounds() -> None:
    stats = OpStats()
    for ns in [3_000] * 99 + [40_000]:
        stats.record(ns)
    stats.wakeups = 100
    stats.busy_ns = 500_000
    assert _op_summary(stats.as_dict()) == (
        "ops 100 (100 wake-ups), in the daemon (100 timed): mean 3.4 us, p50 < 4 us,"
        " p99 < 4 us, max 40.0 us; thread busy 5.0 us per op"
    )
    assert _op_summary(OpStats().as_dict()) == "ops 0 (0 wake-ups)"
    untimed = OpStats()
    untimed.ops, untimed.wakeups, untimed.busy_ns = 2, 1, 4_000
    assert _op_summary(untimed.as_dict()) == (
        "ops 2 (1 wake-ups), none timed yet; thread busy 2.0 us per op"
    )


class EagerGuest(SharedPage):
    """A page whose guest posts its next op as soon as it sees the answer to the first."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = 0

    def clear_bit(self, bit: Flag) -> bool:
        was = super().clear_bit(bit)
        self.answers += 1
        if self.answers == 1:
            post_op(self, cmd=Cmd.CONF_READ)
        return was


class Rig:
    def __init__(self) -> None:
        self.page = EagerGuest()
        self.channel = EventChannel()
        answer = OpResult(XenPciError.SUCCESS, 0)
        no_devices: Any = None  # the handler answers every op itself
        self.conn = BackendConnection(
            1, self.page, self.channel.backend, no_devices, lambda req: answer, time_every=1
        )


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.channel.close()


def test_service_time_starts_at_the_wake_up_and_runs_on_between_ops(rig: Rig) -> None:
    post_op(rig.page, cmd=Cmd.CONF_READ)
    woke = time.perf_counter_ns() - 5_000_000  # the wait returned 5 ms ago
    assert rig.conn.process_pending(woke) == 2
    elapsed = time.perf_counter_ns() - woke
    stats = rig.conn.stats
    assert (stats.ops, stats.wakeups) == (2, 1)
    # The first op is charged from the wake-up; the second from when it was found, after the
    # first, so the two add up to no more than the wake-up's whole time (each from the
    # wake-up would not).
    assert 5_000_000 <= stats.service_ns <= elapsed
    assert stats.max_ns >= 5_000_000
    assert rig.conn.ops_served == 2


def test_one_op_in_time_every_is_timed_and_every_op_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    page, channel = SharedPage(), EventChannel()
    answer = OpResult(XenPciError.SUCCESS, 0)
    no_devices: Any = None
    conn = BackendConnection(1, page, channel.backend, no_devices, lambda req: answer)
    try:
        clock_reads = 0

        def counting_clock() -> int:
            nonlocal clock_reads
            clock_reads += 1
            return time.perf_counter_ns()

        monkeypatch.setattr(connection_module, "perf_counter_ns", counting_clock)
        for _ in range(4 * TIME_EVERY):
            post_op(page, cmd=Cmd.CONF_READ)
            conn.serve_one()
        shown = conn.stats.as_dict()
        assert (shown["ops"], shown["timed_ops"]) == (4 * TIME_EVERY, 4)
        assert sum(bucket["ops"] for bucket in shown["histogram"]) == 4
        assert clock_reads == 3 * 4  # a timed op reads the clock three times, others never
    finally:
        channel.close()
    with pytest.raises(ValueError, match="power of two"):
        BackendConnection(1, page, channel.backend, no_devices, lambda req: answer, time_every=3)


def test_a_wake_up_without_an_op_counts_no_op(rig: Rig) -> None:
    assert rig.conn.process_pending() == 0
    assert (rig.conn.stats.ops, rig.conn.stats.wakeups) == (0, 1)


def test_the_wait_stamps_its_wake_up(rig: Rig) -> None:
    before = time.perf_counter_ns()
    rig.channel.frontend.notify()
    assert rig.channel.backend.wait(1.0)
    assert before <= rig.channel.backend.woke_ns <= time.perf_counter_ns()


def test_busy_time_runs_from_each_wake_up_to_the_next_sleep(rig: Rig) -> None:
    port = rig.channel.backend
    port.slept_ns, port.woke_ns = 1_000, 2_000
    rig.conn._account_busy(port)  # the first wake-up: nothing before it to account
    assert rig.conn.stats.busy_ns == 0
    port.slept_ns, port.woke_ns = 9_000, 50_000
    rig.conn._account_busy(port)
    assert rig.conn.stats.busy_ns == 7_000  # woke at 2 µs, asleep again at 9 µs
    port.slept_ns, port.woke_ns = 53_000, 60_000
    rig.conn._account_busy(port)
    assert rig.conn.stats.as_dict()["busy_ns_total"] == 10_000


def test_a_served_guest_shows_busy_time(host: SimHost) -> None:
    host.add_device(ADDR, nic_config(), bar_sizes={0: 0x4000})
    guest = host.attach(1, [ADDR])
    for _ in range(3):
        # each wake-up but the last is accounted by the next wait
        guest.conf_read(ADDR, VENDOR_ID.offset, 4)
    assert host.daemon.status()["guests"][0]["ops"]["busy_ns_total"] > 0


def test_the_daemon_lists_each_guests_op_counters(host: SimHost) -> None:
    host.add_device(ADDR, nic_config(), bar_sizes={0: 0x4000})
    guest = host.attach(1, [ADDR])
    before = host.daemon.status()["guests"][0]["ops"]["ops"]
    for _ in range(3):
        guest.conf_read(ADDR, VENDOR_ID.offset, 4)
    status = json.loads(json.dumps(host.daemon.status()))  # as `pciback list --json` has it
    ops = status["guests"][0]["ops"]
    assert ops["ops"] == before + 3
    assert ops["wakeups"] >= 3
    assert 1 <= ops["timed_ops"] <= ops["ops"]
    assert sum(bucket["ops"] for bucket in ops["histogram"]) == ops["timed_ops"]
    assert ops["service_ns_total"] > 0 and ops["service_us_mean"] > 0
    # The hand-back (active bit and notify) is a part of the service time, timed apart.
    assert 0 < ops["handback_ns_total"] < ops["service_ns_total"]
    assert ops["handback_cpu_ns_total"] > 0
    # The simulated backend does not linger: every answer's event went at once.
    assert ops["answer_events"] == {"dropped": 0, "late": 0, "offs": 0}


def test_the_hand_back_is_summed_apart_from_the_service_time() -> None:
    stats = OpStats()
    stats.record(5_000, 2_000, 1_200)
    stats.record(7_000, 1_500, 1_500)
    stats.record(1_000)  # an op timed without its hand-back apart counts none
    shown = stats.as_dict()
    assert shown["service_ns_total"] == 13_000 and shown["handback_ns_total"] == 3_500
    assert shown["handback_cpu_ns_total"] == 2_700


def test_the_service_threads_cpu_time_is_listed_and_grows_with_its_ops(host: SimHost) -> None:
    host.add_device(ADDR, nic_config(), bar_sizes={0: 0x4000})
    guest = host.attach(1, [ADDR])
    guest.conf_read(ADDR, VENDOR_ID.offset, 4)
    before = host.daemon.status()["guests"][0]["ops"]["thread_cpu_ns_total"]
    for _ in range(300):
        guest.conf_read(ADDR, VENDOR_ID.offset, 4)
    after = host.daemon.status()["guests"][0]["ops"]["thread_cpu_ns_total"]
    # The service thread's own clock: it ran the 300 ops, the test thread's work is not in it.
    assert isinstance(before, int) and isinstance(after, int) and after > before
