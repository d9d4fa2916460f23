"""The daemon's side of a recording: bounded, only while it runs (the connection's handler is
given back), one per domain, ended by the guest's disconnection or a recorder gone quiet; and
`pciback trace record` over the control socket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pciback.cli import main
from pciback.control.hide import parse_quirk
from pciback.control.stub import MAX_QUIRKS_PER_DEVICE
from pciback.daemon.control import MAX_MESSAGE, ControlError, ControlServer
from pciback.errors import XenPciError
from pciback.generated.names import COMMON_HEADER
from pciback.protocol.ops import OpRequest, OpResult
from pciback.sim import SimHost
from pciback.sim.fixtures import fixture
from pciback.trace.format import MAX_LINE, read_trace
from pciback.trace.recording import Recording

VENDOR_ID = COMMON_HEADER.VENDOR_ID


NET = "0000:03:00.0"
RNG = "0000:04:00.0"


@pytest.fixture
def host() -> Iterator[SimHost]:
    h = SimHost(op_timeout=5.0)
    h.add_device(NET, fixture("virtio-net-1af4-1041.bin"))
    h.add_device(RNG, fixture("virtio-rng-1af4-1044.bin"))
    yield h
    h.close()


def ask(host: SimHost, op: str, **fields: Any) -> Any:
    return host.daemon.handle({"op": op, **fields})


def reads(host: SimHost, domid: int, count: int, device: int = 0) -> None:
    guest = host.guest(domid)
    for i in range(count):
        guest.conf_read(guest.devices[device], (4 * i) % 0x40, 4)


def test_the_handler_is_wrapped_only_while_recording(host: SimHost) -> None:
    guest = host.attach(1, [NET])
    plain = guest.backend.handler
    started = ask(host, "trace_start", domid=1)
    assert guest.backend.handler is not plain
    reads(host, 1, 3)
    ask(host, "trace_stop", domid=1, id=started["id"])
    assert guest.backend.handler is plain  # the op path is as it was
    reads(host, 1, 3)  # not recorded
    batch = ask(host, "trace_read", domid=1, id=started["id"])
    assert batch["ended"] == "stopped" and len(batch["ops"]) == 3
    assert [op["seq"] for op in batch["ops"]] == [0, 1, 2]
    # Taken whole, the recording is gone; the next one may start.
    with pytest.raises(ValueError, match="no recording"):
        ask(host, "trace_read", domid=1, id=started["id"])
    again = ask(host, "trace_start", domid=1)
    assert again["id"] != started["id"]


def test_a_recording_stops_at_its_bound(host: SimHost) -> None:
    guest = host.attach(1, [NET])
    plain = guest.backend.handler
    started = ask(host, "trace_start", domid=1, max_ops=10)
    reads(host, 1, 25)
    # The tenth op ended it and gave the handler back, on the service thread, by itself.
    assert guest.backend.handler is plain
    batch = ask(host, "trace_read", domid=1, id=started["id"])
    assert batch["ended"] == "limit" and batch["count"] == 10
    assert [op["offset"] for op in batch["ops"]] == [4 * i for i in range(10)]


def test_reads_come_in_bounded_batches(host: SimHost) -> None:
    # A device line with the most quirks a device may have is the longest thing a batch holds.
    ask(host, "new_slot", arg=NET)
    # Stored straight into the pool: `quirk_add` refuses fields the view would ignore, and a
    # 256-byte function has no room for this many that it would not.
    for i in range(MAX_QUIRKS_PER_DEVICE):
        host.daemon.pool.add_quirk(parse_quirk(f"{NET}-{0x100 + 4 * i:x}:4:ffffffff"))
    host.attach(1, [NET])
    started = ask(host, "trace_start", domid=1)
    reads(host, 1, 300)
    ask(host, "trace_stop", domid=1, id=started["id"])
    first = ask(host, "trace_read", domid=1, id=started["id"])
    # The device counts for ten ops: it comes first, with the ops that fill the batch.
    assert [d["device"] for d in first["devices"]] == [NET]
    assert len(first["devices"][0]["quirks"]) == MAX_QUIRKS_PER_DEVICE
    assert len(first["ops"]) == 256 - 10 and first["ended"] is None
    reply = json.dumps({"ok": True, "result": first})
    assert len(reply) < MAX_MESSAGE
    assert max(len(json.dumps(x)) for x in first["devices"] + first["ops"]) < MAX_LINE
    second = ask(host, "trace_read", domid=1, id=started["id"])
    assert len(second["ops"]) == 54 and second["ended"] == "stopped"
    assert second["devices"] == [] and second["ops"][-1]["seq"] == 299


def test_only_the_named_device(host: SimHost) -> None:
    guest = host.attach(1, [NET, RNG])
    physical = {guest.exported(NET).guest_address: NET, guest.exported(RNG).guest_address: RNG}
    started = ask(host, "trace_start", domid=1, device=RNG)
    reads(host, 1, 4, device=0)
    reads(host, 1, 4, device=1)
    ask(host, "trace_stop", domid=1, id=started["id"])
    batch = ask(host, "trace_read", domid=1, id=started["id"])
    assert {op["device"] for op in batch["ops"]} == {RNG}
    assert len(batch["ops"]) == 4
    assert [(d["device"], physical[d["guest"]]) for d in batch["devices"]] == [(RNG, RNG)]


def test_one_recording_a_domain_and_checked_requests(host: SimHost) -> None:
    host.attach(1, [NET])
    started = ask(host, "trace_start", domid=1)
    with pytest.raises(ValueError, match="being recorded already"):
        ask(host, "trace_start", domid=1)
    for bad in (
        {"domid": 0},
        {"domid": "1"},
        {"domid": 1 << 40},
        {"domid": 2, "max_ops": 0},
        {"domid": 2, "max_ops": 10**9},
        {"domid": 2, "device": "03:00"},
        {"domid": 2, "device": ["x"]},
    ):
        with pytest.raises(ControlError):
            ask(host, "trace_start", **bad)
    with pytest.raises(ControlError, match="id must be"):
        ask(host, "trace_read", domid=1)
    with pytest.raises(ValueError, match="no recording 99"):
        ask(host, "trace_read", domid=1, id=99)
    ask(host, "trace_stop", domid=1, id=started["id"])


def test_the_guest_going_ends_it(host: SimHost) -> None:
    host.attach(1, [NET])
    started = ask(host, "trace_start", domid=1)
    reads(host, 1, 2)
    host.destroy_guest(1)
    batch = ask(host, "trace_read", domid=1, id=started["id"])
    assert batch["ended"] == "disconnected" and len(batch["ops"]) == 2


def request(cmd: int = 0) -> OpRequest:
    return OpRequest(cmd, 0, 0, 0, 0, 4, 0, 0, b"")


def test_a_recorder_gone_quiet_loses_it() -> None:
    now = [0.0]
    recording = Recording(1, 1, None, 100, "0" * 64, True, lease_s=30.0, clock=lambda: now[0])
    undone: list[bool] = []
    assert recording.on_end(lambda: undone.append(True))
    answer = OpResult(XenPciError.SUCCESS, 7)
    recording.add(request(), answer, NET)
    now[0] = 31.0
    recording.add(request(), answer, NET)  # the lease ran out: nothing more is kept
    assert recording.ended == "expired" and undone == [True]
    batch = recording.take()
    assert batch.ops == [] and batch.ended == "expired"


def test_record_over_the_control_socket(host: SimHost, tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    server = ControlServer(sock, host.daemon.handle)
    server.start()
    out = tmp_path / "trace.jsonl"
    status: list[int] = []
    argv = ["trace", "record", "1", "-o", str(out), "--max-ops", "20", "--seconds", "10"]
    argv += ["--socket", str(sock)]
    cli = threading.Thread(target=lambda: status.append(main(argv)))
    try:
        cli.start()
        host.attach(1, [NET])  # the recording is armed or not yet: either way it sees these
        guest = host.guest(1)
        for _ in range(200):
            if status:
                break
            guest.conf_read(guest.devices[0], VENDOR_ID.offset, 4)
        cli.join(10)
    finally:
        server.stop()
    assert status == [0]
    trace = read_trace(out)
    assert trace.end is not None and trace.end.reason == "limit"
    assert len(trace.ops) == 20 and trace.header.max_ops == 20


def test_record_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trace.jsonl"
    argv = ["trace", "record", "1", "-o", str(out), "--socket", str(tmp_path / "none.sock")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("pciback trace record: cannot reach the daemon at ") and err.count("\n") == 1
    )
    assert not out.exists()
    assert main([*argv, "--device", "zz"]) == 2
    assert capsys.readouterr().err.startswith("pciback trace record: --device: ")
    assert main([*argv, "--max-ops", "0"]) == 2
    assert "--max-ops must be" in capsys.readouterr().err
    assert main(["trace", "record", "1", "-o", str(tmp_path / "no" / "dir.jsonl")]) == 2
    assert "cannot write" in capsys.readouterr().err
