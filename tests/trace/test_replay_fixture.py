"""A trace recorded from a simulated guest's enumeration of a QEMU device replays with no
difference under the policy it was recorded with, and shows exactly what a changed policy
changes: answers against the recording, physical writes between two policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pciback.audit.policies import load_policy_and_modules
from pciback.cli import main
from pciback.generated.names import COMMON_HEADER
from pciback.protocol.abi import Cmd
from pciback.sim.replay import PolicyUnder, choose_device, replay
from pciback.trace.format import read_trace
from pciback.trace.identity import identity, installed_identity

from .support import (
    COMMAND,
    DEVICE,
    DUMP,
    REPO,
    SERR,
    bus_master_rw,
    have_fixture,
    new_host,
    reads_seeing_serr,
    record_enumeration,
    serr_hidden,
)

VENDOR_ID = COMMON_HEADER.VENDOR_ID

pytestmark = pytest.mark.skipif(not have_fixture(), reason="../shared/fixtures/qemu is absent")


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with new_host() as host:
        text, done = record_enumeration(host)
    assert done.reason == "stopped" and done.error is None
    path = tmp_path_factory.mktemp("trace") / "enumeration.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def under(tree: Path) -> PolicyUnder:
    policy, modules = load_policy_and_modules(tree)
    return PolicyUnder(str(tree), policy, identity(modules))


def test_the_trace_holds_the_enumeration(trace_file: Path) -> None:
    trace = read_trace(trace_file)
    assert trace.header.from_connect and trace.header.device == DEVICE
    assert trace.header.policy == installed_identity()
    assert trace.end is not None and trace.end.ops == len(trace.ops)
    assert list(trace.devices) == [DEVICE]
    cmds = {op.cmd for op in trace.ops}
    assert cmds == {Cmd.CONF_READ, Cmd.CONF_WRITE}
    # lspci alone reads the 4 KiB space a dword at a time.
    assert len(trace.ops) > 1024
    # Each write keeps what the guest wrote; each op what it was answered.
    writes = [op for op in trace.ops if op.cmd == Cmd.CONF_WRITE]
    assert {(op.offset, op.size) for op in writes} >= {(COMMAND, 2), (0x10, 4)}
    assert all(op.written is not None and op.value == op.written for op in writes)
    # The first op is pcifront's probe of the IDs, answered with the dump's.
    first = trace.ops[0]
    assert (first.cmd, first.offset, first.size) == (Cmd.CONF_READ, 0, 4)
    assert first.value == int.from_bytes(DUMP.read_bytes()[0:4], "little")


def test_same_policy_no_difference(trace_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The installed tables, and dsl/ compiled on the fly: the same policy, the same identity.
    assert main(["trace", "replay", str(trace_file), "--dump", str(DUMP)]) == 0
    out = capsys.readouterr().out.splitlines()
    count = len(read_trace(trace_file).ops)
    assert out[-1] == f"no difference in {count} ops"
    assert (
        main(
            ["trace", "replay", str(trace_file), "--dump", str(DUMP), "--policy", str(REPO / "dsl")]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert any(line.endswith("(the recorded one)") for line in out)
    assert out[-1] == f"no difference in {count} ops"


def test_a_changed_field_shows_in_every_answer_it_touches(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = read_trace(trace_file)
    result = replay(
        trace, choose_device(trace, None), DUMP.read_bytes(), [under(serr_hidden(tmp_path))]
    )
    found = result.differences()
    # Exactly the reads covering the command register's SERR# bit that the recording saw set:
    # each now answers it clear, and nothing else of the answer changed.
    expected = reads_seeing_serr(trace.ops)
    assert expected
    assert [d.op for d in found] == expected
    for d in found:
        assert d.op.value is not None and d.op.offset is not None
        assert d.served[0].value == d.op.value & ~(SERR << (8 * (COMMAND - d.op.offset)))
        assert d.served[0].err == d.op.err == 0
    argv = [
        "trace",
        "replay",
        str(trace_file),
        "--dump",
        str(DUMP),
        "--policy",
        str(tmp_path / "serr"),
    ]
    assert main(argv) == 1
    out = capsys.readouterr().out.splitlines()
    assert (
        out[-1]
        == f"{len(found)} of {len(trace.ops)} ops differ: A answers {len(found)} differently"
    )
    first = found[0].op
    at = out.index(f"#{first.seq} conf_read {first.offset:#05x}/{first.size}")
    assert out[at + 1].split() == [
        "recorded",
        "success",
        f"0x{first.value:0{2 * (first.size or 0)}x}",
    ]
    assert out[at + 2].split()[:2] == ["A", "*"]


def test_two_policies_show_their_physical_writes(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = read_trace(trace_file)
    changed = bus_master_rw(tmp_path)
    result = replay(
        trace, choose_device(trace, None), DUMP.read_bytes(), [under(REPO / "dsl"), under(changed)]
    )
    found = result.differences()
    # Bus mastering written through changes nothing the guest reads back (the hook already
    # sets the device's bit); it changes what reaches the device on every command write.
    command_writes = [
        op for op in trace.ops if op.cmd == Cmd.CONF_WRITE and (op.offset, op.size) == (COMMAND, 2)
    ]
    assert [d.op for d in found] == command_writes
    for d in found:
        assert d.answer_differs == (False, False) and d.writes_differ
        old, new = d.served
        assert any(offset == COMMAND for offset, _, _ in new.writes)
        assert len(new.writes) > len(old.writes)
    argv = [
        "trace",
        "replay",
        str(trace_file),
        "--dump",
        str(DUMP),
        "--policy",
        str(REPO / "dsl"),
        "--policy",
        str(changed),
    ]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert f"physical writes differ in {len(found)}" in out
    assert "writes 0x004/1=" in out


def test_the_whole_domain_without_a_device_filter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with new_host() as host:
        text, _ = record_enumeration(host, device=None)
    path = tmp_path / "domain.jsonl"
    path.write_text(text, encoding="utf-8")
    trace = read_trace(path)
    assert trace.header.device is None
    # pcifront probed every devfn of the bus: those ops reached no device and are kept so.
    nowhere = [op for op in trace.ops if op.device is None]
    assert len(nowhere) >= 255 and all(op.err == -1 for op in nowhere)
    assert main(["trace", "replay", str(path), "--dump", str(DUMP)]) == 0
    out = capsys.readouterr().out
    assert f"{len(nowhere)} ops of other devices or of none not replayed" in out


def test_a_recording_started_under_a_running_guest_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with new_host() as host:
        host.attach(1, [DEVICE])
        send = {"op": "trace_start", "domid": 1, "device": DEVICE}
        started = host.daemon.handle(send)
        assert started["header"]["from_connect"] is False
        guest = host.guest(1)
        guest.conf_read(guest.devices[0], VENDOR_ID.offset, 4)
        host.daemon.handle({"op": "trace_stop", "domid": 1, "id": started["id"]})
        batch = host.daemon.handle({"op": "trace_read", "domid": 1, "id": started["id"]})
    assert batch["ended"] == "stopped" and len(batch["ops"]) == 1
    path = tmp_path / "late.jsonl"
    lines = [
        started["header"],
        *batch["devices"],
        *batch["ops"],
        {"type": "end", "ops": 1, "reason": "stopped"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert main(["trace", "replay", str(path), "--dump", str(DUMP)]) == 0
    assert "note: recorded from a guest already connected" in capsys.readouterr().out


def test_the_device_line_keeps_what_a_dump_lacks(tmp_path: Path) -> None:
    """The interrupt line a guest reads is dom0's IRQ, and a sizing write's answer the host's
    BAR size: neither is in a config dump. The trace keeps both, and the replay answers with
    them; a trace without them (written before they were kept) differs where they matter."""
    with new_host() as host:
        physical = host.physical(DEVICE)
        physical.irq = 23  # dom0 routed INTx elsewhere than the firmware's byte says
        sizes = {bar.index: bar.size for bar in physical.bars() if bar.size}
        text, done = record_enumeration(host)
    assert done.reason == "stopped"
    path = tmp_path / "irq.jsonl"
    path.write_text(text, encoding="utf-8")
    info = read_trace(path).devices[DEVICE]
    assert info.host_irq == 23 and dict(info.bar_sizes) == sizes and sizes
    assert DUMP.read_bytes()[0x3C] != 23
    assert main(["trace", "replay", str(path), "--dump", str(DUMP)]) == 0
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        if line["type"] == "device":
            del line["host_irq"], line["bar_sizes"]
    older = tmp_path / "older.jsonl"
    older.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert read_trace(older).devices[DEVICE].host_irq is None
    assert main(["trace", "replay", str(older), "--dump", str(DUMP)]) == 1
