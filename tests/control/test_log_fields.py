"""JSON log lines carry the guest (domid, devid) and the physical device they are about as
fields of their own, taken from the call's arguments or named by it, never from text a guest
could have put in the message."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pciback.daemon.logs import JsonFormatter
from pciback.sim import SimHost
from pciback.sim.fixtures import fixture

from .harness import DEVICES, NET

log = logging.getLogger("pciback.test.fields")


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        log.removeHandler(handler)


def last(stream: io.StringIO) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(stream.getvalue().splitlines()[-1])
    return entry


def fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("domid", "devid", "device") if k in entry}


@pytest.mark.parametrize(
    ("fmt", "args", "expected"),
    [
        ("dom%d/%d backend -> %s", (3, 0, "CONNECTED"), {"domid": 3, "devid": 0}),
        (
            "dom%d: exported %s as %s (%s)",
            (5, NET, "0000:00:01.0", "vpci"),
            {"domid": 5, "device": NET},
        ),
        ("%s released by domain %d", (NET, 12), {"domid": 12, "device": NET}),
        ("returned %s to %s", (NET, "virtio-pci"), {"device": NET}),
        ("state database: quirk %.64r dropped: %s", (NET, "bad"), {"device": NET}),
        ("100%% of %d devices", (4,), {}),  # an integer that is no domid
        ("domain %d", (0x7FF0,), {}),  # DOMID_FIRST_RESERVED and above are not guests
        ("control socket at %s", ("/run/x.sock",), {}),
    ],
)
def test_fields_from_the_arguments(
    lines: io.StringIO, fmt: str, args: tuple[object, ...], expected: dict[str, Any]
) -> None:
    log.info(fmt, *args)
    entry = last(lines)
    assert entry["msg"] == fmt % args
    assert fields(entry) == expected


def test_guest_text_cannot_pose_as_another_guest(lines: io.StringIO) -> None:
    # What a hostile frontend wrote ends up inside one argument: it is not a field.
    log.error("dom%d/%d: %s", 3, 0, "reading dom7 0000:09:00.0: bad")
    assert fields(last(lines)) == {"domid": 3, "devid": 0}
    log.error("frontend said %s", "0000:09:00.0 dom7")
    assert fields(last(lines)) == {}


def test_fields_named_by_the_call_win(lines: io.StringIO) -> None:
    log.info("%s: MSI enabled", "0000:00:01.0", extra={"domid": 2, "device": NET})
    assert fields(last(lines)) == {"domid": 2, "device": NET}


def test_a_guests_interrupt_ops_are_logged_with_its_domid_and_the_physical_device(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = SimHost()
    try:
        host.add_device(NET, fixture(DEVICES[NET]))
        guest = host.attach(4, [NET], mode="vpci")
        [address] = guest.devices
        assert address != NET  # the guest's address differs: the field must not take it
        with caplog.at_level(logging.INFO, logger="pciback"):
            guest.enable_msix(address, 2)
        formatter = JsonFormatter()
        entries = [json.loads(formatter.format(r)) for r in caplog.records]
        enabled = [e for e in entries if "MSI-X enabled" in e["msg"]]
        assert enabled and all(fields(e) == {"domid": 4, "device": NET} for e in enabled)
        assert enabled[0]["msg"].startswith(address)
    finally:
        host.close()
