"""`pciback-dsl report`: every field of every block, one Markdown row each."""

from __future__ import annotations

from pathlib import Path

import pytest

from pciback.compiler.cli import main

SOURCE = """
hook on_write changed(old, new)
capability msi id 0x05 length 10 + 4*control.wide "Message Signalled Interrupts" {
    policy hide "not for this guest | ever"
    register control @0x02 u16 {
        enable [0]    shadow(0) rw  on_rising changed  "through the op only"
        rest   [6:1]  hw ro
        wide   [7]    hw ro
        _      [15:8] hw rsvdp  permissive ro
    }
    register upper @0x08 u32 if control.wide { a [31:0] const(0) ro }
}
"""


def test_report_has_a_row_per_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dsl").mkdir()
    (tmp_path / "dsl" / "msi.pci").write_text(SOURCE, encoding="utf-8")
    assert main(["report", "-o", "report.md"]) == 0
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "## capability msi (ID 0x5)" in text
    assert "**Hidden**: unlinked from the chain and unreachable by offset" in text
    assert "offset (not for this guest | ever)." in text
    assert "Length: `(0xa + (4 * control.wide))`." in text
    assert (
        "| 0x02 | control | 0 | enable | shadow(0x0) | rw |  | on_rising changed |"
        " through the op only |" in text
    )
    assert "| 0x02 | control | 15:8 | _ | hw | rsvdp | ro |  |  |" in text
    assert "| 0x08 | upper (if `control.wide`) | 31:0 | a | const(0x0) | ro |  |  |  |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 0x")]
    assert len(rows) == 5


def test_report_refuses_a_broken_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dsl").mkdir()
    (tmp_path / "dsl" / "bad.pci").write_text("capability x id 0x100 { }\n", encoding="utf-8")
    assert main(["report"]) == 1
    assert "dsl/bad.pci:1:17: error: capability ID does not fit 8 bits" in capsys.readouterr().err
