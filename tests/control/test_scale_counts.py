"""What the daemon does for one guest does not grow with the number of guests: counted in
xenstore operations, not timed (bench/bench_scale.py prints the times)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pciback.generated.names import COMMON_HEADER
from pciback.sim import SimHost
from pciback.sim.fixtures import fixture

VENDOR_ID = COMMON_HEADER.VENDOR_ID

NET = fixture("virtio-net-1af4-1041.bin")
MANY = 40


def address(index: int) -> str:
    return f"0000:{0x10 + index // 32:02x}:{index % 32:02x}.0"


@contextmanager
def counting(host: SimHost, monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """The daemon's own xenstore calls, by operation, while the block runs."""
    calls: Counter[str] = Counter()
    store = host.daemon.xs
    with monkeypatch.context() as patch:
        for name in ("read", "list", "write", "rm"):
            real: Callable[..., Any] = getattr(store, name)

            def counted(*args: Any, _real: Callable[..., Any] = real, _name: str = name) -> Any:
                calls[_name] += 1
                return _real(*args)

            patch.setattr(store, name, counted)
        yield calls


def test_attaching_and_destroying_a_guest_costs_the_same_with_many_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with SimHost() as host:
        for i in range(MANY + 2):
            host.add_device(address(i), NET)
        host.attach(1, [address(MANY + 1)])  # the first guest ever: scans at start excluded
        with counting(host, monkeypatch) as first_attach:
            host.attach(2, [address(0)])
        with counting(host, monkeypatch) as first_destroy:
            host.destroy_guest(2)
        for i in range(MANY):
            host.attach(10 + i, [address(i)])
        with counting(host, monkeypatch) as late_attach:
            guest = host.attach(500, [address(MANY)])
        assert guest.conf_read(guest.devices[0], VENDOR_ID.offset, 4) == 0x10411AF4
        with counting(host, monkeypatch) as late_destroy:
            host.destroy_guest(500)
        assert first_attach["list"] >= 1  # counted at all
        assert late_attach == first_attach
        assert late_destroy == first_destroy
        # and the guests still running were not disturbed
        other = host.guest(10)
        assert other.conf_read(other.devices[0], VENDOR_ID.offset, 4) == 0x10411AF4
