"""A trace file is untrusted input: whatever is wrong with it is one line naming the file and
the line, and the replay exits 2 without a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pciback.cli import main
from pciback.sim.fixtures import fixture
from pciback.trace.format import TraceFileError, read_trace

DEVICE = "0000:03:00.0"
HEADER: dict[str, Any] = {
    "type": "header",
    "format": "pciback-trace",
    "version": 1,
    "domid": 1,
    "device": DEVICE,
    "policy": "0" * 64,
    "started": "2026-12-02T21:00:00Z",
    "max_ops": 100,
    "from_connect": True,
}
DEV: dict[str, Any] = {
    "type": "device",
    "device": DEVICE,
    "guest": "0000:00:00.0",
    "permissive": False,
    "interrupt_control": False,
    "quirks": [],
}
READ: dict[str, Any] = {
    "type": "op",
    "seq": 0,
    "cmd": "conf_read",
    "device": DEVICE,
    "address": "0000:00:00.0",
    "err": 0,
    "offset": 0,
    "size": 4,
    "value": 0x10411AF4,
}


def write(tmp_path: Path, *lines: Any) -> Path:
    path = tmp_path / "t.jsonl"
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), "utf-8"
    )
    return path


BAD = [
    ((), "empty, not a pciback trace"),
    (("not json",), ":1: not a JSON line"),
    (("[1, 2]",), ":1: not a JSON object"),
    ((DEV,), ":1: not a pciback trace: the first line is not its header"),
    (({**HEADER, "format": "other"},), ":1: not a pciback trace (format"),
    (({**HEADER, "version": 2},), ":1: trace format version 2; this pciback reads 1"),
    (({**HEADER, "domid": -1},), ':1: "domid" is not an integer in 0..32751'),
    (({**HEADER, "policy": "x"},), ':1: "policy" is not well formed'),
    ((HEADER, READ), ":2: op on 0000:03:00.0 before its device line"),
    ((HEADER, DEV, {**READ, "seq": 5}), ":3: op number 5 where 0 was due"),
    ((HEADER, DEV, {**READ, "cmd": "reboot"}), ":3: unknown command 'reboot'"),
    ((HEADER, DEV, {**READ, "value": 1 << 32}), ':3: "value" is not an integer in 0..4294967295'),
    ((HEADER, DEV, {**READ, "value": 1.5}), ':3: "value" is not an integer'),
    ((HEADER, DEV, {**READ, "value": True}), ':3: "value" is not an integer'),
    ((HEADER, DEV, {**READ, "err": 7}), ":3: error 7 is no XEN_PCI_ERR_* value"),
    ((HEADER, DEV, {**READ, "address": "00:00.0"}), ':3: "address" is not well formed'),
    ((HEADER, DEV, {k: v for k, v in READ.items() if k != "offset"}), ':3: no "offset"'),
    ((HEADER, DEV, DEV), ":3: device 0000:03:00.0 declared twice"),
    ((HEADER, {**DEV, "quirks": ["rm -rf"]}), ":2: not a quirk"),
    ((HEADER, {**DEV, "host_irq": -1}), ':2: "host_irq" is not an integer in 0..4294967295'),
    ((HEADER, {**DEV, "host_irq": "23"}), ':2: "host_irq" is not an integer'),
    ((HEADER, {**DEV, "bar_sizes": {"0": 4096}}), ':2: "bar_sizes" is not a list'),
    ((HEADER, {**DEV, "bar_sizes": [[0, 1]] * 8}), ':2: "bar_sizes" is not a list'),
    ((HEADER, {**DEV, "bar_sizes": [[7, 4096]]}), ':2: "bar_sizes" holds something else'),
    ((HEADER, {**DEV, "bar_sizes": [[0, -1]]}), ':2: "bar_sizes" holds something else'),
    ((HEADER, {**DEV, "bar_sizes": [[0, 16], [0, 32]]}), ':2: "bar_sizes" holds something'),
    ((HEADER, {**DEV, "bar_sizes": [[0, 16, 1]]}), ':2: "bar_sizes" holds something else'),
    (
        (HEADER, DEV, READ, {"type": "end", "ops": 2, "reason": "stopped"}),
        ":4: the end line counts 2",
    ),
    ((HEADER, {"type": "end", "ops": 0, "reason": "why"}), ':2: "reason" is none of'),
    (
        (HEADER, {"type": "end", "ops": 0, "reason": "stopped"}, DEV),
        ":3: a line after the end line",
    ),
    ((HEADER, {"type": "mystery"}), ":2: unknown line type 'mystery'"),
    ((HEADER, "[" * 100_000), ":2: line longer than"),
    ((HEADER, "[" * 900 + "]" * 90), ":2: not a JSON line"),
]


@pytest.mark.parametrize(("lines", "message"), BAD)
def test_a_bad_trace_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lines: tuple[Any, ...], message: str
) -> None:
    path = write(tmp_path, *lines)
    with pytest.raises(TraceFileError, match="^" + str(path).replace(".", r"\.")):
        read_trace(path)
    assert (
        main(["trace", "replay", str(path), "--dump", str(fixture("virtio-net-1af4-1041.bin"))])
        == 2
    )
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"pciback trace replay: {path}")
    assert message in captured.err and captured.err.count("\n") == 1


def test_not_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dump = str(fixture("virtio-net-1af4-1041.bin"))
    assert main(["trace", "replay", str(tmp_path), "--dump", dump]) == 2
    assert (
        capsys.readouterr().err
        == f"pciback trace replay: {tmp_path}: is a directory, not a trace\n"
    )
    missing = tmp_path / "missing.jsonl"
    assert main(["trace", "replay", str(missing), "--dump", dump]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"pciback trace replay: {missing}: cannot read: ") and err.count("\n") == 1
    )


def test_a_good_trace_with_a_bad_companion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, HEADER, DEV, READ, {"type": "end", "ops": 1, "reason": "stopped"})
    assert read_trace(path).ops[0].value == READ["value"]
    dump = str(fixture("virtio-net-1af4-1041.bin"))
    cases = [
        (["--dump", str(tmp_path / "none.bin")], "none.bin"),
        (["--dump", dump, "--device", "0000:09:00.0"], "the trace holds no op of 0000:09:00.0"),
        (["--dump", dump, "--policy", str(tmp_path)], "neither *.pci policy files"),
        (["--dump", dump, "--policy", "a", "--policy", "b", "--policy", "c"], "at most twice"),
    ]
    for extra, message in cases:
        assert main(["trace", "replay", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("pciback trace replay: ") and message in err and err.count("\n") == 1
    # The one op replays on the device it was recorded from: the IDs are the dump's.
    assert main(["trace", "replay", str(path), "--dump", dump]) == 0
    assert capsys.readouterr().out.endswith("no difference in 1 ops\n")
