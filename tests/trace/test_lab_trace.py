"""A trace recorded in the real-Xen lab (lab run 40: Xen 4.17, a Linux PV guest's pcifront
enumerating QEMU's e1000e at 0000:00:03.0 and reading it with lspci -xxxx, through the
daemon), replayed on the config dump dom0 took of the same function a moment later.

Under the installed tables every answer is the one the real guest got: a policy change that
alters what that guest saw shows up here, op by op, and is either a bug or a change to
re-record in the lab (lab/README.md) once reviewed. Under a changed policy, exactly the ops
the change touches differ."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from pciback.cli import main
from pciback.protocol.abi import Cmd
from pciback.trace.format import read_trace

from .support import COMMAND, reads_seeing_serr, serr_hidden

LAB = Path(__file__).resolve().parents[1] / "fixtures" / "lab"
DEVICE = "0000:00:03.0"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("lab")
    trace, dump = where / "trace.jsonl", where / "dump.txt"
    trace.write_bytes(gzip.decompress((LAB / "e1000e-boot-trace.jsonl.gz").read_bytes()))
    dump.write_bytes(gzip.decompress((LAB / "e1000e-dom0-lspci.txt.gz").read_bytes()))
    return trace, dump


def test_the_lab_trace_is_a_real_guests_boot(files: tuple[Path, Path]) -> None:
    trace = read_trace(files[0])
    assert trace.header.from_connect and trace.header.device == DEVICE
    info = trace.devices[DEVICE]
    # What dom0 had and the dump lacks: the routed IRQ and the BARs' sizes.
    assert info.host_irq == 23 and dict(info.bar_sizes)[0] == 128 * 1024
    assert trace.end is not None and trace.end.reason == "stopped"
    writes = [op for op in trace.ops if op.cmd == Cmd.CONF_WRITE]
    assert {op.offset for op in writes} >= {COMMAND, 0x10, 0x14, 0x18, 0x1C, 0x30}  # sizing
    assert len(trace.ops) > 1024  # lspci -xxxx alone reads the 4 KiB a dword at a time


def test_it_replays_with_no_difference_under_the_installed_tables(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    trace, dump = files
    assert main(["trace", "replay", str(trace), "--dump", str(dump)]) == 0
    count = len(read_trace(trace).ops)
    assert capsys.readouterr().out.splitlines()[-1] == f"no difference in {count} ops"


def test_a_changed_policy_shows_where_the_real_guest_would_have_seen_it(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, dump = files
    ops = read_trace(trace).ops
    # SERR# enable reserved instead of kept: every read of the command register that the
    # real guest saw with the bit set (the host's 0x103) would now answer it clear.
    touched = reads_seeing_serr(ops)
    assert touched
    argv = ["trace", "replay", str(trace), "--dump", str(dump), "--policy"]
    assert main([*argv, str(serr_hidden(tmp_path))]) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"{len(touched)} of {len(ops)} ops differ: A answers {len(touched)} differently"
